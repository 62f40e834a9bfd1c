package cloudapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/cloudhub"
	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/join"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
	"github.com/tetherhub/tether/store/boltstore"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// cloud is a cloud API over a real bbolt store and index, as tether-cloud wires it.
type cloud struct {
	t       *testing.T
	objects *Objects
	api     *kubeapi.Handler
	srv     *httptest.Server
	fwd     *Forwarder
}

func newCloud(t *testing.T, cacheSize int) *cloud { return newCloudWith(t, cacheSize, testSweep, nil) }

// testSweep is how often the tests' namespace finisher looks at every namespace unwoken.
const testSweep = 100 * time.Millisecond

// newCloudWith is newCloud, with the namespace finalizer sweeping every sweep (left stopped
// when sweep is 0),
// and the objects' writes going through wrap when it is given.
func newCloudWith(t *testing.T, cacheSize int, sweep time.Duration, wrap func(store.Backend) store.Backend) *cloud {
	t.Helper()
	bs, err := boltstore.Open(boltstore.DefaultConfig(filepath.Join(t.TempDir(), "cloud.db")), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var b store.Backend = bs
	if wrap != nil {
		b = wrap(bs)
	}
	reg := resource.New()
	ix, err := index.New(index.DefaultConfig(), b, reg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	objects := NewObjects(b, ix, reg, cacheSize, 1000, time.Now)
	namespaces := NewNamespaces(objects, reg, zerolog.Nop())
	namespaces.Sweep = sweep
	api, err := kubeapi.New(kubeapi.DefaultConfig(), reg, objects, zerolog.Nop(), nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- ix.Run(ctx) }()
	if sweep > 0 {
		go func() { done <- namespaces.Run(ctx) }()
	} else {
		done <- nil
	}
	c := &cloud{t: t, objects: objects, api: api, srv: httptest.NewServer(api), fwd: NewForwarder(api, objects)}
	t.Cleanup(func() {
		c.srv.CloseClientConnections()
		c.srv.Close()
		cancel()
		<-done
		<-done
		bs.Close()
	})
	// The namespace the tests write in.
	c.must(http.MethodPost, "/api/v1/namespaces", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ns"}}`)
	return c
}

func (c *cloud) do(method, path, ct, body string) (int, string) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.srv.URL+path, strings.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (c *cloud) must(method, path, body string) string {
	c.t.Helper()
	ct := "application/json"
	if method == http.MethodPatch {
		ct = "application/merge-patch+json"
	}
	code, out := c.do(method, path, ct, body)
	if code/100 != 2 {
		c.t.Fatalf("%s %s: %d %s", method, path, code, out)
	}
	return out
}

const (
	podsPath  = "/api/v1/namespaces/ns/pods"
	devsPath  = "/apis/devices.kubeedge.io/v1beta1/namespaces/ns/devices"
	nodesPath = "/api/v1/nodes"
)

func podJSON(name, node string) string {
	return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"` + name + `","namespace":"ns"},"spec":{"nodeName":"` + node + `","containers":[{"name":"c","image":"x"}]}}`
}

func deviceJSON(name, node string) string {
	return `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":"` + name + `","namespace":"ns"},"spec":{"nodeName":"` + node + `","deviceModelRef":{"name":"m"}}}`
}

// TestForwarderRules: a node changes the status of its own Node, Pods and Devices and deletes
// its own Pods; everything else is a 403 that names the rule, and changes nothing.
func TestForwarderRules(t *testing.T) {
	c := newCloud(t, 1000)
	c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-2"}}`)
	c.must(http.MethodPost, podsPath, podJSON("mine", "edge-1"))
	c.must(http.MethodPost, podsPath, podJSON("theirs", "edge-2"))
	c.must(http.MethodPost, devsPath, deviceJSON("dev-mine", "edge-1"))
	c.must(http.MethodPost, devsPath, deviceJSON("dev-theirs", "edge-2"))
	c.must(http.MethodPost, "/api/v1/namespaces/ns/configmaps", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"}}`)

	status := `{"status":{"phase":"Running","state":"online","conditions":[]}}`
	cases := []struct {
		method, path, ct, body string
		code                   int
	}{
		{http.MethodPatch, nodesPath + "/edge-1/status", "application/merge-patch+json", status, 200},
		{http.MethodPatch, nodesPath + "/edge-2/status", "application/merge-patch+json", status, 403},
		{http.MethodPatch, nodesPath + "/edge-1", "application/merge-patch+json", `{"metadata":{"labels":{"x":"y"}}}`, 403},
		{http.MethodPatch, podsPath + "/mine/status", "application/merge-patch+json", status, 200},
		{http.MethodPatch, podsPath + "/theirs/status", "application/merge-patch+json", status, 403},
		{http.MethodPatch, podsPath + "/mine", "application/merge-patch+json", `{"spec":{"nodeName":"edge-2"}}`, 403},
		{http.MethodPost, podsPath, "application/json", podJSON("new", "edge-1"), 403},
		{http.MethodPatch, devsPath + "/dev-mine/status", "application/merge-patch+json", status, 200},
		{http.MethodPatch, devsPath + "/dev-theirs/status", "application/merge-patch+json", status, 403},
		{http.MethodDelete, devsPath + "/dev-mine", "", "", 403},
		{http.MethodDelete, "/api/v1/namespaces/ns/configmaps/cfg", "", "", 403},
		{http.MethodGet, podsPath + "/theirs", "", "", 403},
		{http.MethodGet, podsPath + "?watch=true", "", "", 403},
		{http.MethodDelete, podsPath + "/theirs", "", "", 403},
		{http.MethodDelete, podsPath + "/mine", "", "", 200},
		{http.MethodPatch, podsPath + "/nonexistent/status", "application/merge-patch+json", status, 403},
		{http.MethodPatch, "/api/v1/namespaces/ns/widgets/x/status", "application/merge-patch+json", status, 404},
		{http.MethodPatch, "::bad", "", "", 400},
	}
	for _, tc := range cases {
		resp := c.fwd.Forward(context.Background(), "edge-1", &protocol.Request{ID: 7, Method: tc.method, Path: tc.path, ContentType: tc.ct, Body: []byte(tc.body)})
		if int(resp.Code) != tc.code {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, resp.Code, resp.Body, tc.code)
			continue
		}
		var st struct{ Kind, Reason, Message string }
		json.Unmarshal(resp.Body, &st)
		if tc.code == 403 && (st.Kind != "Status" || st.Reason != "Forbidden" || !strings.Contains(st.Message, `node "edge-1" may only change`)) {
			t.Errorf("%s %s: %s", tc.method, tc.path, resp.Body)
		}
	}
	// Nothing refused was changed.
	if _, out := c.do(http.MethodGet, podsPath+"/theirs", "", ""); strings.Contains(out, "Running") {
		t.Fatalf("another node's pod changed: %s", out)
	}
	if code, _ := c.do(http.MethodGet, podsPath+"/new", "", ""); code != 404 {
		t.Fatal("a node created a pod")
	}
	if code, _ := c.do(http.MethodGet, podsPath+"/mine", "", ""); code != 404 {
		t.Fatal("the node's own pod was not deleted")
	}
	if _, out := c.do(http.MethodGet, devsPath+"/dev-mine", "", ""); !strings.Contains(out, `"state":"online"`) {
		t.Fatalf("the device status was not written: %s", out)
	}
}

// TestListPagesAndExpiredContinue: pages carry the first page's version; a continue token from
// a version the watch cache has forgotten is a 410.
func TestListPagesAndExpiredContinue(t *testing.T) {
	c := newCloud(t, 3)
	for _, n := range []string{"a", "b", "c", "d"} {
		c.must(http.MethodPost, "/api/v1/namespaces/ns/configmaps", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"`+n+`"}}`)
	}
	var page struct {
		Metadata struct{ ResourceVersion, Continue string }
		Items    []struct{ Metadata struct{ Name string } }
	}
	json.Unmarshal([]byte(c.must(http.MethodGet, "/api/v1/namespaces/ns/configmaps?limit=2", "")), &page)
	rv, cont := page.Metadata.ResourceVersion, page.Metadata.Continue
	if len(page.Items) != 2 || cont == "" {
		t.Fatalf("first page %+v", page)
	}
	c.must(http.MethodPost, "/api/v1/namespaces/ns/configmaps", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"e"}}`)
	json.Unmarshal([]byte(c.must(http.MethodGet, "/api/v1/namespaces/ns/configmaps?limit=2&continue="+cont, "")), &page)
	if page.Metadata.ResourceVersion != rv || len(page.Items) != 2 || page.Items[0].Metadata.Name != "c" {
		t.Fatalf("second page %+v (first at %s)", page, rv)
	}
	for _, n := range []string{"f", "g", "h", "i"} {
		c.must(http.MethodPost, "/api/v1/namespaces/ns/configmaps", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"`+n+`"}}`)
	}
	if code, out := c.do(http.MethodGet, "/api/v1/namespaces/ns/configmaps?limit=2&continue="+cont, "", ""); code != http.StatusGone || !strings.Contains(out, `"reason":"Expired"`) {
		t.Fatalf("expired continue: %d %s", code, out)
	}
	// And a watch from that version too.
	if code, out := c.do(http.MethodGet, "/api/v1/namespaces/ns/configmaps?watch=true&resourceVersion="+rv, "", ""); code != http.StatusGone {
		t.Fatalf("watch from a compacted version: %d %s", code, out)
	}
}

// TestHostileBodies: each bad request gets a clear Status with the Kubernetes code and stores
// nothing.
func TestHostileBodies(t *testing.T) {
	c := newCloud(t, 1000)
	cms := "/api/v1/namespaces/ns/configmaps"
	cases := []struct {
		name, method, path, ct, body string
		code                         int
		says                         string
	}{
		{"malformed JSON", http.MethodPost, cms, "application/json", `{"apiVersion":"v1",`, 400, "not valid JSON"},
		{"null", http.MethodPost, cms, "application/json", `null`, 400, "must be one object"},
		{"array", http.MethodPost, cms, "application/json", `[{}]`, 400, "must be one object"},
		{"two objects", http.MethodPost, cms, "application/json", `{"kind":"ConfigMap"} {"kind":"ConfigMap"}`, 400, "more than one"},
		{"wrong kind", http.MethodPost, cms, "application/json", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}`, 400, "the body is a Secret"},
		{"wrong apiVersion", http.MethodPost, cms, "application/json", `{"apiVersion":"v2","kind":"ConfigMap","metadata":{"name":"s"}}`, 400, "apiVersion"},
		{"wrong field type", http.MethodPost, cms, "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s"},"data":5}`, 400, "not a valid ConfigMap"},
		{"bad name", http.MethodPost, cms, "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Not_OK"}}`, 422, "is invalid"},
		{"unknown field, strict", http.MethodPost, cms + "?fieldValidation=Strict", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s"},"datta":{}}`, 400, `unknown field \"datta\"`},
		{"duplicate field, strict", http.MethodPost, cms + "?fieldValidation=Strict", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s"},"data":{},"data":{}}`, 400, `duplicate field \"data\"`},
		{"bad fieldValidation", http.MethodPost, cms + "?fieldValidation=Maybe", "application/json", `{}`, 400, "fieldValidation"},
		{"bad YAML", http.MethodPost, cms, "application/yaml", "a: [", 400, "not valid YAML"},
		{"unknown media type", http.MethodPost, cms, "text/plain", `{}`, 415, "unknown format"},
		{"unknown resource", http.MethodPost, "/api/v1/namespaces/ns/widgets", "application/json", `{}`, 404, "could not find the requested resource"},
		{"unknown group", http.MethodGet, "/apis/example.com/v1/things", "", "", 404, "could not find"},
		{"oversize", http.MethodPost, cms, "application/json", `{"data":{"x":"` + strings.Repeat("x", 3<<20) + `"}}`, 413, "exceeds the limit"},
		{"bad label selector", http.MethodGet, cms + "?labelSelector=a%20in%20(", "", "", 400, "unable to parse labelSelector"},
		{"unsupported field selector", http.MethodGet, cms + "?fieldSelector=data.x%3D1", "", "", 400, "field label not supported"},
		{"dry run", http.MethodPost, cms + "?dryRun=All", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s"}}`, 400, "dry runs"},
		{"stale update", http.MethodPut, cms + "/keep", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"keep","resourceVersion":"1"}}`, 409, "has been modified"},
		{"create existing", http.MethodPost, cms, "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"keep"}}`, 409, "already exists"},
		{"delete missing", http.MethodDelete, cms + "/nope", "", "", 404, "not found"},
		{"collection delete", http.MethodDelete, cms, "", "", 405, "not supported"},
	}
	c.must(http.MethodPost, cms, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"keep"}}`)
	c.must(http.MethodPatch, cms+"/keep", `{"data":{"x":"1"}}`)
	before := c.must(http.MethodGet, cms, "")
	for _, tc := range cases {
		code, out := c.do(tc.method, tc.path, tc.ct, tc.body)
		if code != tc.code || !strings.Contains(out, tc.says) || !strings.Contains(out, `"kind":"Status"`) {
			t.Errorf("%s: %d %.300s; want %d saying %q", tc.name, code, out, tc.code, tc.says)
		}
	}
	if after := c.must(http.MethodGet, cms, ""); after != before {
		t.Fatalf("stored objects changed:\n%s\n%s", before, after)
	}
	// YAML is accepted (the demo POSTs YAML files with curl).
	code, out := c.do(http.MethodPost, cms+"?fieldValidation=Strict", "application/yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  count: \"1\"\n")
	if code != http.StatusCreated || !strings.Contains(out, `"data":{"count":"1"}`) {
		t.Fatalf("YAML create: %d %s", code, out)
	}
}

// TestNodeDeletesOnlyThePodItChecked: a node's delete of its own pod carries the UID of the
// pod that was checked to be the node's, so a pod of the same name created on another node in
// between is not deleted (409 instead). A UID the node sent itself cannot clear that (null or
// empty is the checked pod's), and one that is not the checked pod's is a 409 at once.
func TestNodeDeletesOnlyThePodItChecked(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, `{"preconditions":{"uid":"u-1"}}`},
		{`{"propagationPolicy":"Background"}`, `{"preconditions":{"uid":"u-1"},"propagationPolicy":"Background"}`},
		{`{"preconditions":{"uid":"u-1"}}`, `{"preconditions":{"uid":"u-1"}}`},
		{`{"preconditions":null}`, `{"preconditions":{"uid":"u-1"}}`},
		{`{"preconditions":{"uid":null}}`, `{"preconditions":{"uid":"u-1"}}`},
		{`{"preconditions":{"uid":""}}`, `{"preconditions":{"uid":"u-1"}}`},
	} {
		out, err := withUIDPrecondition([]byte(tc.in), "u-1")
		if err != nil || string(out) != tc.want {
			t.Errorf("withUIDPrecondition(%s) = %s, %v; want %s", tc.in, out, err, tc.want)
		}
	}
	if _, err := withUIDPrecondition([]byte(`{"preconditions":{"uid":"another"}}`), "u-1"); !apierrors.IsConflict(err) {
		t.Errorf("a uid that is not the checked pod's: %v, want a conflict", err)
	}
	if _, err := withUIDPrecondition([]byte(`[1]`), "u-1"); err == nil {
		t.Error("delete options that are not an object were accepted")
	}

	c := newCloud(t, 1000)
	c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	c.must(http.MethodPost, podsPath, podJSON("mine", "edge-1"))
	resp := c.fwd.Forward(context.Background(), "edge-1", &protocol.Request{Method: http.MethodDelete, Path: podsPath + "/mine",
		ContentType: "application/json", Body: []byte(`{"preconditions":{"uid":"not-this-pod"}}`)})
	if resp.Code != http.StatusConflict {
		t.Fatalf("a delete with another UID: %d %s, want 409", resp.Code, resp.Body)
	}
	resp = c.fwd.Forward(context.Background(), "edge-1", &protocol.Request{Method: http.MethodDelete, Path: podsPath + "/mine"})
	if resp.Code != http.StatusOK {
		t.Fatalf("the node's delete of its own pod: %d %s", resp.Code, resp.Body)
	}
}

// TestNodeStatusBounded: an edge's status reports cannot grow its Node without end. New
// condition types past maxNodeConditions are refused, and so is a report that would make the
// Node larger than maxObjectBytes; both as bad reports (acknowledged, not retried), leaving the
// Node as it was. Before, 16 reports of 1,000 new types each grew the Node to 4.7 MB, which the
// API itself then refused to take back (413).
func TestNodeStatusBounded(t *testing.T) {
	c := newCloud(t, 1000)
	c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	ns := NewNodeStatus(c.objects, resource.New(), "r1", time.Now)
	apply := func(seq uint64, payload any) error {
		raw, _ := json.Marshal(payload)
		return ns.Apply(context.Background(), "edge-1", 0, &protocol.Report{Seq: seq, Kind: protocol.ReportNodeStatus, Payload: raw})
	}
	conds := func(from, to int) map[string]any {
		var cs []map[string]string
		for i := from; i < to; i++ {
			cs = append(cs, map[string]string{"type": fmt.Sprintf("T%d", i), "status": "True"})
		}
		return map[string]any{"conditions": cs}
	}
	if err := apply(1, conds(0, maxNodeConditions)); err != nil {
		t.Fatalf("%d condition types: %v", maxNodeConditions, err)
	}
	before := c.must(http.MethodGet, nodesPath+"/edge-1", "")
	if err := apply(2, conds(maxNodeConditions, maxNodeConditions+1)); !errors.Is(err, cloudhub.ErrBadReport) {
		t.Fatalf("one condition type too many: %v", err)
	}
	big := map[string]any{"nodeInfo": map[string]string{"note": strings.Repeat("x", maxObjectBytes)}}
	if err := apply(3, big); !errors.Is(err, cloudhub.ErrBadReport) {
		t.Fatalf("a report making the Node larger than %d bytes: %v", maxObjectBytes, err)
	}
	if after := c.must(http.MethodGet, nodesPath+"/edge-1", ""); after != before {
		t.Fatalf("refused reports changed the Node:\n%.300s\n%.300s", before, after)
	}
	// Known types still change.
	if err := apply(4, map[string]any{"conditions": []map[string]string{{"type": "T0", "status": "False"}}}); err != nil {
		t.Fatal(err)
	}
}

// TestNodeStatusWriteOnlyToThePodItChecked: a node's status write of its own pod changes
// exactly the pod that was checked to be the node's; one of the same name made since (on
// another node) gets a 409. Before, only deletes carried the check.
func TestNodeStatusWriteOnlyToThePodItChecked(t *testing.T) {
	c := newCloud(t, 1000)
	c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	c.must(http.MethodPost, podsPath, podJSON("mine", "edge-1"))
	status := []byte(`{"status":{"phase":"Running"}}`)
	resp := c.fwd.Forward(context.Background(), "edge-1", &protocol.Request{Method: http.MethodPatch, Path: podsPath + "/mine/status",
		ContentType: "application/merge-patch+json", Body: status})
	if resp.Code != http.StatusOK {
		t.Fatalf("the node's status write of its own pod: %d %s", resp.Code, resp.Body)
	}
	// The forwarder checked a pod with another UID (the one it saw was replaced since).
	ctx := context.WithValue(context.Background(), expectUIDKey{}, "the-pod-checked")
	req := httptest.NewRequestWithContext(ctx, http.MethodPatch, podsPath+"/mine/status", strings.NewReader(string(status)))
	req.Header.Set("Content-Type", "application/merge-patch+json")
	rec := httptest.NewRecorder()
	c.api.ServeHTTP(rec, req)
	if rec.Code != http.StatusConflict {
		t.Fatalf("a status write checked against another pod: %d %s, want 409", rec.Code, rec.Body)
	}
}

// TestNodeNotReadyOnlyFromItsReplica: with several replicas, a replica that has no session for a
// node after the grace period marks it Unknown only when the Ready condition names that replica,
// or when the replica named has stopped writing the heartbeat; a node another replica holds with a
// fresh heartbeat is left Ready (cloudhub.ErrHeldElsewhere). Before, every replica marked every
// node it had no session for, and nodes connected to one replica flapped NotReady on the other.
func TestNodeNotReadyOnlyFromItsReplica(t *testing.T) {
	c := newCloud(t, 1000)
	c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	r1 := NewNodeStatus(c.objects, resource.New(), "r1", func() time.Time { return t0 })
	r2 := NewNodeStatus(c.objects, resource.New(), "r2", func() time.Time { return t0 })
	ctx := context.Background()
	ready := func() (status, message string) {
		var n struct {
			Status struct {
				Conditions []condition `json:"conditions"`
			} `json:"status"`
		}
		json.Unmarshal([]byte(c.must(http.MethodGet, nodesPath+"/edge-1", "")), &n)
		for _, cd := range n.Status.Conditions {
			if cd.Type == "Ready" {
				return cd.Status, cd.Message
			}
		}
		return "", ""
	}
	const stale = 3 * time.Minute
	if err := r1.SetReady(ctx, "edge-1", true, "EdgeConnected", t0, time.Minute); err != nil {
		t.Fatal(err)
	}
	// r2 has no session for edge-1; r1 holds it with a fresh heartbeat.
	if err := r2.SetReady(ctx, "edge-1", false, "NodeStatusUnknown", t0.Add(time.Minute), stale); !errors.Is(err, cloudhub.ErrHeldElsewhere) {
		t.Fatalf("r2 marking a node r1 holds: %v, want ErrHeldElsewhere", err)
	}
	if st, msg := ready(); st != "True" || !strings.Contains(msg, "r1") {
		t.Fatalf("after r2's attempt: Ready %s %q, want True on r1", st, msg)
	}
	// r1 went away without a word: its heartbeat ages past the bound.
	if err := r2.SetReady(ctx, "edge-1", false, "NodeStatusUnknown", t0.Add(stale), stale); err != nil {
		t.Fatalf("r2 marking a node whose replica stopped writing: %v", err)
	}
	if st, _ := ready(); st != "Unknown" {
		t.Fatalf("after r1 stopped writing: Ready %s, want Unknown", st)
	}
	// The replica that held the session marks it at once, heartbeat fresh or not.
	if err := r1.SetReady(ctx, "edge-1", true, "EdgeConnected", t0.Add(stale), time.Minute); err != nil {
		t.Fatal(err)
	}
	// A mark whose node came back to r1 after its absence was timed (the mark raced the
	// reconnect on a slow store) leaves it Ready; before, a connected node showed Unknown.
	back := cloudhub.WithGoneSince(ctx, t0.Add(stale-2*time.Second))
	if err := r1.SetReady(back, "edge-1", false, "NodeStatusUnknown", t0.Add(stale+time.Second), stale); !errors.Is(err, cloudhub.ErrBackHere) {
		t.Fatalf("r1 marking its own node that came back: %v, want ErrBackHere", err)
	}
	if st, _ := ready(); st != "True" {
		t.Fatalf("after a mark that raced the reconnect: Ready %s, want True", st)
	}
	gone := cloudhub.WithGoneSince(ctx, t0.Add(stale))
	if err := r1.SetReady(gone, "edge-1", false, "NodeStatusUnknown", t0.Add(stale+time.Second), stale); err != nil {
		t.Fatalf("r1 marking its own node: %v", err)
	}
	if st, _ := ready(); st != "Unknown" {
		t.Fatalf("after r1's grace period: Ready %s, want Unknown", st)
	}
}

// fakeLiveness answers from a map; err, when set, is every answer.
type fakeLiveness struct {
	mu    sync.Mutex
	alive map[string]bool
	err   error
	calls int
}

func (f *fakeLiveness) ReplicaAlive(_ context.Context, name string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.alive[name], f.err
}

// replicaPair is two NodeStatus writers on one store: r1, whose clock stays at t0, holds the
// nodes; r2, told r1's liveness by live (r1 running at first) and with a grace period, reads
// its clock from now, which the test moves.
type replicaPair struct {
	c       *cloud
	r1, r2  *NodeStatus
	live    *fakeLiveness
	t0, now time.Time
}

func newReplicaPair(t *testing.T, grace time.Duration) *replicaPair {
	p := &replicaPair{c: newCloud(t, 1000), live: &fakeLiveness{alive: map[string]bool{"r1": true}}}
	p.t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	p.now = p.t0
	p.r1 = NewNodeStatus(p.c.objects, resource.New(), "r1", func() time.Time { return p.t0 })
	p.r2 = NewNodeStatus(p.c.objects, resource.New(), "r2", func() time.Time { return p.now })
	p.r2.UseLiveness(p.live, grace)
	return p
}

// TestNodeNotReadyWhenItsReplicaStopped: with a liveness source, a replica marks a node
// another replica holds Unknown a grace period after that replica is first seen stopped,
// heartbeat fresh or not (before, at once: in a failover of 10,000 nodes, 26 that were
// redialling showed NotReady); while it runs, or when the check fails, it leaves the node
// alone. Answers are reused for aliveFor, so many nodes of one replica cost one check.
func TestNodeNotReadyWhenItsReplicaStopped(t *testing.T) {
	const grace = 40 * time.Second
	p := newReplicaPair(t, grace)
	c, r1, r2, live, t0 := p.c, p.r1, p.r2, p.live, p.t0
	ctx := context.Background()
	const bound = 3 * time.Minute
	for _, n := range []string{"edge-1", "edge-2"} {
		c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"`+n+`"}}`)
		if err := r1.SetReady(ctx, n, true, "EdgeConnected", t0, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := r2.SetReady(ctx, n, false, "NodeStatusUnknown", t0.Add(time.Second), bound); !errors.Is(err, cloudhub.ErrHeldElsewhere) {
			t.Fatalf("%s held by a running r1: %v, want ErrHeldElsewhere", n, err)
		}
	}
	if live.calls != 1 {
		t.Fatalf("%d liveness checks for two nodes within aliveFor, want 1", live.calls)
	}
	live.mu.Lock()
	live.err = errors.New("etcd unreachable")
	live.alive["r1"] = false
	live.mu.Unlock()
	p.now = p.now.Add(2 * aliveFor)
	if err := r2.SetReady(ctx, "edge-1", false, "NodeStatusUnknown", t0.Add(2*time.Second), bound); !errors.Is(err, cloudhub.ErrHeldElsewhere) {
		t.Fatalf("with the check failing: %v, want ErrHeldElsewhere", err)
	}
	live.mu.Lock()
	live.err = nil
	live.mu.Unlock()
	p.now = p.now.Add(2 * aliveFor)
	stoppedSeen := p.now
	readyOf := func(n string) []condition {
		var node struct {
			Status struct{ Conditions []condition } `json:"status"`
		}
		json.Unmarshal([]byte(c.must(http.MethodGet, nodesPath+"/"+n, "")), &node)
		return node.Status.Conditions
	}
	for i, n := range []string{"edge-1", "edge-2"} {
		p.now = stoppedSeen.Add(time.Duration(i) * 10 * time.Second)
		err := r2.SetReady(ctx, n, false, "NodeStatusUnknown", t0.Add(3*time.Second), bound)
		var stopped *cloudhub.HolderStoppedError
		if !errors.As(err, &stopped) || !errors.Is(err, cloudhub.ErrHeldElsewhere) || stopped.Holder != "r1" || stopped.Wait != grace-p.now.Sub(stoppedSeen) {
			t.Fatalf("%s just after r1 was seen stopped: %v, want a HolderStoppedError of r1 with %s to wait", n, err, grace-p.now.Sub(stoppedSeen))
		}
		if conds := readyOf(n); len(conds) != 1 || conds[0].Status != "True" {
			t.Fatalf("%s within the grace period after r1 stopped: %+v, want Ready True", n, conds)
		}
	}
	p.now = stoppedSeen.Add(grace)
	for _, n := range []string{"edge-1", "edge-2"} {
		if err := r2.SetReady(ctx, n, false, "NodeStatusUnknown", t0.Add(45*time.Second), bound); err != nil {
			t.Fatalf("%s a grace period after r1 stopped: %v", n, err)
		}
		if conds := readyOf(n); len(conds) != 1 || conds[0].Status != "Unknown" {
			t.Fatalf("%s a grace period after r1 stopped: %+v, want Ready Unknown", n, conds)
		}
	}
}

// TestHolderStoppedTold: a replica told that another stopped (HolderStopped, from the etcd
// watch of replica keys) times that one's nodes from then, although its liveness check, asked
// less than aliveFor ago, said it ran; a second telling keeps the first time; being told of
// itself changes nothing.
func TestHolderStoppedTold(t *testing.T) {
	const grace, bound = 40 * time.Second, 3 * time.Minute
	p := newReplicaPair(t, grace)
	c, r1, r2, live, t0 := p.c, p.r1, p.r2, p.live, p.t0
	ctx := context.Background()
	c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	if err := r1.SetReady(ctx, "edge-1", true, "EdgeConnected", t0, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r2.SetReady(ctx, "edge-1", false, "NodeStatusUnknown", t0, bound); !errors.Is(err, cloudhub.ErrHeldElsewhere) {
		t.Fatalf("held by a running r1: %v, want ErrHeldElsewhere", err)
	}
	told := p.now
	if !r2.HolderStopped("r1") || r2.HolderStopped("r2") {
		t.Fatal("HolderStopped must take r1 and refuse r2, the replica itself")
	}
	p.now = told.Add(10 * time.Second)
	r2.HolderStopped("r1") // told again: the stop is still from told
	var stopped *cloudhub.HolderStoppedError
	if err := r2.SetReady(ctx, "edge-1", false, "NodeStatusUnknown", t0, bound); !errors.As(err, &stopped) || stopped.Wait != grace-10*time.Second {
		t.Fatalf("10 s after told r1 stopped: %v, want a HolderStoppedError with %s to wait", err, grace-10*time.Second)
	}
	// By then the check is asked again, and etcd says what the watch did.
	live.mu.Lock()
	live.alive["r1"] = false
	live.mu.Unlock()
	p.now = told.Add(grace)
	if err := r2.SetReady(ctx, "edge-1", false, "NodeStatusUnknown", t0, bound); err != nil {
		t.Fatalf("a grace period after told r1 stopped: %v", err)
	}
	// r2's own name is not a holder to time: its nodes are its sessions.
	r2.mu.Lock()
	_, self := r2.alive["r2"]
	r2.mu.Unlock()
	if self {
		t.Fatal("HolderStopped of the replica itself was recorded")
	}
}

// sizeLimited refuses values over limit with store.ErrTooLarge, as etcdstore does past etcd's
// request limit (TestValueTooLarge there shows it with a real etcd).
type sizeLimited struct {
	store.Backend
	limit int
}

func (b sizeLimited) Create(ctx context.Context, key string, value []byte) (int64, error) {
	if len(value) > b.limit {
		return 0, store.ErrTooLarge
	}
	return b.Backend.Create(ctx, key, value)
}

func (b sizeLimited) Update(ctx context.Context, key string, value []byte, rev int64) (int64, error) {
	if len(value) > b.limit {
		return 0, store.ErrTooLarge
	}
	return b.Backend.Update(ctx, key, value, rev)
}

// TestStoreTooLargeIsFinal: a write the store refuses for its size (etcd's limit is below
// maxObjectBytes) is a 413 through the API, and a report that makes one is dropped as bad. Before
// it was a 503, and the hub ended the edge's session over the report, which the edge then sent
// again at every reconnect, holding back every report after it.
func TestStoreTooLargeIsFinal(t *testing.T) {
	c := newCloudWith(t, 1000, testSweep, func(b store.Backend) store.Backend { return sizeLimited{Backend: b, limit: 64 << 10} })
	c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	big := strings.Repeat("k", 100<<10)
	if code, out := c.do(http.MethodPost, "/api/v1/namespaces/ns/configmaps", "application/json",
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"a":"`+big+`"}}`); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("create: %d %s, want 413", code, out)
	}
	ns := NewNodeStatus(c.objects, resource.New(), "r1", time.Now)
	raw, _ := json.Marshal(map[string]any{"nodeInfo": map[string]string{"kernelVersion": big}})
	err := ns.Apply(context.Background(), "edge-1", 0, &protocol.Report{Seq: 1, Kind: protocol.ReportNodeStatus, Payload: raw})
	if !errors.Is(err, cloudhub.ErrBadReport) {
		t.Fatalf("a node status report the store refuses for its size: %v, want a bad report", err)
	}
}

// TestRegisterKeepsTheLaterJoin: of two joins of one name signed close together, the one whose
// certificate was issued later is recorded whatever order they reach the store in; the other
// gets join.ErrLaterJoin. Before, the last to write moved certificates-since back, and both
// certificates were let in.
func TestRegisterKeepsTheLaterJoin(t *testing.T) {
	c := newCloud(t, 1000)
	nodes := NewNodes(c.objects, resource.New())
	ctx := context.Background()
	a := time.Date(2026, 11, 29, 10, 0, 0, 100, time.UTC)
	b := a.Add(50 * time.Millisecond)
	if err := nodes.Register(ctx, "edge-1", nil, b); err != nil {
		t.Fatal(err)
	}
	if err := nodes.Register(ctx, "edge-1", nil, a); !errors.Is(err, join.ErrLaterJoin) {
		t.Fatalf("the earlier join recorded after the later: %v, want join.ErrLaterJoin", err)
	}
	var n struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	json.Unmarshal([]byte(c.must(http.MethodGet, nodesPath+"/edge-1", "")), &n)
	if got := n.Metadata.Annotations[cloudhub.AnnotationCertificatesSince]; got != b.Format(time.RFC3339Nano) {
		t.Fatalf("certificates-since %s, want the later join's %s", got, b.Format(time.RFC3339Nano))
	}
	if err := nodes.Register(ctx, "edge-1", nil, b.Add(time.Second)); err != nil {
		t.Fatalf("a join after both: %v", err)
	}
}

// TestJoinAnnotationsAreTheClouds: a client cannot change or remove the annotations of a Node's
// join; a replace from a manifest without them (kubectl replace of a saved file) keeps them.
// Before, it removed them, and the hub ended the node's session and refused its certificate until
// the node joined again.
func TestJoinAnnotationsAreTheClouds(t *testing.T) {
	c := newCloud(t, 1000)
	nodes := NewNodes(c.objects, resource.New())
	issued := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	if err := nodes.Register(context.Background(), "edge-1", nil, issued); err != nil {
		t.Fatal(err)
	}
	annotations := func() map[string]string {
		var n struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		json.Unmarshal([]byte(c.must(http.MethodGet, nodesPath+"/edge-1", "")), &n)
		return n.Metadata.Annotations
	}
	want := annotations()
	if want[cloudhub.AnnotationJoinedUID] == "" || want[cloudhub.AnnotationCertificatesSince] == "" {
		t.Fatalf("after the join: %v", want)
	}
	c.must(http.MethodPut, nodesPath+"/edge-1", `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1","labels":{"a":"b"}}}`)
	if got := annotations(); !maps.Equal(got, want) {
		t.Fatalf("after a replace without them: %v, want %v", got, want)
	}
	c.must(http.MethodPatch, nodesPath+"/edge-1", `{"metadata":{"annotations":{"`+cloudhub.AnnotationCertificatesSince+`":"2020-01-01T00:00:00Z","`+cloudhub.AnnotationJoinedUID+`":null}}}`)
	if got := annotations(); !maps.Equal(got, want) {
		t.Fatalf("after a patch changing them: %v, want %v", got, want)
	}
}

// TestComplexReportRefused: a node status report holding more than kubeapi.MaxJSONContainers
// objects (well under the size limits) is dropped as bad, and the Node stays writable. Before,
// it was stored, and every later write of that Node (Ready, a re-join, a label) failed decoding
// it again.
func TestComplexReportRefused(t *testing.T) {
	c := newCloud(t, 1000)
	c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	ns := NewNodeStatus(c.objects, resource.New(), "r1", time.Now)
	raw := []byte(`{"addresses":[` + strings.Repeat(`{},`, kubeapi.MaxJSONContainers) + `{}]}`)
	err := ns.Apply(context.Background(), "edge-1", 0, &protocol.Report{Seq: 1, Kind: protocol.ReportNodeStatus, Payload: raw})
	if !errors.Is(err, cloudhub.ErrBadReport) {
		t.Fatalf("a node status report of %d objects: %v, want a bad report", kubeapi.MaxJSONContainers+2, err)
	}
	if code, body := c.do(http.MethodPatch, nodesPath+"/edge-1", "application/merge-patch+json", `{"metadata":{"labels":{"x":"1"}}}`); code != http.StatusOK {
		t.Fatalf("a label on the Node after the refused report: %d %s", code, body)
	}
}
