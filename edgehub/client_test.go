package edgehub

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/protocol"
)

// failingStore fails every Apply after a delay, as a store does whose commit fails (a full
// disk), and records what it was asked to apply.
type failingStore struct {
	applies chan []protocol.Message
}

func (f *failingStore) Cursor() (string, uint64)                               { return "", 0 }
func (f *failingStore) BeginSession(context.Context, string) error             { return nil }
func (f *failingStore) ReadOutbox(uint64, int, int) ([]protocol.Report, error) { return nil, nil }
func (f *failingStore) AckOutbox(context.Context, uint64) error                { return nil }
func (f *failingStore) OutboxSignal() <-chan struct{}                          { return nil }
func (f *failingStore) Apply(_ context.Context, msgs []protocol.Message, done func(error)) error {
	f.applies <- msgs
	go func() {
		time.Sleep(50 * time.Millisecond) // the commit outlasts the read loop's return to the socket
		done(errors.New("commit: file too large"))
	}()
	return nil
}

// testConn returns a session of a client over st, on a real websocket whose other end, the
// hub's, is returned too; a test server stands in for the hub. All close when the test ends.
func testConn(t *testing.T, st Store) (k *conn, hub *websocket.Conn) {
	t.Helper()
	hubSide := make(chan *websocket.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		hubSide <- c
	}))
	t.Cleanup(srv.Close)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	hub = <-hubSide
	t.Cleanup(func() { hub.Close() })
	cfg := DefaultConfig()
	cfg.Cloud = []string{"127.0.0.1:1"}
	c, err := New(cfg, nil, st, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &conn{c: c, ws: ws, log: zerolog.Nop(), wake: make(chan struct{}, 1), failed: make(chan error, 1),
		pending: map[uint64]chan *protocol.Response{}}, hub
}

// TestSessionEndsWhenTheStoreFails: once the store could not commit data from the hub, the
// session ends at once with the store's error, although the read loop was waiting on the
// socket, and the edge acknowledges nothing: an ack, or data stored after the gap, would let the
// hub resume past what is missing.
func TestSessionEndsWhenTheStoreFails(t *testing.T) {
	st := &failingStore{applies: make(chan []protocol.Message, 4)}
	k, hub := testConn(t, st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan error, 1)
	go func() { ended <- k.readLoop(ctx, time.Minute, nil) }()

	obj := []byte(`{"metadata":{"name":"a","namespace":"ns"}}`)
	if err := hub.WriteMessage(websocket.BinaryMessage, protocol.Encode(
		&protocol.Upsert{Seq: 1, Rev: 5, Key: protocol.Key{Resource: "configmaps", Namespace: "ns", Name: "a"}, Object: obj},
		&protocol.Progress{Seq: 2, Through: 5})); err != nil {
		t.Fatal(err)
	}
	<-st.applies
	select {
	case err := <-ended:
		if err == nil || !strings.Contains(err.Error(), "file too large") {
			t.Fatalf("the session ended with %v, want the store's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the session went on after the store failed")
	}
	if a := k.applied.Load(); a != 0 {
		t.Fatalf("applied = %d after the store failed", a)
	}
	// Later data is not handed to the store, and no ack reaches the hub.
	k.flush() // what the writer does when woken; it has nothing to acknowledge
	hub.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Progress{Seq: 3, Through: 9}))
	hub.SetReadDeadline(time.Now().Add(time.Second))
	for {
		_, frame, err := hub.ReadMessage()
		if err != nil {
			break
		}
		msgs, _ := protocol.Decode(frame)
		for _, m := range msgs {
			if a, ok := m.(*protocol.Ack); ok {
				t.Fatalf("the edge acked seq %d after its store failed", a.Seq)
			}
		}
	}
	select {
	case msgs := <-st.applies:
		t.Fatalf("data after the failure went to the store: %v", msgs)
	default:
	}
}

// orderedStore commits every batch in order, some at once on the caller's goroutine (as the
// simulator's memory store does) and some later on a goroutine of its own (as the bbolt store's
// writer does), so that a session sees commits reported both during Apply and after it.
type orderedStore struct {
	failingStore
	later   chan func()
	applied int
	syncAll bool
}

func (o *orderedStore) Apply(_ context.Context, _ []protocol.Message, done func(error)) error {
	o.applied++
	if o.syncAll || o.applied%3 == 0 {
		// Wait for the earlier batches still committing: commits are reported in order.
		flushed := make(chan struct{})
		o.later <- func() { close(flushed) }
		<-flushed
		done(nil)
		return nil
	}
	o.later <- func() { done(nil) }
	return nil
}

func (o *orderedStore) run(ctx context.Context) {
	for {
		select {
		case f := <-o.later:
			time.Sleep(time.Duration(len(o.later)) * 100 * time.Microsecond)
			f()
		case <-ctx.Done():
			return
		}
	}
}

// readAcks reads the hub's side until it has seen an ack of last, and fails on an ack that does
// not move forward.
func readAcks(t *testing.T, hub *websocket.Conn, last uint64) {
	t.Helper()
	var prev uint64
	hub.SetReadDeadline(time.Now().Add(10 * time.Second))
	for prev < last {
		_, frame, err := hub.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for the ack of %d (last ack %d): %v", last, prev, err)
		}
		msgs, err := protocol.Decode(frame)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if a, ok := m.(*protocol.Ack); ok {
				if a.Seq <= prev || a.Seq > last {
					t.Fatalf("ack %d after %d (sent through %d)", a.Seq, prev, last)
				}
				prev = a.Seq
			}
		}
	}
}

func sendProgress(t *testing.T, hub *websocket.Conn, n int) {
	t.Helper()
	for seq := 1; seq <= n; seq++ {
		if err := hub.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Progress{Seq: uint64(seq), Through: uint64(seq)})); err != nil {
			t.Error(err)
			return
		}
	}
}

// TestAcksWhetherCommitsAreReportedDuringApplyOrAfter: with commits reported both while the read
// loop is in Apply (it acknowledges them itself) and later (the writer does), every frame is
// acknowledged, acks only move forward, and the last one covers everything sent.
func TestAcksWhetherCommitsAreReportedDuringApplyOrAfter(t *testing.T) {
	st := &orderedStore{later: make(chan func(), 64)}
	k, hub := testConn(t, st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go st.run(ctx)
	go k.readLoop(ctx, time.Minute, nil)
	go func() { // the writer's loop, without the pings and renewals that need an identity
		for {
			if err := k.flush(); err != nil {
				t.Error(err)
				return
			}
			select {
			case <-k.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	const n = 300
	go sendProgress(t, hub, n)
	readAcks(t, hub, n)
}

// TestReadLoopAcksCommitsReportedDuringApply: a store that commits at once is acknowledged by the
// read loop, with no writer running.
func TestReadLoopAcksCommitsReportedDuringApply(t *testing.T) {
	st := &orderedStore{later: make(chan func(), 64), syncAll: true}
	k, hub := testConn(t, st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go st.run(ctx)
	go k.readLoop(ctx, time.Minute, nil)
	const n = 20
	go sendProgress(t, hub, n)
	readAcks(t, hub, n)
}

// TestStateCountsDowntimeAcrossAttempts: while the cloud stays unreachable, the time the link
// has been down keeps growing across reconnect attempts (readyz shows it); before, every
// attempt restarted it.
func TestStateCountsDowntimeAcrossAttempts(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	cfg := DefaultConfig()
	cfg.Cloud = []string{"127.0.0.1:1"}
	c, err := New(cfg, nil, &failingStore{}, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return now }
	c.since.Store(0)
	c.setState(Disconnected)
	for range 3 { // three failed attempts, a minute apart
		now = now.Add(time.Minute)
		c.setState(Connecting)
		c.setState(Disconnected)
	}
	if s, d, _ := c.State(); s != Disconnected || d != 3*time.Minute {
		t.Fatalf("State = %s for %s, want disconnected for 3m0s", s, d)
	}
	c.setState(Connecting)
	c.setState(Connected)
	now = now.Add(time.Second)
	if s, d, _ := c.State(); s != Connected || d != time.Second {
		t.Fatalf("State = %s for %s, want connected for 1s", s, d)
	}
}

// TestForwardTellsSentFromUnsent: a forwarded request whose session ends before its answer
// fails with ErrOffline if it was never sent (nothing was changed) and ErrAnswerLost if it was
// (the cloud may have carried it out). Before, both were ErrOffline, and the metaserver told
// the client of a write that may have been made that nothing was changed.
func TestForwardTellsSentFromUnsent(t *testing.T) {
	forward := func(k *conn) <-chan error {
		errc := make(chan error, 1)
		go func() {
			_, err := k.c.Forward(context.Background(), &protocol.Request{Method: "DELETE", Path: "/api/v1/namespaces/ns/pods/p"})
			errc <- err
		}()
		return errc
	}
	queued := func(k *conn) {
		for {
			k.mu.Lock()
			n := len(k.requests)
			k.mu.Unlock()
			if n > 0 {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}

	k, hub := testConn(t, &failingStore{})
	k.c.live.Store(k)
	errc := forward(k)
	queued(k)
	if err := k.flush(); err != nil {
		t.Fatal(err)
	}
	hub.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := hub.ReadMessage(); err != nil { // the request reached the hub
		t.Fatal(err)
	}
	k.close()
	if err := <-errc; !errors.Is(err, ErrAnswerLost) {
		t.Fatalf("a sent request whose session ended: %v, want ErrAnswerLost", err)
	}

	k, _ = testConn(t, &failingStore{})
	k.c.live.Store(k)
	errc = forward(k)
	queued(k)
	k.close()
	if err := <-errc; !errors.Is(err, ErrOffline) {
		t.Fatalf("an unsent request whose session ended: %v, want ErrOffline", err)
	}
}
