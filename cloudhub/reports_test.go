package cloudhub

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tetherhub/tether/protocol"
)

// heldReports blocks every Apply until released.
type heldReports struct{ release chan struct{} }

func (h heldReports) Apply(ctx context.Context, _ string, _ *protocol.Report) error {
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	return nil
}

// TestQueuedReportsBoundedInBytes: while the store is slow, a node's queued reports are bounded
// in bytes as well as in count; past maxQueuedReportBytes the session ends with a protocol
// error. Before, only the count was bounded: 1,024 reports of up to 4 MiB each.
func TestQueuedReportsBoundedInBytes(t *testing.T) {
	held := heldReports{release: make(chan struct{})}
	defer close(held.release)
	r := newRig(t, rigOpts{reports: held})
	r.put(nodeKey("n1"), nodeJSON("n1", ""))
	e := newEdge(t, "n1")
	e.connect(r)
	if !e.syncTo(r.hub.processed.Load(), 5*time.Second) {
		t.Fatalf("sync: %v", e.log)
	}
	payload := bytes.Repeat([]byte("r"), protocol.MaxReportPayload)
	sent := 0
	for seq := uint64(1); seq <= maxQueuedReportBytes/uint64(len(payload))+3; seq++ {
		err := e.ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Report{Seq: seq, Kind: protocol.ReportUpload, Subject: "t", Payload: payload}))
		if err != nil {
			break // the hub closed the connection
		}
		sent++
	}
	e.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, frame, err := e.ws.ReadMessage()
		if err != nil {
			t.Fatalf("the session ended without an Error after %d reports of %d bytes: %v", sent, len(payload), err)
		}
		msgs, _ := protocol.Decode(frame)
		for _, m := range msgs {
			if pe, ok := m.(*protocol.Error); ok {
				if pe.Code != protocol.CodeProtocol {
					t.Fatalf("error %v, want a protocol error", pe)
				}
				return
			}
		}
	}
}
