package edgehub

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhub/tether/protocol"
)

// outboxStore holds an outbox of reports and nothing else; ReadOutbox keeps the edge store's
// rules (at most max entries, within maxBytes except for the first).
type outboxStore struct{ reports []protocol.Report }

func (s *outboxStore) Cursor() (string, uint64)                   { return "", 0 }
func (s *outboxStore) BeginSession(context.Context, string) error { return nil }
func (s *outboxStore) AckOutbox(context.Context, uint64) error    { return nil }
func (s *outboxStore) OutboxSignal() <-chan struct{}              { return nil }
func (s *outboxStore) Apply(context.Context, []protocol.Message, func(error)) error {
	return nil
}

func (s *outboxStore) ReadOutbox(after uint64, max, maxBytes int) ([]protocol.Report, error) {
	var out []protocol.Report
	size := 0
	for _, r := range s.reports {
		if r.Seq <= after || len(out) == max || (len(out) > 0 && size+len(r.Payload) > maxBytes) {
			if len(out) > 0 {
				break
			}
			continue
		}
		out = append(out, r)
		size += len(r.Payload)
	}
	return out, nil
}

// TestReportWindowInBytes: reports in flight are bounded in bytes as well as in count, under
// what a hub queues for a node. Before, a window of 256 uploads of 1 MiB put 256 MiB in flight,
// past the hub's 64 MiB: it ended the session, and every resend did the same.
func TestReportWindowInBytes(t *testing.T) {
	st := &outboxStore{}
	for seq := uint64(1); seq <= 100; seq++ {
		st.reports = append(st.reports, protocol.Report{Seq: seq, Kind: protocol.ReportUpload, Subject: "u", Payload: make([]byte, protocol.MaxReportPayload)})
	}
	k, hub := testConn(t, st)
	var got atomic.Int64   // payload bytes the hub received
	var last atomic.Uint64 // highest seq
	go func() {
		for {
			_, frame, err := hub.ReadMessage()
			if err != nil {
				return
			}
			msgs, _ := protocol.Decode(frame)
			for _, m := range msgs {
				if r, ok := m.(*protocol.Report); ok {
					got.Add(int64(len(r.Payload)))
					last.Store(r.Seq)
				}
			}
		}
	}()
	sendAll := func() int64 {
		t.Helper()
		for range 200 {
			if err := k.flush(); err != nil {
				t.Fatal(err)
			}
		}
		// The hub reads what was written: wait until its count holds still for a while (a
		// fixed sleep fell short on a loaded host).
		n := got.Load()
		for still := 0; still < 4; {
			time.Sleep(100 * time.Millisecond)
			if m := got.Load(); m != n {
				n, still = m, 0
			} else {
				still++
			}
		}
		return n
	}
	inFlight := sendAll()
	t.Logf("%d MiB in flight before any ack (window %d reports)", inFlight>>20, k.c.cfg.ReportWindow)
	if inFlight > protocol.MaxReportBytesInFlight+protocol.MaxReportPayload || inFlight < protocol.MaxReportBytesInFlight-protocol.MaxReportPayload {
		t.Fatalf("%d bytes of reports in flight, want about %d", inFlight, protocol.MaxReportBytesInFlight)
	}
	ackSeq := last.Load() / 2
	k.reportAck(context.Background(), ackSeq) // half acknowledged: room for as much again
	more := sendAll() - inFlight
	if acked := int64(ackSeq) * protocol.MaxReportPayload; more < acked-protocol.MaxReportPayload || more > acked+protocol.MaxReportPayload {
		t.Fatalf("%d bytes sent after %d were acknowledged", more, acked)
	}
}

// TestFrameWithinHubLimit: forwarded requests and reports are packed so that no frame passes
// the hub's default message limit (4 MiB): two requests of 2.1 MiB go in two frames, and an
// upload of 1 MiB waits for the frame after a request of 2.5 MiB. Before, one frame carried
// them all, the hub ended the session, and the requests' answers were lost.
func TestFrameWithinHubLimit(t *testing.T) {
	st := &outboxStore{reports: []protocol.Report{{Seq: 1, Kind: protocol.ReportUpload, Subject: "u", Payload: make([]byte, protocol.MaxReportPayload)}}}
	k, hub := testConn(t, st)
	hub.SetReadLimit(4 << 20)
	frames := make(chan []protocol.Message, 16)
	go func() {
		for {
			_, frame, err := hub.ReadMessage()
			if err != nil {
				close(frames)
				return
			}
			msgs, _ := protocol.Decode(frame)
			frames <- msgs
		}
	}()
	req := func(id uint64, size int) *protocol.Request {
		return &protocol.Request{ID: id, Method: "PUT", Path: "/api/v1/namespaces/x/configmaps/c", ContentType: "application/json", Body: make([]byte, size)}
	}
	k.mu.Lock()
	k.requests = append(k.requests, req(1, 2500<<10), req(2, 2100<<10), req(3, 2100<<10))
	k.mu.Unlock()
	var got []string
	for range 4 {
		if err := k.flush(); err != nil {
			t.Fatal(err)
		}
		select {
		case msgs, ok := <-frames:
			if !ok {
				t.Fatalf("the hub's side closed (a frame past its limit) after %v", got)
			}
			var names []string
			for _, m := range msgs {
				switch m := m.(type) {
				case *protocol.Request:
					names = append(names, fmt.Sprint("request ", m.ID))
				case *protocol.Report:
					names = append(names, fmt.Sprint("report ", m.Seq))
				}
			}
			got = append(got, strings.Join(names, "+"))
		case <-time.After(5 * time.Second):
			t.Fatalf("no frame after %v", got)
		}
	}
	if want := "[request 1 request 2 request 3 report 1]"; fmt.Sprint(got) != want {
		t.Fatalf("frames %v, want %s", got, want)
	}
}
