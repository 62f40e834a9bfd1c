package cloudhub

import (
	"testing"
	"time"
)

// TestIdleSessionKeepsNoFrameBuffer: once a node is caught up and its writer has exited, its
// session holds no frame buffer (the writers share a pool): an idle node costs the hub no more
// after a sync of 64 KB objects than before it.
func TestIdleSessionKeepsNoFrameBuffer(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.put(nodeKey("n1"), nodeJSON("n1", ""))
	big := make([]byte, 64<<10)
	for i := range big {
		big[i] = 'x'
	}
	rev := r.put(cmKey("default", "c1"), cmJSON("default", "c1", string(big)))
	rev = max(rev, r.put(podKey("default", "p1"), podJSON("default", "p1", "n1", "c1")))
	e := newEdge(t, "n1")
	e.connect(r)
	e.converge(r, rev, 5*time.Second)
	r.hub.mu.Lock()
	s := r.hub.sessions["n1"]
	r.hub.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		writing, held := s.writing, 0
		if !writing {
			held = cap(s.buf) // the writer owns buf while it runs; read it only when none does
		}
		s.mu.Unlock()
		if !writing {
			if held != 0 {
				t.Fatalf("the idle session holds a %d-byte frame buffer", held)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer did not exit within 5 s of the sync")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
