package cloudhub

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tetherhub/tether/index"
)

// restartHoldingReplay opens a hub on the store at path whose index stops its history replay
// at the first historical change hold accepts, until release is called (also when the test
// ends), as a busy start (100k revisions of history) naturally does for a while.
func restartHoldingReplay(t *testing.T, path string, hold func(index.Update) bool) (r *rig, release func()) {
	stop := make(chan struct{})
	release = sync.OnceFunc(func() { close(stop) })
	var once sync.Once
	r = newRig(t, rigOpts{path: path, preSub: func(u index.Update) {
		if u.Historical && hold(u) {
			once.Do(func() { <-stop })
		}
	}})
	t.Cleanup(release) // before the rig's own clean-up, which waits for the index
	return r, release
}

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
	e.converge(r1, cursor, 5*time.Second)
	e.ws.Close()
	// While the edge is away: a new Pod, and the old one (with its ConfigMap ref) deleted.
	r1.put(podKey("default", "p2"), podJSON("default", "p2", "n1"))
	head := r1.del(podKey("default", "p1"))
	r1.close()

	// Restart, the replay held at the first change after the edge's cursor.
	r2, release := restartHoldingReplay(t, path, func(u index.Update) bool { return u.Rev() > cursor })
	e.connect(r2)
	deadline := time.Now().Add(500 * time.Millisecond) // a fixed hub may wait for the replay instead
	for !r2.hub.Connected("n1") && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	release()
	<-r2.ix.Current()
	if !e.syncTo(head, 5*time.Second) {
		t.Fatalf("no progress to %d: %v", head, e.log)
	}
	// Give the hub a moment to send anything else it would.
	for e.syncTo(int64(e.cursor)+1, 300*time.Millisecond) {
	}
	if d := e.diff(r2.want("n1")); len(d) > 0 {
		t.Fatalf("edge at cursor %d (head %d) differs from its view: %v\nmessages: %v", e.cursor, head, d, e.log)
	}
}

// TestUpToDateAttachesDuringHistoryReplay: a node whose cursor is at the head when the cloud
// restarts needs nothing from the history, so it attaches without waiting for the replay (at
// 10,000 nodes the replay takes seconds, and edges give up on a Welcome after 10 s); once the
// replay is over it is sent the changes that follow.
func TestUpToDateAttachesDuringHistoryReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cloud.db")
	r1 := newRig(t, rigOpts{path: path})
	r1.put(nodeKey("n1"), nodeJSON("n1", ""))
	head := r1.put(podKey("default", "p1"), podJSON("default", "p1", "n1"))
	e := newEdge(t, "n1")
	e.connect(r1)
	e.converge(r1, head, 5*time.Second)
	e.ws.Close()
	r1.close()

	r2, release := restartHoldingReplay(t, path, func(index.Update) bool { return true })
	e.connect(r2)
	deadline := time.Now().Add(3 * time.Second)
	for !r2.hub.Connected("n1") {
		if time.Now().After(deadline) {
			t.Fatal("an up-to-date node waited for the history replay")
		}
		time.Sleep(time.Millisecond)
	}
	release()
	e.converge(r2, r2.put(podKey("default", "p2"), podJSON("default", "p2", "n1")), 5*time.Second)
}
