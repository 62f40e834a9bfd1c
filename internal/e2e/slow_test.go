package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tetherhub/tether/protocol"
)

// TestSlowNodeIsCutOff: a node that reads but never acknowledges fills its window and is
// disconnected with too-slow after the slow timeout, while another node keeps receiving.
func TestSlowNodeIsCutOff(t *testing.T) {
	c := newCloud(t, "--node-window", "4", "--slow-node-timeout", "2s")
	good := newEdge(t, c, "edge-good")
	slow := identityFor(t, c, "edge-slow")
	ws, err := dialHub(t, c, slow)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Hello{Version: protocol.Version, Node: "edge-slow"}))
	var want []string
	for i := 0; i < 12; i++ {
		name := fmt.Sprintf("svc-%02d", i)
		want = append(want, ns+"/"+name)
		mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj(name))
	}
	start := time.Now()
	e := expectError(t, ws)
	if e == nil || e.Code != protocol.CodeTooSlow {
		t.Fatalf("error = %v, want too-slow", e)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("cut off after %s", d)
	}
	waitNames(t, good.url(paths["services"]), want...)
	if got := metric(t, c.url("/metrics"), "tether_cloud_hub_slow_disconnects_total"); got != 1 {
		t.Fatalf("slow disconnects = %v", got)
	}
}

// TestResetAfterLongAbsence: an edge away for longer than the cloud's history gets its whole
// view again; what was deleted meanwhile is swept from its store.
func TestResetAfterLongAbsence(t *testing.T) {
	c := newCloud(t, "--history", "1000")
	e := newEdge(t, c, "edge-1")
	mustDo(t, http.MethodPost, c.url(paths["configmaps"]), configMapObj("busy", map[string]string{"n": "0"}))
	mustDo(t, http.MethodPost, c.url(paths["configmaps"]), configMapObj("gone", nil))
	mustDo(t, http.MethodPost, c.url(paths["pods"]), podObj("app", "edge-1", []string{"busy", "gone"}, nil))
	mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj("old"))
	waitNames(t, e.url(paths["configmaps"]), q("busy", "gone")...)
	e.stop()
	mustDo(t, http.MethodDelete, c.url(paths["services"]+"/old"), nil)
	mustDo(t, http.MethodPut, c.url(paths["pods"]+"/app"), podObj("app", "edge-1", []string{"busy"}, nil))
	for i := 1; i <= 1200; i++ {
		mustDo(t, http.MethodPatch, c.url(paths["configmaps"]+"/busy"), fmt.Sprintf(`{"data":{"n":"%d"}}`, i))
	}
	e.restart(t)
	waitNames(t, e.url(paths["services"]))
	waitNames(t, e.url(paths["configmaps"]), q("busy")...)
	_, body := do(t, http.MethodGet, e.url(paths["configmaps"]+"/busy"), "", nil)
	if !strings.Contains(string(body), `"n":"1200"`) {
		t.Fatalf("busy = %s", body)
	}
	if !strings.Contains(e.log.String(), `"mode":"reset"`) {
		t.Fatal("the edge was not reset")
	}
}
