package edgehub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tetherhub/tether/protocol"
)

// bigOutbox always has more large reports to send, and applies data at once.
type bigOutbox struct{}

func (bigOutbox) Cursor() (string, uint64)                   { return "", 0 }
func (bigOutbox) BeginSession(context.Context, string) error { return nil }
func (bigOutbox) ReadOutbox(after uint64, max, _ int) ([]protocol.Report, error) {
	return []protocol.Report{{Seq: after + 1, Kind: protocol.ReportUpload, Subject: "t", Payload: make([]byte, 200<<10)}}, nil
}
func (bigOutbox) AckOutbox(context.Context, uint64) error { return nil }
func (bigOutbox) OutboxSignal() <-chan struct{}           { return nil }
func (bigOutbox) Apply(_ context.Context, _ []protocol.Message, done func(error)) error {
	done(nil)
	return nil
}

// TestBadFrameWhileTheWriterWrites: the read loop answers a protocol violation with an Error
// while the write loop may be inside its own WriteMessage (here: blocked on a hub that does not
// read). gorilla allows one writer at a time and panics on a second, which would end
// tether-edge on a misbehaving hub.
func TestBadFrameWhileTheWriterWrites(t *testing.T) {
	k, hub := testConn(t, bigOutbox{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The writer sends reports until the hub, which does not read, lets the socket fill up.
	go func() {
		for ctx.Err() == nil {
			if err := k.flush(); err != nil {
				return
			}
		}
	}()
	time.Sleep(500 * time.Millisecond)
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		k.readLoop(ctx, time.Minute, nil)
	}()
	// A frame that skips a data seq: the read loop answers it with an Error on the socket.
	if err := hub.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Progress{Seq: 7, Through: 5})); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-panicked:
		if p != nil {
			t.Fatalf("the read loop panicked (an unrecovered panic ends tether-edge): %v", fmt.Sprint(p))
		}
	case <-time.After(15 * time.Second):
		t.Fatal("read loop did not return")
	}
}
