package cloudhub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tetherhub/tether/protocol"
)

// countingEpochs numbers sessions 1, 2, …; while failing is set, Next fails.
type countingEpochs struct {
	mu      sync.Mutex
	n       int64
	failing bool
}

func (c *countingEpochs) Next(context.Context) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failing {
		return 0, errors.New("store unreachable")
	}
	c.n++
	return c.n, nil
}

func (c *countingEpochs) fail(on bool) {
	c.mu.Lock()
	c.failing = on
	c.mu.Unlock()
}

// epochReports records each report's subject with the epoch it was applied with.
type epochReports struct{ applied chan string }

func (e epochReports) Apply(_ context.Context, _ string, epoch int64, r *protocol.Report) error {
	e.applied <- fmt.Sprintf("%s@%d", r.Subject, epoch)
	return nil
}

// TestSessionsNumberedForReports: with Epochs, each session of a node takes a greater epoch
// before it reads a report, and its reports are applied with it. A session that could not take
// one still syncs the node, and ends on its first report without applying it; the next session
// applies it.
func TestSessionsNumberedForReports(t *testing.T) {
	epochs := &countingEpochs{}
	rep := epochReports{applied: make(chan string, 8)}
	r := newRig(t, rigOpts{reports: rep, epochs: epochs})
	report := func(e *edge, seq uint64, subject string) {
		t.Helper()
		if err := e.ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Report{Seq: seq, Kind: protocol.ReportUpload, Subject: subject, Payload: []byte("x")})); err != nil {
			t.Fatal(err)
		}
	}
	applied := func(want string) {
		t.Helper()
		select {
		case got := <-rep.applied:
			if got != want {
				t.Fatalf("applied %s, want %s", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s was not applied", want)
		}
	}
	e := syncedEdge(t, r, "n1")
	report(e, 1, "a")
	applied("a@1")
	e.ws.Close()
	e = syncedEdge(t, r, "n1")
	report(e, 2, "b")
	applied("b@2")
	e.ws.Close()

	epochs.fail(true)
	e = syncedEdge(t, r, "n1") // objects still flow
	report(e, 3, "c")
	if m := e.awaitError(5*time.Second, "the session without an epoch was not ended with an Error on its report"); m.Code != protocol.CodeInternal {
		t.Fatalf("error %s %q, want %s", m.Code, m.Message, protocol.CodeInternal)
	}
	select {
	case got := <-rep.applied:
		t.Fatalf("a session without an epoch applied %s", got)
	default:
	}
	epochs.fail(false)
	e = syncedEdge(t, r, "n1")
	report(e, 3, "c")
	applied("c@3")
}
