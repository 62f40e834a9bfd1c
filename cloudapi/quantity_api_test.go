package cloudapi

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tetherhub/tether/protocol"
)

// TestHugeExponentQuantityRefused: a quantity such as "1e-999999999" took apimachinery's parser
// minutes of CPU and hundreds of MiB; a node could write one into its own Node's status (a
// report or a forwarded patch), and every later write of that Node paid it again. It is refused
// with a 400 at once, in a Node's status and as a JSON number in a Pod's limits, and a Node with
// ordinary quantities is still taken.
func TestHugeExponentQuantityRefused(t *testing.T) {
	c := newCloud(t, 1000)
	c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	start := time.Now()
	resp := c.fwd.Forward(context.Background(), "edge-1", &protocol.Request{Method: http.MethodPatch,
		Path: nodesPath + "/edge-1/status", ContentType: "application/merge-patch+json", Body: []byte(`{"status":{"capacity":{"cpu":"1e-999999999"}}}`)})
	if resp.Code != http.StatusBadRequest || time.Since(start) > 5*time.Second {
		t.Fatalf("forwarded status patch: %d %s after %s, want 400 at once", resp.Code, resp.Body, time.Since(start))
	}
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i","resources":{"limits":{"memory":9e-999999999}}}]}}`
	if code, out := c.do(http.MethodPost, "/api/v1/namespaces/ns/pods", "application/json", pod); code != http.StatusBadRequest || time.Since(start) > 5*time.Second {
		t.Fatalf("pod: %d %s after %s, want 400 at once", code, out, time.Since(start))
	}
	resp = c.fwd.Forward(context.Background(), "edge-1", &protocol.Request{Method: http.MethodPatch,
		Path: nodesPath + "/edge-1/status", ContentType: "application/merge-patch+json", Body: []byte(`{"status":{"capacity":{"cpu":"4","memory":"8Gi"}}}`)})
	if resp.Code != http.StatusOK {
		t.Fatalf("ordinary capacity: %d %s", resp.Code, resp.Body)
	}
}
