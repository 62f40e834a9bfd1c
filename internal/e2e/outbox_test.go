package e2e

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/sim/mapper"
)

// TestOutboxFullIsVisible: when the durable outbox is full, device updates get an error result
// (never a silent drop), the edge logs it and counts it, and the Node shows the condition
// OutboxFull=True until the outbox drains, then False.
func TestOutboxFullIsVisible(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-1", "--outbox-limit", "2")
	mustDo(t, http.MethodPost, c.url(paths["devicemodels"]), twinModelObj("thermo"))
	for _, d := range []string{"d1", "d2", "d3"} {
		mustDo(t, http.MethodPost, c.url(paths["devices"]), twinDeviceObj(d, "edge-1", "thermo"))
	}
	waitNames(t, e.url(paths["devices"]), q("d1", "d2", "d3")...)
	m := newMapper(t, e, nil, ns+"/d1", ns+"/d2", ns+"/d3")
	_, body := do(t, http.MethodGet, c.url("/api/v1/nodes/edge-1"), "", nil)
	rv := resourceVersion(t, body)

	c.stop()
	ctx := ctxT(t, 30*time.Second)
	for _, d := range []string{"d1", "d2"} {
		if _, err := m.Report(ctx, ns+"/"+d, map[string]string{"temperature": "21"}); err != nil {
			t.Fatalf("report %s: %v", d, err)
		}
	}
	_, err := m.Report(ctx, ns+"/d3", map[string]string{"temperature": "21"})
	var rerr *mapper.ResultError
	if !errors.As(err, &rerr) || rerr.Code != 500 {
		t.Fatalf("report with a full outbox: %v, want an error result 500", err)
	}
	waitFor(t, 10*time.Second, "the edge says the outbox is full", func() bool {
		return strings.Contains(e.log.String(), "outbox full")
	})
	if got := metric(t, e.url("/metrics"), "tether_edge_outbox_full_total"); got < 1 {
		t.Fatalf("outbox full counter = %v", got)
	}

	c.start(t)
	waitReported(t, c, "d1", map[string]string{"temperature": "21"})
	waitFor(t, 20*time.Second, "OutboxFull=False on the Node", func() bool {
		_, body := do(t, http.MethodGet, c.url("/api/v1/nodes/edge-1"), "", nil)
		return strings.Contains(string(body), `"reason":"OutboxDraining","status":"False","type":"OutboxFull"`)
	})
	// The True that was reported while full reached the Node before the False: the watch from
	// before the outage replays the Node's history.
	wctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(wctx, http.MethodGet, c.url("/api/v1/nodes?watch=true&fieldSelector=metadata.name=edge-1&resourceVersion="+rv), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sawTrue := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"status":"True","type":"OutboxFull"`) {
			sawTrue = true
			break
		}
	}
	if !sawTrue {
		t.Fatal("the Node never showed OutboxFull=True")
	}
}

func resourceVersion(t *testing.T, obj []byte) string {
	t.Helper()
	i := strings.Index(string(obj), `"resourceVersion":"`)
	if i < 0 {
		t.Fatalf("no resourceVersion in %s", obj)
	}
	rest := string(obj[i+len(`"resourceVersion":"`):])
	return rest[:strings.Index(rest, `"`)]
}
