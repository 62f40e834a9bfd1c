package cloudhub

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tetherhub/tether/index"
)

// TestReconnectDuringHistoryReplay: after a cloud restart the index is Ready before it has
// replayed the retained history into the hub's ring. An edge whose cursor lies in that history
// must wait for the replay before it attaches. Before, it attached at once, was sent only the
// changes replayed so far, then told it was complete: a new Pod and a deleted Pod made while it
// was away never reached it.
func TestReconnectDuringHistoryReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cloud.db")
	r1 := newRig(t, rigOpts{path: path})
	r1.put(nodeKey("n1"), nodeJSON("n1", ""))
	r1.put(cmKey("default", "c1"), cmJSON("default", "c1", "1"))
	cursor := r1.put(podKey("default", "p1"), podJSON("default", "p1", "n1", "c1"))
	e := newEdge(t, "n1")
	e.connect(r1)
	if !e.syncTo(cursor, 5*time.Second) {
		t.Fatalf("first sync: %v", e.log)
	}
	e.ws.Close()
	// While the edge is away: a new Pod, and the old one (with its ConfigMap ref) deleted.
	r1.put(podKey("default", "p2"), podJSON("default", "p2", "n1"))
	head := r1.del(podKey("default", "p1"))
	r1.close()

	// Restart. Hold the index's history replay at the first change after the edge's cursor,
	// as a busy start (100k revisions of history) naturally does for a while.
	release := make(chan struct{})
	var once sync.Once
	r2 := newRig(t, rigOpts{path: path, preSub: func(u index.Update) {
		if u.Historical && u.Rev() > cursor {
			once.Do(func() { <-release })
		}
	}})
	e.objs["sentinel"] = "" // nothing; keep map
	delete(e.objs, "sentinel")
	e.connect(r2)
	deadline := time.Now().Add(500 * time.Millisecond) // a fixed hub may wait for the replay instead
	for !r2.hub.Connected("n1") && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	<-r2.ix.Current()
	if !e.syncTo(head, 5*time.Second) {
		t.Fatalf("no progress to %d: %v", head, e.log)
	}
	// Give the hub a moment to send anything else it would.
	e.ws.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	for {
		if !e.syncTo(int64(e.cursor)+1, 300*time.Millisecond) {
			break
		}
	}
	if d := e.diff(r2.want("n1")); len(d) > 0 {
		t.Fatalf("edge at cursor %d (head %d) differs from its view: %v\nmessages: %v", e.cursor, head, d, e.log)
	}
}

// TestUpToDateAttachesDuringHistoryReplay: a node whose cursor is at the head when the cloud
// restarts needs nothing from the history, so it attaches without waiting for the replay (at
// 10,000 nodes the replay takes seconds, and edges give up on a Welcome after 10 s).
func TestUpToDateAttachesDuringHistoryReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cloud.db")
	r1 := newRig(t, rigOpts{path: path})
	r1.put(nodeKey("n1"), nodeJSON("n1", ""))
	head := r1.put(podKey("default", "p1"), podJSON("default", "p1", "n1"))
	e := newEdge(t, "n1")
	e.connect(r1)
	if !e.syncTo(head, 5*time.Second) {
		t.Fatalf("first sync: %v", e.log)
	}
	e.ws.Close()
	r1.close()

	release := make(chan struct{})
	var once sync.Once
	r2 := newRig(t, rigOpts{path: path, preSub: func(u index.Update) {
		if u.Historical {
			once.Do(func() { <-release })
		}
	}})
	e.connect(r2)
	deadline := time.Now().Add(3 * time.Second)
	for !r2.hub.Connected("n1") {
		if time.Now().After(deadline) {
			close(release)
			t.Fatal("an up-to-date node waited for the history replay")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if !e.syncTo(head, 5*time.Second) {
		t.Fatalf("no progress to %d: %v", head, e.log)
	}
	if d := e.diff(r2.want("n1")); len(d) > 0 {
		t.Fatalf("edge differs from its view: %v\nmessages: %v", d, e.log)
	}
}
