package edgehub

import (
	"context"
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
