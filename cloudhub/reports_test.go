package cloudhub

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tetherhub/tether/protocol"
)

// heldReports blocks every Apply until released.
type heldReports struct{ release chan struct{} }

func (h heldReports) Apply(ctx context.Context, _ string, _ int64, _ *protocol.Report) error {
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
	e := syncedEdge(t, r, "n1")
	payload := bytes.Repeat([]byte("r"), protocol.MaxReportPayload)
	sent := 0
	for seq := uint64(1); seq <= maxQueuedReportBytes/uint64(len(payload))+3; seq++ {
		err := e.ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Report{Seq: seq, Kind: protocol.ReportUpload, Subject: "t", Payload: payload}))
		if err != nil {
			break // the hub closed the connection
		}
		sent++
	}
	pe := e.awaitError(10*time.Second, fmt.Sprintf("the session ended without an Error after %d reports of %d bytes", sent, len(payload)))
	if pe.Code != protocol.CodeProtocol {
		t.Fatalf("error %v, want a protocol error", pe)
	}
}

// panickyReports panics on the report whose subject is "boom", as a bug reached through an
// edge's input would, and records the others.
type panickyReports struct{ applied chan string }

func (p panickyReports) Apply(_ context.Context, _ string, _ int64, r *protocol.Report) error {
	if r.Subject == "boom" {
		var m map[string]int
		m["boom"]++ // nil map: panics
	}
	p.applied <- r.Subject
	return nil
}

// TestReportPanicIsContained: a panic while applying a report drops that report as malformed
// (it is acknowledged, so it is not sent again) and the node's next report is applied; before,
// it ended the process and every node's session with it.
func TestReportPanicIsContained(t *testing.T) {
	rep := panickyReports{applied: make(chan string, 4)}
	r := newRig(t, rigOpts{reports: rep})
	e := syncedEdge(t, r, "n1")
	for seq, subject := range []string{"boom", "after"} {
		if err := e.ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Report{Seq: uint64(seq + 1), Kind: protocol.ReportUpload, Subject: subject, Payload: []byte("x")})); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case got := <-rep.applied:
		if got != "after" {
			t.Fatalf("applied %q, want the report after the one that panicked", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the report after the one that panicked was not applied")
	}
	e.awaitMessage(5*time.Second, "no ReportAck through 2", func(m protocol.Message) bool {
		a, ok := m.(*protocol.ReportAck)
		return ok && a.Seq == 2
	})
}

// bigAnswers answers every forwarded request with a body of 1 MiB, as a GET of a large object.
type bigAnswers struct{}

func (bigAnswers) Forward(context.Context, string, *protocol.Request) *protocol.Response {
	return &protocol.Response{Code: 200, ContentType: "application/json", Body: bytes.Repeat([]byte("a"), 1<<20)}
}

// TestUnreadAnswersBounded: an edge that keeps sending requests, a few at a time, and does not
// read the answers ends its session once maxControlBytes of answers wait; before, the answers
// of requests within the in-flight limit queued without bound (10 GiB in 3 s in a review).
func TestUnreadAnswersBounded(t *testing.T) {
	r := newRig(t, rigOpts{forward: bigAnswers{}})
	e := syncedEdge(t, r, "n1")
	sent := 0
	for id := uint64(1); id <= 200; id++ {
		if err := e.ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Request{ID: id, Method: "GET", Path: "/api/v1/nodes/n1"})); err != nil {
			break // the hub ended the session
		}
		sent++
		if id%10 == 0 {
			time.Sleep(20 * time.Millisecond) // within the in-flight limit
		}
	}
	answers := 0
	var pe *protocol.Error
	e.awaitMessage(10*time.Second, fmt.Sprintf("%d requests sent, answers read, then no Error", sent), func(m protocol.Message) bool {
		switch m := m.(type) {
		case *protocol.Response:
			answers++
		case *protocol.Error:
			pe = m
		}
		return pe != nil
	})
	t.Logf("%d requests sent, %d answers read, then: %s", sent, answers, pe.Message)
	if pe.Code != protocol.CodeProtocol || answers > 40 {
		t.Fatalf("error %v after %d answers, want a protocol error within about 32", pe, answers)
	}
}

// syncedEdge stores Node name, connects an edge as it and waits until the edge is in sync.
func syncedEdge(t *testing.T, r *rig, name string) *edge {
	t.Helper()
	r.put(nodeKey(name), nodeJSON(name, ""))
	e := newEdge(t, name)
	e.connect(r)
	if !e.syncTo(r.hub.processed.Load(), 5*time.Second) {
		t.Fatalf("sync: %v", e.log)
	}
	return e
}
