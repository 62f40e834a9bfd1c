package metaserver

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/tetherhub/tether/edgehub"
	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// fakeCloud is the Forwarder of these tests: it answers as the cloud would, from objects it
// keeps at cloud versions, and records what it was asked.
type fakeCloud struct {
	mu      sync.Mutex
	offline bool
	lost    bool // the session ends after each request is sent
	asked   []*protocol.Request
	answer  func(*protocol.Request) *protocol.Response
}

func (f *fakeCloud) Forward(_ context.Context, req *protocol.Request) (*protocol.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.offline {
		return nil, fmt.Errorf("edgehub: not connected to the cloud")
	}
	if f.lost {
		f.asked = append(f.asked, req)
		return nil, edgehub.ErrAnswerLost
	}
	f.asked = append(f.asked, req)
	return f.answer(req), nil
}

func (f *fakeCloud) requests() []*protocol.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*protocol.Request(nil), f.asked...)
}

type env struct {
	t     *testing.T
	store *edgestore.Store
	srv   *httptest.Server
	cloud *fakeCloud
	prom  *prometheus.Registry
	rev   uint64 // cloud revision of the next message
}

func newEnv(t *testing.T, cacheSize, watchBuffer int, cfg kubeapi.Config) *env {
	t.Helper()
	reg := resource.New()
	st, err := edgestore.Open(edgestore.DefaultConfig(filepath.Join(t.TempDir(), "edge.db")), reg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: st, cloud: &fakeCloud{}, prom: prometheus.NewRegistry(), rev: 100}
	ms := New(st, reg, cacheSize, 0, watchBuffer, e.cloud)
	h, err := kubeapi.New(cfg, reg, ms, zerolog.Nop(), e.prom, "test")
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(func() {
		e.srv.CloseClientConnections()
		e.srv.Close()
		if err := st.Check(); err != nil {
			t.Errorf("bbolt check: %v", err)
		}
		st.Close()
	})
	return e
}

// apply commits messages as the hub client would.
func (e *env) apply(msgs ...protocol.Message) {
	e.t.Helper()
	done := make(chan error, 1)
	if err := e.store.Apply(context.Background(), msgs, func(err error) { done <- err }); err != nil {
		e.t.Fatal(err)
	}
	if err := <-done; err != nil {
		e.t.Fatal(err)
	}
}

// sync completes a first sync holding objs.
func (e *env) sync(objs ...map[string]any) {
	e.t.Helper()
	if err := e.store.BeginSession(context.Background(), "cluster-1"); err != nil {
		e.t.Fatal(err)
	}
	msgs := []protocol.Message{&protocol.ResetBegin{}}
	for _, o := range objs {
		msgs = append(msgs, e.upsert(o))
	}
	e.apply(append(msgs, &protocol.ResetEnd{Through: e.rev})...)
}

// upsert makes the message for obj at the next cloud revision.
func (e *env) upsert(o map[string]any) *protocol.Upsert {
	e.rev++
	md := o["metadata"].(map[string]any)
	md["resourceVersion"] = fmt.Sprint(e.rev)
	raw, _ := json.Marshal(o)
	k := resource.Key{Resource: "configmaps", Namespace: "ns", Name: md["name"].(string)}
	switch o["kind"] {
	case "Pod":
		k.Resource = "pods"
	case "Device":
		k.Resource = resource.Devices
	case "Node":
		k.Resource, k.Namespace = resource.Nodes, ""
	}
	return &protocol.Upsert{Key: k, Rev: e.rev, Object: raw}
}

func cm(name, v string) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": name, "namespace": "ns"}, "data": map[string]any{"v": v}}
}

func pod(name, node string) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": name, "namespace": "ns"},
		"spec": map[string]any{"nodeName": node, "containers": []any{map[string]any{"name": "c", "image": "x"}}}}
}

func (e *env) do(method, path, ct, body string) (int, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type list struct {
	Metadata struct{ ResourceVersion, Continue string }
	Items    []struct {
		Metadata struct{ Name, ResourceVersion string }
		Data     map[string]string
	}
}

func (e *env) list(path string) (list, int, string) {
	e.t.Helper()
	code, b := e.do(http.MethodGet, path, "", "")
	var l list
	if code == http.StatusOK {
		if err := json.Unmarshal(b, &l); err != nil {
			e.t.Fatal(err)
		}
	}
	return l, code, string(b)
}

const cms = "/api/v1/namespaces/ns/configmaps"

func TestListBeforeFirstSyncIsAnError(t *testing.T) {
	e := newEnv(t, 100, 100, kubeapi.DefaultConfig())
	_, code, body := e.list(cms)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "first sync") {
		t.Fatalf("list before sync: %d %s", code, body)
	}
	if code, body := e.do(http.MethodGet, cms+"?watch=true", "", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("watch before sync: %d %s", code, body)
	}
	e.sync()
	if l, code, body := e.list(cms); code != http.StatusOK || len(l.Items) != 0 {
		t.Fatalf("empty list after sync: %d %s", code, body)
	}
}

func TestListVersionsAndPages(t *testing.T) {
	e := newEnv(t, 100, 100, kubeapi.DefaultConfig())
	e.sync(cm("a", "1"), cm("b", "1"), cm("c", "1"), cm("d", "1"), cm("e", "1"))
	l, _, _ := e.list(cms)
	rv := l.Metadata.ResourceVersion
	if len(l.Items) != 5 || rv == "" {
		t.Fatalf("list = %+v", l)
	}
	// Pages: the version of the first page throughout, every item once.
	var got []string
	p, code, body := e.list(cms + "?limit=2")
	for {
		if code != http.StatusOK {
			t.Fatalf("page: %d %s", code, body)
		}
		if p.Metadata.ResourceVersion != rv {
			t.Fatalf("page version %s, first page %s", p.Metadata.ResourceVersion, rv)
		}
		for _, it := range p.Items {
			got = append(got, it.Metadata.Name)
		}
		if p.Metadata.Continue == "" {
			break
		}
		e.apply(e.upsert(cm(fmt.Sprintf("zz-%d", len(got)), "new"))) // changes while paging
		p, code, body = e.list(cms + "?limit=2&continue=" + p.Metadata.Continue)
	}
	if strings.Join(got[:5], ",") != "a,b,c,d,e" {
		t.Fatalf("paged items %v", got)
	}
	// Exact is served only at the current version; a version ahead waits, then 504.
	cur, _, _ := e.list(cms)
	if _, code, _ := e.list(cms + "?resourceVersion=" + cur.Metadata.ResourceVersion + "&resourceVersionMatch=Exact"); code != http.StatusOK {
		t.Fatalf("exact at the current version: %d", code)
	}
	if _, code, body := e.list(cms + "?resourceVersion=" + rv + "&resourceVersionMatch=Exact"); code != http.StatusGone || !strings.Contains(body, `"reason":"Expired"`) {
		t.Fatalf("exact at an old version: %d %s", code, body)
	}
	start := time.Now()
	if _, code, body := e.list(cms + "?resourceVersion=999999"); code != http.StatusGatewayTimeout || !strings.Contains(body, "Too large resource version") {
		t.Fatalf("future version: %d %s", code, body)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("a future version waited %s", d)
	}
	// Selectors, and one that does not parse.
	if l, code, _ := e.list(cms + "?fieldSelector=metadata.name%3Db"); code != http.StatusOK || len(l.Items) != 1 || l.Items[0].Metadata.Name != "b" {
		t.Fatalf("field selector: %+v", l)
	}
	for _, bad := range []string{"?labelSelector=a%3D%3D%3Db%21", "?fieldSelector=spec.secret%3Dx", "?resourceVersion=abc", "?limit=-1", "?continue=garbage"} {
		if _, code, body := e.list(cms + bad); code != http.StatusBadRequest || !strings.Contains(body, `"kind":"Status"`) {
			t.Fatalf("%s: %d %s", bad, code, body)
		}
	}
}

// watchLines reads a watch's events as "TYPE name@rv" until n are read or the stream ends.
func watchLines(t *testing.T, url string, n int) ([]string, int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, resp.StatusCode, string(b)
	}
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for len(out) < n && sc.Scan() {
		var ev struct {
			Type   string
			Object struct {
				Metadata struct {
					Name, ResourceVersion string
					Annotations           map[string]string
				}
			}
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		s := ev.Type + " " + ev.Object.Metadata.Name + "@" + ev.Object.Metadata.ResourceVersion
		if ev.Object.Metadata.Annotations["k8s.io/initial-events-end"] == "true" {
			s += " end"
		}
		out = append(out, s)
	}
	return out, http.StatusOK, ""
}

func TestWatchFromVersions(t *testing.T) {
	e := newEnv(t, 5, 100, kubeapi.DefaultConfig())
	e.sync(cm("a", "1"))
	l, _, _ := e.list(cms)
	from := l.Metadata.ResourceVersion
	e.apply(e.upsert(cm("b", "1")))
	e.apply(e.upsert(cm("a", "2")), &protocol.Delete{Key: resource.Key{Resource: "configmaps", Namespace: "ns", Name: "b"}, Rev: e.rev + 1})
	e.rev++
	// Exactly the missed events, in order, with the edge's versions.
	got, code, body := watchLines(t, e.srv.URL+cms+"?watch=true&resourceVersion="+from, 3)
	if code != http.StatusOK {
		t.Fatalf("watch: %d %s", code, body)
	}
	var f int
	fmt.Sscan(from, &f)
	// A deleted object carries the version of its deletion, as in Kubernetes.
	want := []string{fmt.Sprintf("ADDED b@%d", f+1), fmt.Sprintf("MODIFIED a@%d", f+2), fmt.Sprintf("DELETED b@%d", f+3)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("missed events %v, want %v", got, want)
	}
	// A streamed list: the state as ADDED, then the bookmark that ends it.
	got, _, _ = watchLines(t, e.srv.URL+cms+"?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true", 2)
	if len(got) != 2 || !strings.HasPrefix(got[0], "ADDED a@") || !strings.HasSuffix(got[1], " end") {
		t.Fatalf("streamed list %v", got)
	}
	// Push the first version out of the ring: 410 Expired.
	for i := 0; i < 6; i++ {
		e.apply(e.upsert(cm("a", fmt.Sprint(10+i))))
	}
	_, code, body = watchLines(t, e.srv.URL+cms+"?watch=true&resourceVersion="+from, 1)
	if code != http.StatusGone || !strings.Contains(body, `"reason":"Expired"`) {
		t.Fatalf("watch from a forgotten version: %d %s", code, body)
	}
	// A version the edge has not reached: 504 after a short wait, not a watch that skips.
	_, code, body = watchLines(t, e.srv.URL+cms+"?watch=true&resourceVersion=999999", 1)
	if code != http.StatusGatewayTimeout {
		t.Fatalf("watch from a future version: %d %s", code, body)
	}
	// A single object by name.
	got, _, _ = watchLines(t, e.srv.URL+cms+"?watch=true&fieldSelector=metadata.name%3Da", 1)
	if len(got) != 1 || !strings.HasPrefix(got[0], "ADDED a@") {
		t.Fatalf("watch by name %v", got)
	}
}

// TestSlowWatcherCutOff: a client that stops reading is cut off once the events it has not
// taken pass the buffer, and its connection is closed; memory does not grow with the backlog.
func TestSlowWatcherCutOff(t *testing.T) {
	cfg := kubeapi.DefaultConfig()
	cfg.WatchWriteTimeout = 200 * time.Millisecond
	e := newEnv(t, 100, 20, cfg)
	e.sync(cm("a", "1"))
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s?watch=true&resourceVersion=%d HTTP/1.1\r\nHost: x\r\n\r\n", cms, e.store.LocalRev())
	gauge := func() float64 {
		mfs, _ := e.prom.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "test_watches" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	deadline := time.Now().Add(5 * time.Second)
	for gauge() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the watch did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// 64 KiB objects: the socket buffers fill after a few dozen, then the watcher's backlog.
	big := strings.Repeat("x", 64<<10)
	deadline = time.Now().Add(20 * time.Second)
	for i := 0; gauge() != 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the slow watcher was not cut off after %d events", i)
		}
		e.apply(e.upsert(cm(fmt.Sprintf("big-%04d", i), big)))
	}
	// Its connection ends: reading it all finds the end instead of every event.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	if err != nil {
		t.Fatalf("reading the cut-off watch: %v after %d bytes", err, n)
	}
}

// A Node record for write tests: the fake cloud answers from its own copy.
func TestWritesAreForwardedAndReadBack(t *testing.T) {
	e := newEnv(t, 100, 100, kubeapi.DefaultConfig())
	e.sync(pod("p", "edge-1"))
	cloudRV := e.rev // the pod's version in the cloud
	e.cloud.answer = func(req *protocol.Request) *protocol.Response {
		if req.Method != http.MethodPatch || !strings.HasSuffix(req.Path, "/pods/p/status") {
			return &protocol.Response{Code: 403, Body: []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"not yours"}`)}
		}
		var patch map[string]any
		json.Unmarshal(req.Body, &patch)
		if md, ok := patch["metadata"].(map[string]any); ok && md["resourceVersion"] != fmt.Sprint(cloudRV) {
			return &protocol.Response{Code: 409, Body: []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409}`)}
		}
		o := pod("p", "edge-1")
		o["status"] = map[string]any{"phase": "Running"}
		o["metadata"].(map[string]any)["resourceVersion"] = fmt.Sprint(cloudRV + 50)
		raw, _ := json.Marshal(o)
		return &protocol.Response{Code: 200, ContentType: "application/json", Body: raw}
	}
	var before struct {
		Metadata struct{ ResourceVersion string }
	}
	_, b := e.do(http.MethodGet, "/api/v1/namespaces/ns/pods/p", "", "")
	json.Unmarshal(b, &before)

	// A stale local version is a 409 without a round trip.
	code, body := e.do(http.MethodPatch, "/api/v1/namespaces/ns/pods/p/status", "application/merge-patch+json", `{"metadata":{"resourceVersion":"1000"},"status":{"phase":"Running"}}`)
	if code != http.StatusConflict || len(e.cloud.requests()) != 0 {
		t.Fatalf("stale patch: %d %s (forwarded %d)", code, body, len(e.cloud.requests()))
	}
	// The current local version travels as the cloud's.
	code, body = e.do(http.MethodPatch, "/api/v1/namespaces/ns/pods/p/status", "application/merge-patch+json",
		`{"metadata":{"resourceVersion":"`+before.Metadata.ResourceVersion+`"},"status":{"phase":"Running"}}`)
	if code != http.StatusOK {
		t.Fatalf("patch: %d %s", code, body)
	}
	var after struct {
		Metadata struct{ ResourceVersion string }
		Status   struct{ Phase string }
	}
	json.Unmarshal(body, &after)
	var b0, a0 int
	fmt.Sscan(before.Metadata.ResourceVersion, &b0)
	fmt.Sscan(after.Metadata.ResourceVersion, &a0)
	if after.Status.Phase != "Running" || a0 == int(cloudRV+50) || a0 <= b0 {
		t.Fatalf("answer %s (before at %s)", body, before.Metadata.ResourceVersion)
	}
	// Read your write, at the edge's version.
	_, b = e.do(http.MethodGet, "/api/v1/namespaces/ns/pods/p", "", "")
	if !strings.Contains(string(b), `"phase":"Running"`) || !strings.Contains(string(b), `"resourceVersion":"`+after.Metadata.ResourceVersion+`"`) {
		t.Fatalf("get after the write: %s", b)
	}
	// The cloud's refusals come back as they were.
	code, body = e.do(http.MethodDelete, "/api/v1/namespaces/ns/configmaps/x", "", "")
	if code != http.StatusForbidden || !strings.Contains(string(body), "not yours") {
		t.Fatalf("refused delete: %d %s", code, body)
	}
	// Offline: 503 at once, nothing queued.
	e.cloud.mu.Lock()
	e.cloud.offline = true
	e.cloud.mu.Unlock()
	n := len(e.cloud.requests())
	start := time.Now()
	code, body = e.do(http.MethodPatch, "/api/v1/namespaces/ns/pods/p/status", "application/merge-patch+json", `{"status":{"phase":"Failed"}}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "not connected to the cloud") || time.Since(start) > time.Second {
		t.Fatalf("offline write: %d %s after %s", code, body, time.Since(start))
	}
	if len(e.cloud.requests()) != n {
		t.Fatal("an offline write was queued")
	}
	// Sent, and the session ended before the answer: it may have been made.
	e.cloud.mu.Lock()
	e.cloud.offline, e.cloud.lost = false, true
	e.cloud.mu.Unlock()
	code, body = e.do(http.MethodPatch, "/api/v1/namespaces/ns/pods/p/status", "application/merge-patch+json", `{"status":{"phase":"Failed"}}`)
	if code != http.StatusGatewayTimeout || !strings.Contains(string(body), "may or may not have been made") {
		t.Fatalf("a write whose answer was lost: %d %s", code, body)
	}
}

// TestDeviceStatusWriteNotHeldToAStaleCloudVersion: the cloud moves a Device's status (its
// edge's reports) without sending it down, so the cloud version the edge holds falls behind. A
// status write at the current local version is checked here and sent without a version; before,
// it was sent at the stale cloud version and refused with 409 on every retry.
// cloudPatches answers as the cloud does the status patches the edge sends for a whole-status
// update (Storage.statusChanges), applying them to obj; a patch that names a version is a 409,
// as the cloud's version is newer than any the edge holds.
func cloudPatches(obj map[string]any) func(*protocol.Request) *protocol.Response {
	return func(req *protocol.Request) *protocol.Response {
		if req.Method != http.MethodPatch || strings.Contains(string(req.Body), "resourceVersion") {
			return &protocol.Response{Code: 409, Body: []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409,"message":"the object has been modified"}`)}
		}
		cur, _ := json.Marshal(obj)
		raw, err := jsonpatch.MergePatch(cur, req.Body)
		if err != nil {
			return &protocol.Response{Code: 400, Body: []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"BadRequest","code":400}`)}
		}
		return &protocol.Response{Code: 200, ContentType: "application/json", Body: raw}
	}
}

func TestDeviceStatusWriteNotHeldToAStaleCloudVersion(t *testing.T) {
	e := newEnv(t, 100, 100, kubeapi.DefaultConfig())
	dev := map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "metadata": map[string]any{"name": "d1", "namespace": "ns"},
		"spec": map[string]any{"nodeName": "edge-1"}}
	e.sync(dev)
	// The cloud's copy: its version has moved on since the edge's (a status the edge reported).
	inCloud := func(rv string) map[string]any {
		return map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "metadata": map[string]any{"name": "d1", "namespace": "ns", "resourceVersion": rv},
			"spec": map[string]any{"nodeName": "edge-1"}}
	}
	e.cloud.answer = cloudPatches(inCloud("900"))
	const path = "/apis/devices.kubeedge.io/v1beta1/namespaces/ns/devices/d1"
	_, b := e.do(http.MethodGet, path, "", "")
	var cur map[string]any
	json.Unmarshal(b, &cur)
	cur["status"] = map[string]any{"state": "online"}
	body, _ := json.Marshal(cur)
	if code, out := e.do(http.MethodPut, path+"/status", "application/json", string(body)); code != http.StatusOK {
		t.Fatalf("status update at the current local version: %d %s", code, out)
	}
	// A stale local version is still a 409, without a round trip.
	n := len(e.cloud.requests())
	if code, out := e.do(http.MethodPut, path+"/status", "application/json", string(body)); code != http.StatusConflict || len(e.cloud.requests()) != n {
		t.Fatalf("status update at a stale local version: %d %s, forwarded %d", code, out, len(e.cloud.requests())-n)
	}
	// The same for a JSON patch that tests the version.
	_, b = e.do(http.MethodGet, path, "", "")
	json.Unmarshal(b, &cur)
	rv := cur["metadata"].(map[string]any)["resourceVersion"].(string)
	patch := `[{"op":"test","path":"/metadata/resourceVersion","value":"` + rv + `"},{"op":"replace","path":"/status","value":{"state":"offline"}}]`
	e.cloud.answer = func(req *protocol.Request) *protocol.Response {
		if strings.Contains(string(req.Body), "resourceVersion") {
			return &protocol.Response{Code: 409, Body: []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409}`)}
		}
		raw, _ := json.Marshal(cur)
		return &protocol.Response{Code: 200, ContentType: "application/json", Body: raw}
	}
	if code, out := e.do(http.MethodPatch, path+"/status", "application/json-patch+json", patch); code != http.StatusOK {
		t.Fatalf("JSON patch testing the current local version: %d %s", code, out)
	}
	// Two updates at the same local version: their version is checked here, not in the cloud,
	// so one must lose with 409 as the cloud would have made it, not overwrite the other.
	_, b = e.do(http.MethodGet, path, "", "")
	json.Unmarshal(b, &cur)
	body, _ = json.Marshal(cur)
	patches := cloudPatches(inCloud("950"))
	e.cloud.answer = func(req *protocol.Request) *protocol.Response {
		time.Sleep(50 * time.Millisecond) // both are under way at once
		return patches(req)
	}
	codes := make(chan int, 2)
	for range 2 {
		go func() {
			code, _ := e.do(http.MethodPut, path+"/status", "application/json", string(body))
			codes <- code
		}()
	}
	if a, b := <-codes, <-codes; a+b != http.StatusOK+http.StatusConflict {
		t.Fatalf("two status updates at one version: %d and %d, want one 200 and one 409", a, b)
	}
}

// TestWholeStatusUpdateSendsWhatChanged: a whole-status update of a Node or Device (whose status
// the cloud changes without sending it down, so the edge's copy is older) goes to the cloud as a
// patch of what the client changed in the copy it read: a field sent back as read (a heartbeat
// time, a twin) does not put an older value back in the cloud. Before, the whole status was
// forwarded and replaced the cloud's.
func TestWholeStatusUpdateSendsWhatChanged(t *testing.T) {
	e := newEnv(t, 100, 100, kubeapi.DefaultConfig())
	node := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": "edge-1"},
		"status": map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-11-29T10:00:00Z"}}}}
	dev := map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "metadata": map[string]any{"name": "d1", "namespace": "ns"},
		"spec":   map[string]any{"nodeName": "edge-1"},
		"status": map[string]any{"state": "online", "twins": []any{map[string]any{"propertyName": "t", "reported": map[string]any{"value": "1"}}}}}
	e.sync(node, dev)
	e.cloud.answer = func(req *protocol.Request) *protocol.Response {
		return &protocol.Response{Code: 200, ContentType: "application/json", Body: []byte(`{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1","resourceVersion":"990"}}`)}
	}
	update := func(path string, change func(obj map[string]any)) *protocol.Request {
		t.Helper()
		_, b := e.do(http.MethodGet, path, "", "")
		var obj map[string]any
		if err := json.Unmarshal(b, &obj); err != nil {
			t.Fatal(err)
		}
		change(obj)
		body, _ := json.Marshal(obj)
		if code, out := e.do(http.MethodPut, path+"/status", "application/json", string(body)); code != http.StatusOK {
			t.Fatalf("PUT %s/status: %d %s", path, code, out)
		}
		reqs := e.cloud.requests()
		return reqs[len(reqs)-1]
	}

	req := update("/api/v1/nodes/edge-1", func(obj map[string]any) {
		st := obj["status"].(map[string]any)
		st["conditions"] = append(st["conditions"].([]any), map[string]any{"type": "DiskPressure", "status": "False"})
	})
	if req.Method != http.MethodPatch || req.ContentType != string(kubeapi.StrategicPatch) || !strings.HasSuffix(req.Path, "/nodes/edge-1/status") ||
		!strings.Contains(string(req.Body), "DiskPressure") || strings.Contains(string(req.Body), "lastHeartbeatTime") {
		t.Fatalf("the Node's status update went up as %s %s (%s): %s", req.Method, req.Path, req.ContentType, req.Body)
	}

	req = update("/apis/devices.kubeedge.io/v1beta1/namespaces/ns/devices/d1", func(obj map[string]any) {
		obj["status"].(map[string]any)["state"] = "offline"
	})
	if req.Method != http.MethodPatch || req.ContentType != string(kubeapi.MergePatch) || string(req.Body) != `{"status":{"state":"offline"}}` {
		t.Fatalf("the Device's status update went up as %s (%s): %s", req.Method, req.ContentType, req.Body)
	}
}

// TestNodeAddressesSentWhole: a whole-status update that changes a Node's addresses sends them
// whole, as a strategic patch merging them by type loses one of two addresses of a type (IPv4
// and IPv6 InternalIPs); the cloud's addresses end as the client sent them.
func TestNodeAddressesSentWhole(t *testing.T) {
	e := newEnv(t, 100, 100, kubeapi.DefaultConfig())
	addr := func(typ, a string) map[string]any { return map[string]any{"type": typ, "address": a} }
	node := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": "edge-1", "uid": "u1"},
		"status": map[string]any{"addresses": []any{addr("InternalIP", "10.0.0.1"), addr("Hostname", "h")}}}
	e.sync(node) // which sets its version
	cloudNode, _ := json.Marshal(node)
	e.cloud.answer = func(req *protocol.Request) *protocol.Response {
		if req.Method != http.MethodPatch {
			return &protocol.Response{Code: 200, ContentType: "application/json", Body: cloudNode}
		}
		out, err := strategicpatch.StrategicMergePatch(cloudNode, req.Body, &corev1.Node{})
		if err != nil {
			return &protocol.Response{Code: 400, Body: []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"BadRequest","code":400}`)}
		}
		cloudNode = out
		return &protocol.Response{Code: 200, ContentType: "application/json", Body: out}
	}
	put := func(addrs ...any) string {
		t.Helper()
		_, b := e.do(http.MethodGet, "/api/v1/nodes/edge-1", "", "")
		var obj map[string]any
		json.Unmarshal(b, &obj)
		obj["status"].(map[string]any)["addresses"] = addrs
		body, _ := json.Marshal(obj)
		if code, out := e.do(http.MethodPut, "/api/v1/nodes/edge-1/status", "application/json", string(body)); code != http.StatusOK {
			t.Fatalf("PUT status: %d %s", code, out)
		}
		var n corev1.Node
		json.Unmarshal(cloudNode, &n)
		var got []string
		for _, a := range n.Status.Addresses {
			got = append(got, string(a.Type)+"="+a.Address)
		}
		return strings.Join(got, ",")
	}
	if got := put(addr("InternalIP", "10.0.0.1"), addr("InternalIP", "fd00::1"), addr("Hostname", "h")); got != "InternalIP=10.0.0.1,InternalIP=fd00::1,Hostname=h" {
		t.Fatalf("an IPv6 address added: the cloud holds %s", got)
	}
	if got := put(addr("InternalIP", "fd00::1"), addr("Hostname", "h")); got != "InternalIP=fd00::1,Hostname=h" {
		t.Fatalf("the IPv4 address removed: the cloud holds %s", got)
	}

	// What the edge cannot turn into a patch goes as it is, for the cloud to answer: a body
	// named for another object; a copy with a condition that has no type (no merge key).
	_, b := e.do(http.MethodGet, "/api/v1/nodes/edge-1", "", "")
	other := strings.Replace(string(b), `"name":"edge-1"`, `"name":"other"`, 1)
	e.do(http.MethodPut, "/api/v1/nodes/edge-1/status", "application/json", other)
	if reqs := e.cloud.requests(); reqs[len(reqs)-1].Method != http.MethodPut {
		t.Fatalf("a body named for another object went up as a %s", reqs[len(reqs)-1].Method)
	}
	// A uid other than the copy's: the object was made again since the client read it.
	code, out := e.do(http.MethodPut, "/api/v1/nodes/edge-1/status", "application/json", strings.Replace(string(b), `"uid":"u1"`, `"uid":"u0"`, 1))
	if code != http.StatusConflict {
		t.Fatalf("a body with another uid: %d %s, want 409", code, out)
	}
	e.apply(e.upsert(map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": "edge-1", "uid": "u1"},
		"status": map[string]any{"conditions": []any{map[string]any{"status": "True"}}}}))
	_, b = e.do(http.MethodGet, "/api/v1/nodes/edge-1", "", "")
	if code, out := e.do(http.MethodPut, "/api/v1/nodes/edge-1/status", "application/json", string(b)); code != http.StatusOK {
		t.Fatalf("PUT status of a copy with a condition without a type: %d %s", code, out)
	}
	if reqs := e.cloud.requests(); reqs[len(reqs)-1].Method != http.MethodPut {
		t.Fatalf("a copy without merge keys went up as a %s", reqs[len(reqs)-1].Method)
	}
}
