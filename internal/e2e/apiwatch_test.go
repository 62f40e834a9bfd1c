package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// readEvents reads n events of a watch as "TYPE name", or returns the refusal.
func readEvents(t *testing.T, url string, n int) ([]string, int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var st struct{ Reason, Message string }
		json.NewDecoder(resp.Body).Decode(&st)
		return nil, resp.StatusCode, st.Reason + ": " + st.Message
	}
	var out []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for len(out) < n && sc.Scan() {
		var ev struct {
			Type   string
			Object struct{ Metadata struct{ Name string } }
		}
		json.Unmarshal(sc.Bytes(), &ev)
		out = append(out, ev.Type+" "+ev.Object.Metadata.Name)
	}
	return out, http.StatusOK, ""
}

// TestEdgeWatchVersions: a watch on the metaserver from an old but known version gets exactly
// the changes since, in order, and nothing twice; after the edge restarts, a version from
// before the restart is no longer known and gets 410 Expired, so the client lists again.
func TestEdgeWatchVersions(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-w")
	mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj("a"))
	waitNames(t, e.url(paths["services"]), q("a")...)
	var l struct {
		Metadata struct{ ResourceVersion string }
	}
	json.Unmarshal(mustDo(t, http.MethodGet, e.url(paths["services"]), nil), &l)
	from := l.Metadata.ResourceVersion

	mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj("b"))
	mustDo(t, http.MethodPatch, c.url(paths["services"]+"/a"), `{"metadata":{"labels":{"x":"1"}}}`)
	mustDo(t, http.MethodDelete, c.url(paths["services"]+"/b"), nil)
	mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj("c"))
	waitNames(t, e.url(paths["services"]), q("a", "c")...)

	got, code, msg := readEvents(t, e.url(paths["services"]+"?watch=true&resourceVersion="+from), 4)
	if code != http.StatusOK {
		t.Fatalf("watch from %s: %d %s", from, code, msg)
	}
	if want := "[ADDED b MODIFIED a DELETED b ADDED c]"; fmt.Sprint(got) != want {
		t.Fatalf("events since %s: %v, want %s", from, got, want)
	}
	// One object, by a field selector on its name, from the same version.
	got, _, _ = readEvents(t, e.url(paths["services"]+"?watch=true&fieldSelector=metadata.name%3Dc&resourceVersion="+from), 1)
	if fmt.Sprint(got) != "[ADDED c]" {
		t.Fatalf("watch of one object: %v", got)
	}

	e.stop()
	e.restart(t)
	e.waitSynced(t)
	_, code, msg = readEvents(t, e.url(paths["services"]+"?watch=true&resourceVersion="+from), 1)
	if code != http.StatusGone || !strings.HasPrefix(msg, "Expired") {
		t.Fatalf("watch from before the restart: %d %s", code, msg)
	}
}

// TestCloudWatchWindow: the cloud API's watch cache keeps --watch-cache-window of changes: a
// watch from a version inside it gets exactly the changes since, and once a newer change has
// pushed a version's change out of the window the same watch gets 410 Expired.
func TestCloudWatchWindow(t *testing.T) {
	c := newCloud(t, "--watch-cache-window", "3s")
	mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj("a"))
	var l struct {
		Metadata struct{ ResourceVersion string }
	}
	json.Unmarshal(mustDo(t, http.MethodGet, c.url(paths["services"]), nil), &l)
	from := l.Metadata.ResourceVersion
	mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj("b"))
	got, code, msg := readEvents(t, c.url(paths["services"]+"?watch=true&resourceVersion="+from), 1)
	if code != http.StatusOK || fmt.Sprint(got) != "[ADDED b]" {
		t.Fatalf("watch from %s inside the window: %d %s %v", from, code, msg, got)
	}
	time.Sleep(4 * time.Second)
	mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj("c"))
	// The write is answered once the index has it; the watch cache takes it (and drops what
	// left the window) a moment later, so the refusal may take that moment to come.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, code, msg = readEvents(t, c.url(paths["services"]+"?watch=true&resourceVersion="+from), 1); code != http.StatusOK || time.Now().After(deadline) {
			break
		}
	}
	if code != http.StatusGone || !strings.HasPrefix(msg, "Expired") {
		t.Fatalf("watch from %s after its changes left the window: %d %s", from, code, msg)
	}
}

// TestHostileAPIRequests: bad requests to the cloud API and the metaserver each get a clear
// Status with the Kubernetes code, and nothing is stored.
func TestHostileAPIRequests(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-h")
	mustDo(t, http.MethodPost, c.url(paths["configmaps"]), configMapObj("keep", map[string]string{"v": "1"}))
	mustDo(t, http.MethodPost, c.url(paths["pods"]), podObj("user", "edge-h", []string{"keep"}, nil))
	waitNames(t, e.url(paths["configmaps"]), q("keep")...)
	before := fingerprint(t, c, "edge-h")
	big := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"x":"` + strings.Repeat("x", 4<<20) + `"}}`
	for _, srv := range []struct {
		name string
		url  func(string) string
	}{{"cloud", c.url}, {"metaserver", e.url}} {
		cases := []struct {
			name, method, path, ct, body string
			code                         int
		}{
			{"malformed JSON", http.MethodPost, paths["configmaps"], "application/json", `{"kind":`, 400},
			{"null body", http.MethodPost, paths["configmaps"], "application/json", `null`, 400},
			{"wrong kind", http.MethodPost, paths["configmaps"], "application/json", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}`, 400},
			{"unknown resource", http.MethodGet, "/api/v1/namespaces/" + ns + "/gadgets", "", "", 404},
			{"oversize body", http.MethodPost, paths["configmaps"], "application/json", big, 413},
			{"bad selector", http.MethodGet, paths["configmaps"] + "?labelSelector=%3D%3D%3D", "", "", 400},
			{"bad field selector", http.MethodGet, paths["pods"] + "?fieldSelector=status.podIP%3D10.0.0.1", "", "", 400},
			{"bad YAML", http.MethodPost, paths["configmaps"], "application/yaml", "metadata: [", 400},
		}
		for _, tc := range cases {
			code, body := do(t, tc.method, srv.url(tc.path), tc.ct, []byte(tc.body))
			var st struct{ Kind, Status, Message string }
			if code != tc.code || json.Unmarshal(body, &st) != nil || st.Kind != "Status" || st.Status != "Failure" || st.Message == "" {
				t.Errorf("%s %s: %d %.200s, want %d and a Status", srv.name, tc.name, code, body, tc.code)
			}
		}
	}
	if after := fingerprint(t, c, "edge-h"); after != before {
		t.Fatalf("stored objects changed:\n%s\n%s", before, after)
	}
	if got := names(t, e.url(paths["configmaps"])); fmt.Sprint(got) != fmt.Sprint(q("keep")) {
		t.Fatalf("edge configmaps = %v", got)
	}
	// YAML, as the demo script sends it, is a create like any other.
	code, body := do(t, http.MethodPost, c.url(paths["configmaps"]), "application/yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n"))
	if code != http.StatusCreated {
		t.Fatalf("YAML create: %d %s", code, body)
	}
	waitNames(t, c.url(paths["configmaps"]), q("from-yaml", "keep")...)
}

// TestMetaserverCaps: the metaserver holds at most --metaserver-max-watches watches (one more
// gets 429 TooManyRequests with Retry-After) and --metaserver-max-connections connections (one
// more is answered 503 and closed at once, not left waiting); both serve again once one
// closes, and the refusals are counted.
func TestMetaserverCaps(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-caps", "--metaserver-max-connections", "4", "--metaserver-max-watches", "1")
	http.DefaultTransport.(*http.Transport).CloseIdleConnections() // the harness's keep-alives hold slots too
	get := func(path string) (int, string, http.Header) {
		t.Helper()
		cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := cl.Get(e.url(path))
		if err != nil {
			t.Fatalf("GET %s: %v (want an answer)", path, err)
		}
		defer resp.Body.Close()
		var st struct{ Reason string }
		json.NewDecoder(resp.Body).Decode(&st)
		return resp.StatusCode, st.Reason, resp.Header
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url(paths["services"]+"?watch=true"), nil)
	watchTr := &http.Transport{}
	resp, err := watchTr.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the first watch: %v %v", err, resp)
	}
	defer resp.Body.Close()
	if code, reason, h := get(paths["services"] + "?watch=true"); code != http.StatusTooManyRequests || reason != "TooManyRequests" || h.Get("Retry-After") != "1" {
		t.Fatalf("a second watch with --metaserver-max-watches 1: %d %s Retry-After %q", code, reason, h.Get("Retry-After"))
	}

	cancel()
	resp.Body.Close()
	watchTr.CloseIdleConnections()

	// Connections that each asked for /version and keep alive take the slots one by one,
	// until one more is answered 503. (Slots of the connections above come free a moment after
	// they close, so how many it takes is at most 4, not exactly 4.)
	var held []net.Conn
	refused := false
	for !refused && len(held) <= 4 {
		conn, err := net.Dial("tcp", e.meta)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET /version HTTP/1.1\r\nHost: %s\r\n\r\n", e.meta)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("connection %d: %v", len(held)+1, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			held = append(held, conn)
		case http.StatusServiceUnavailable:
			if resp.Header.Get("Retry-After") != "1" {
				t.Fatalf("503 without Retry-After: %v", resp.Header)
			}
			refused = true
		default:
			t.Fatalf("connection %d: %d", len(held)+1, resp.StatusCode)
		}
	}
	if !refused {
		t.Fatalf("%d connections held open with --metaserver-max-connections 4, none refused", len(held))
	}
	t.Logf("refused with %d of ours held open", len(held))
	for _, conn := range held {
		conn.Close()
	}
	waitFor(t, 10*time.Second, "the metaserver serving again", func() bool {
		cl := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		r, err := cl.Get(e.url(paths["services"] + "?watch=true&timeoutSeconds=1"))
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
	// Read once the connections above have given their slots back.
	waitFor(t, 10*time.Second, "the refusals counted", func() bool {
		return metric(t, e.url("/metrics"), "tether_edge_metaserver_connections_refused_total") >= 1 &&
			metric(t, e.url("/metrics"), "tether_edge_metaserver_rejected_total") >= 1
	})
}
