package kubeapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	openapiv2 "github.com/google/gnostic-models/openapiv2"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/openapi3"
	"k8s.io/client-go/rest"
	kproto "k8s.io/kube-openapi/pkg/util/proto"
	"k8s.io/kube-openapi/pkg/util/proto/validation"
	"sigs.k8s.io/yaml"

	"github.com/tetherhub/tether/resource"
)

// memStore is an in-memory Storage for the Handler's own tests: the Handler's job (paths,
// media types, tables, documents) does not depend on how objects are kept.
type memStore struct {
	objs  map[string][]byte
	cache *Cache
}

func (m *memStore) Get(_ context.Context, info resource.Info, ns, name string) ([]byte, error) {
	if b, ok := m.objs[ns+"/"+name]; ok {
		return b, nil
	}
	return nil, NotFound(info.Group, info.Resource, name)
}

func (m *memStore) List(_ context.Context, _ resource.Info, _ string, _ ListOptions) (*ListResult, error) {
	res := &ListResult{ResourceVersion: "7"}
	for _, b := range m.objs {
		res.Items = append(res.Items, b)
	}
	return res, nil
}

func (m *memStore) Watch(_ context.Context, info resource.Info, ns string, opts ListOptions) (*Watch, error) {
	return m.cache.Watch(info.GroupResource(), ns, opts, 7, nil)
}

func (m *memStore) Create(_ context.Context, _ resource.Info, _ string, obj []byte) ([]byte, error) {
	return obj, nil
}

func (m *memStore) Update(context.Context, resource.Info, string, string, string, []byte) ([]byte, error) {
	return nil, MethodNotAllowed("x", "no")
}

func (m *memStore) Patch(context.Context, resource.Info, string, string, string, PatchType, []byte) ([]byte, error) {
	return nil, MethodNotAllowed("x", "no")
}

func (m *memStore) Delete(context.Context, resource.Info, string, string, DeleteOptions) ([]byte, error) {
	return nil, MethodNotAllowed("x", "no")
}

func newTestServer(t *testing.T, objs map[string][]byte) (*httptest.Server, *memStore) {
	t.Helper()
	m := &memStore{objs: objs, cache: NewCache(100, 100)}
	h, err := New(DefaultConfig(), resource.New(), m, zerolog.Nop(), nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, m
}

// TestOpenAPIAsClientsReadIt: the v2 document parses as client-go's discovery and kubectl's
// openapi package parse it, with a schema for each KubeEdge kind and none for the built-in
// ones; the v3 documents announce fieldValidation on every kind's PATCH, as kubectl checks.
func TestOpenAPIAsClientsReadIt(t *testing.T) {
	srv, _ := newTestServer(t, nil)
	dc, err := discovery.NewDiscoveryClientForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := dc.OpenAPISchema()
	if err != nil {
		t.Fatal(err)
	}
	models, err := kproto.NewOpenAPIData(doc)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, name := range models.ListModels() {
		exts, _ := models.LookupModel(name).GetExtensions()[gvkExtension].([]any)
		for _, ext := range exts {
			m := ext.(map[any]any)
			kinds[fmt.Sprint(m["kind"])] = true
		}
	}
	for _, k := range []string{"Device", "DeviceModel", "NodeGroup", "Pod", "Node", "ConfigMap", "Secret", "Service", "Namespace", "EndpointSlice"} {
		if !kinds[k] {
			t.Fatalf("no schema for %s among %v", k, kinds)
		}
	}
	// kubectl 1.20 validates with these schemas: a typo deep in a Pod is found, a valid Pod
	// (with an integer where a quantity or int-or-string goes) passes, and KubeEdge kinds keep
	// whatever their spec holds.
	lookup := func(gvk schema.GroupVersionKind) kproto.Schema {
		for _, name := range models.ListModels() {
			m := models.LookupModel(name)
			exts, _ := m.GetExtensions()[gvkExtension].([]any)
			for _, ext := range exts {
				e := ext.(map[any]any)
				if e["group"] == gvk.Group && e["version"] == gvk.Version && e["kind"] == gvk.Kind {
					return m
				}
			}
		}
		t.Fatalf("no schema for %s", gvk)
		return nil
	}
	check := func(gvk schema.GroupVersionKind, y string) []error {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(y), &obj); err != nil {
			t.Fatal(err)
		}
		return validation.ValidateModel(obj, lookup(gvk), gvk.Kind)
	}
	pod := schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
	good := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  creationTimestamp: null\n  labels: {a: b}\nspec:\n  containers:\n  - name: c\n    image: x\n    ports: [{containerPort: 80}]\n    resources: {limits: {cpu: 1, memory: 1Gi}}\n    livenessProbe: {httpGet: {port: 8080, path: /}}\n"
	if errs := check(pod, good); len(errs) != 0 {
		t.Fatalf("a valid pod: %v", errs)
	}
	if errs := check(pod, strings.Replace(good, "image: x", "imag: x", 1)); len(errs) != 1 || !strings.Contains(errs[0].Error(), `unknown field "imag"`) {
		t.Fatalf("a typo in a container: %v", errs)
	}
	dev := schema.GroupVersionKind{Group: "devices.kubeedge.io", Version: "v1beta1", Kind: "Device"}
	if errs := check(dev, "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: d}\nspec: {anything: [1, {x: y}]}\n"); len(errs) != 0 {
		t.Fatalf("a device: %v", errs)
	}
	// Strategic merge patches from the schema merge containers by name, as from the Go type.
	meta, _, err := strategicpatch.NewPatchMetaFromOpenAPI(lookup(pod)).LookupPatchMetadataForStruct("spec")
	if err != nil {
		t.Fatal(err)
	}
	_, pm, err := meta.LookupPatchMetadataForSlice("containers")
	if err != nil || pm.GetPatchMergeKey() != "name" || fmt.Sprint(pm.GetPatchStrategies()) != "[merge]" {
		t.Fatalf("containers patch meta: %+v %v", pm, err)
	}
	var raw openapiv2.Document
	resp, _ := http.Get(srv.URL + "/openapi/v2")
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("v2 without Accept: %s", ct)
	}
	resp.Body.Close()
	if err := proto.Unmarshal(mustProto(t, srv.URL), &raw); err != nil || raw.Swagger != "2.0" {
		t.Fatalf("v2 protobuf: %v %q", err, raw.Swagger)
	}

	root := openapi3.NewRoot(dc.OpenAPIV3())
	for _, info := range resource.New().All() {
		gv := schema.GroupVersion{Group: info.Group, Version: info.Version}
		spec, err := root.GVSpec(gv)
		if err != nil {
			t.Fatalf("%s: %v", gv, err)
		}
		found := false
		for _, p := range spec.Paths.Paths {
			if p.Patch == nil {
				continue
			}
			var g map[string]string
			if err := p.Patch.Extensions.GetObject(gvkExtension, &g); err != nil || g["kind"] != info.Kind {
				continue
			}
			for _, prm := range p.Patch.Parameters {
				found = found || (prm.Name == "fieldValidation" && prm.In == "query")
			}
		}
		if !found {
			t.Errorf("%s: no PATCH with fieldValidation in the v3 document", info.Kind)
		}
	}
}

func mustProto(t *testing.T, base string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/openapi/v2", nil)
	req.Header.Set("Accept", mimeOpenAPIV2ProtoOld)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != mimeOpenAPIV2Proto {
		t.Fatalf("content type %q", ct)
	}
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return []byte(b.String())
}

// TestTables: the columns people look for, for list, get and watch.
func TestTables(t *testing.T) {
	created := time.Now().Add(-3 * time.Hour).UTC().Format(time.RFC3339)
	dev := `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":"d1","namespace":"ns","creationTimestamp":"` + created + `","resourceVersion":"5"},
		"spec":{"nodeName":"edge-1","deviceModelRef":{"name":"thermo"}},"status":{"state":"online"}}`
	srv, m := newTestServer(t, map[string][]byte{"ns/d1": []byte(dev)})
	get := func(path, accept string) (int, metav1.Table) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tbl metav1.Table
		json.NewDecoder(resp.Body).Decode(&tbl)
		return resp.StatusCode, tbl
	}
	const kubectlAccept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
	devs := "/apis/devices.kubeedge.io/v1beta1/namespaces/ns/devices"
	code, tbl := get(devs, kubectlAccept)
	if code != 200 || tbl.Kind != "Table" || tbl.APIVersion != "meta.k8s.io/v1" || tbl.ResourceVersion != "7" {
		t.Fatalf("list table: %d %+v", code, tbl)
	}
	var names []string
	for _, c := range tbl.ColumnDefinitions {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "Name,Model,Node,State,Age,Last-Online" || len(tbl.Rows) != 1 {
		t.Fatalf("columns %v rows %d", names, len(tbl.Rows))
	}
	if cells := fmt.Sprint(tbl.Rows[0].Cells[:5]); cells != "[d1 thermo edge-1 online 3h]" {
		t.Fatalf("cells %s", cells)
	}
	if !strings.Contains(string(tbl.Rows[0].Object.Raw), `"kind":"PartialObjectMetadata"`) {
		t.Fatalf("row object %s", tbl.Rows[0].Object.Raw)
	}
	if _, tbl := get(devs+"?includeObject=Object", kubectlAccept); !strings.Contains(string(tbl.Rows[0].Object.Raw), `"deviceModelRef"`) {
		t.Fatalf("includeObject=Object: %s", tbl.Rows[0].Object.Raw)
	}
	if code, tbl := get(devs+"/d1", "application/json;as=Table;v=v1beta1;g=meta.k8s.io"); code != 200 || tbl.APIVersion != "meta.k8s.io/v1beta1" || len(tbl.Rows) != 1 {
		t.Fatalf("get table: %d %+v", code, tbl)
	}
	if code, _ := get(devs+"?includeObject=All", kubectlAccept); code != http.StatusBadRequest {
		t.Fatalf("bad includeObject: %d", code)
	}
	// Without the table clause: the list itself.
	resp, _ := http.Get(srv.URL + devs)
	var l struct{ Kind string }
	json.NewDecoder(resp.Body).Decode(&l)
	resp.Body.Close()
	if l.Kind != "DeviceList" {
		t.Fatalf("plain list kind %q", l.Kind)
	}

	// A watch in table form: one row per event.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+devs+"?watch=true&resourceVersion=7", nil)
	req.Header.Set("Accept", kubectlAccept)
	wresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer wresp.Body.Close()
	m.cache.Add(Event{Type: Modified, Rev: 8, Resource: "devices.devices.kubeedge.io", Meta: Meta{Namespace: "ns", Name: "d1"},
		Object: []byte(strings.Replace(dev, `"online"`, `"offline"`, 1))})
	var ev struct {
		Type   string
		Object metav1.Table
	}
	if err := json.NewDecoder(wresp.Body).Decode(&ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "MODIFIED" || ev.Object.Kind != "Table" || fmt.Sprint(ev.Object.Rows[0].Cells[3]) != "offline" {
		t.Fatalf("table event %+v", ev)
	}
}

// TestCacheSize: the cache reports the events it holds and about the bytes they take, which stop
// growing once the ring is full and go back to nothing on Reset.
func TestCacheSize(t *testing.T) {
	c := NewCache(4, 3)
	c.Reset(0)
	obj := []byte(strings.Repeat("x", 1000))
	add := func(rev int64) {
		prev := &Meta{Namespace: "ns", Name: "p", Labels: map[string]string{"app": "a"}}
		c.Add(Event{Type: Modified, Rev: rev, Resource: "pods", Meta: Meta{Namespace: "ns", Name: "p", Labels: map[string]string{"app": "a"}}, Prev: prev, Object: obj})
	}
	if n, b := c.Size(); n != 0 || b != 0 {
		t.Fatalf("empty cache: %d events, %d bytes", n, b)
	}
	add(1)
	_, one := c.Size()
	if one < 1000 || one > 3000 {
		t.Fatalf("one event of a 1,000-byte object: %d bytes", one)
	}
	for rev := int64(2); rev <= 4; rev++ {
		add(rev)
	}
	if n, _ := c.Size(); n != 4 {
		t.Fatalf("4 events added: the cache holds %d", n)
	}
	for rev := int64(5); rev <= 20; rev++ {
		add(rev)
	}
	n, full := c.Size()
	if n != 4 || full < 4*one {
		t.Fatalf("after the ring wrapped: %d events, %d bytes, want 4 and at least %d", n, full, 4*one)
	}
	for rev := int64(21); rev <= 40; rev++ {
		add(rev) // events of the same shape replace each other: the size stays
	}
	if n, b := c.Size(); n != 4 || b != full {
		t.Fatalf("after more of the same events: %d events, %d bytes, want 4 and %d", n, b, full)
	}
	c.Reset(40)
	if n, b := c.Size(); n != 0 || b != 0 {
		t.Fatalf("after Reset: %d events, %d bytes", n, b)
	}
}

// TestCacheLimitBytes: a cache bounded in bytes drops its oldest events past the bound, and a
// watch from before what it kept is a 410, from within it an exact replay.
func TestCacheLimitBytes(t *testing.T) {
	c := NewCache(100, 100)
	obj := []byte(strings.Repeat("x", 1000))
	probe := NewCache(1, 1)
	probe.Reset(0)
	probe.Add(Event{Type: Modified, Rev: 1, Resource: "pods", Meta: Meta{Namespace: "ns", Name: "p"}, Object: obj})
	_, one := probe.Size()
	c.LimitBytes(3*one + one/2)
	c.Reset(0)
	for rev := int64(1); rev <= 10; rev++ {
		c.Add(Event{Type: Modified, Rev: rev, Resource: "pods", Meta: Meta{Namespace: "ns", Name: "p"}, Object: obj})
	}
	if n, b := c.Size(); n != 3 || b != 3*one {
		t.Fatalf("10 events of %d bytes under a bound of %d: %d events, %d bytes", one, 3*one+one/2, n, b)
	}
	if _, err := c.Watch("pods", "", ListOptions{}, 6, nil); err == nil {
		t.Fatal("a watch from before the kept events was accepted")
	}
	w, err := c.Watch("pods", "", ListOptions{}, 7, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var got []int64
	for len(got) < 3 {
		evs, err := w.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			got = append(got, ev.Rev)
		}
	}
	if fmt.Sprint(got) != "[8 9 10]" {
		t.Fatalf("watch from 7: %v", got)
	}
	// One event larger than the bound is still kept: a watch from just before it works.
	c.Add(Event{Type: Modified, Rev: 11, Resource: "pods", Meta: Meta{Namespace: "ns", Name: "p"}, Object: []byte(strings.Repeat("y", 10_000))})
	if n, _ := c.Size(); n != 1 {
		t.Fatalf("after an event over the bound: %d events, want 1", n)
	}
}

// TestCacheLimitAge: events older than the age bound are dropped as newer ones come (a watch
// from before them gets 410), the newest is always kept, and a quiet cache keeps what it has.
func TestCacheLimitAge(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := NewCache(100, 100).LimitAge(time.Minute, func() time.Time { return now })
	c.Reset(0)
	add := func(rev int64) {
		c.Add(Event{Type: Modified, Rev: rev, Resource: "pods", Meta: Meta{Namespace: "ns", Name: "p"}, Object: []byte(`{}`)})
	}
	for rev := int64(1); rev <= 5; rev++ { // one every 25 s: at 0 s … 100 s
		if rev > 1 {
			now = now.Add(25 * time.Second)
		}
		add(rev)
	}
	// When the fifth came (100 s), the first two (0 s, 25 s) were over a minute old; the third
	// (50 s) was not.
	if n, _ := c.Size(); n != 3 {
		t.Fatalf("%d events kept, want the 3 of the last minute", n)
	}
	if _, err := c.Watch("pods", "", ListOptions{}, 1, nil); err == nil {
		t.Fatal("a watch from an event past the age bound was accepted")
	}
	w, err := c.Watch("pods", "", ListOptions{}, 2, nil)
	if err != nil {
		t.Fatalf("a watch from the newest dropped event: %v", err)
	}
	w.Stop()
	now = now.Add(time.Hour) // nothing comes: nothing is dropped
	if n, _ := c.Size(); n != 3 {
		t.Fatalf("%d events after a quiet hour, want 3", n)
	}
	add(6)
	if n, _ := c.Size(); n != 1 {
		t.Fatalf("%d events after one came an hour later, want only it", n)
	}
}

// TestCacheWatch: exact replay after a version, 410 before the ring, and a slow watcher ended
// instead of buffered.
func TestCacheWatch(t *testing.T) {
	c := NewCache(4, 3)
	c.Reset(10)
	add := func(rev int64, name string) {
		c.Add(Event{Type: Added, Rev: rev, Resource: "pods", Meta: Meta{Namespace: "ns", Name: name}, Object: []byte(`{}`)})
	}
	for i := int64(11); i <= 14; i++ {
		add(i, fmt.Sprint("p", i))
	}
	w, err := c.Watch("pods", "", ListOptions{}, 12, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs, _ := w.Next(context.Background())
	if len(evs) != 2 || evs[0].Rev != 13 || evs[1].Rev != 14 {
		t.Fatalf("replay %+v", evs)
	}
	add(15, "p15") // the ring drops 11: a watch from 10 has a gap
	if _, err := c.Watch("pods", "", ListOptions{}, 10, nil); err == nil || !strings.Contains(err.Error(), "too old") {
		t.Fatalf("watch from a forgotten version: %v", err)
	}
	if !c.Knows(11) || c.Knows(10) {
		t.Fatal("Knows disagrees with the ring")
	}
	// w has 15 pending; three more undelivered past its buffer end it.
	for i := int64(16); i <= 20; i++ {
		add(i, fmt.Sprint("p", i))
	}
	if _, err := w.Next(context.Background()); err != ErrWatchEnded {
		t.Fatalf("slow watcher: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if !c.WaitRev(ctx, 20) {
		t.Fatal("WaitRev for a known version")
	}
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if c.WaitRev(short, 21) {
		t.Fatal("WaitRev for a future version returned true")
	}
}

// TestBookmarkNotBehindWatchStart: a watch may start from a revision the cache has not reached
// yet (a list read the store first). A bookmark then must not name a revision below that start,
// or a client resuming from it would see again what its list already held.
func TestBookmarkNotBehindWatchStart(t *testing.T) {
	c := NewCache(4, 3)
	c.Reset(10)
	w, err := c.Watch("pods", "", ListOptions{}, 12, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rev, ok := w.BookmarkRev(); ok {
		t.Fatalf("bookmark at %d for a watch from 12 while the cache is at 10", rev)
	}
	c.Progress(13)
	if rev, ok := w.BookmarkRev(); !ok || rev != 13 {
		t.Fatalf("bookmark once the cache passed the start: %d %v", rev, ok)
	}
}

// TestWatchTimeoutBeyondDuration: a timeoutSeconds too large for a time.Duration is capped at
// MaxWatchTimeout. Before, it wrapped negative and the watch ended at once.
func TestWatchTimeoutBeyondDuration(t *testing.T) {
	srv, _ := newTestServer(t, map[string][]byte{})
	start := time.Now()
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get(srv.URL + "/api/v1/configmaps?watch=true&timeoutSeconds=9223372037")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if d := time.Since(start); err == nil || d < 900*time.Millisecond {
		t.Fatalf("the watch ended after %s with status %d (read error %v); it should stay open", d, resp.StatusCode, err)
	}
}

func TestDecodeBody(t *testing.T) {
	cases := []struct {
		ct, body, want, err string
	}{
		{"", `{"a":1}`, `{"a":1}`, ""},
		{"application/json; charset=utf-8", ` {"a":1} `, `{"a":1}`, ""},
		{"application/yaml", "a: 1\nb: [x]\n", `{"a":1,"b":["x"]}`, ""},
		{"application/yaml", "null", "", "must be one object"},
		{"application/json", `null`, "", "must be one object"},
		{"application/json", `{"a":1}{"b":2}`, "", "more than one"},
		{"application/json", `{"a":`, "", "not valid JSON"},
		{"application/xml", `<a/>`, "", "unknown format"},
		{"application/yaml", "a: [", "", "not valid YAML"},
	}
	for _, tc := range cases {
		got, err := DecodeBody(tc.ct, []byte(tc.body))
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q %q: error %v, want %q", tc.ct, tc.body, err, tc.err)
		case tc.err == "" && (err != nil || string(got) != tc.want):
			t.Errorf("%q %q: %s %v, want %s", tc.ct, tc.body, got, err, tc.want)
		}
	}
}

// TestBookmarkNeverAheadOfEvents: a periodic bookmark never announces a version whose events
// are written after it. Before, a bookmark decided while the reader held events taken from the
// watch (not yet written) named their version and went out first; a client resuming from it
// would never see them.
// watchServer serves a watch cache of size changes, at revision 7, with cfg edited by edit.
func watchServer(t *testing.T, size int, edit func(*Config)) (*httptest.Server, *memStore) {
	t.Helper()
	m := &memStore{cache: NewCache(size, size)}
	m.cache.Reset(7)
	cfg := DefaultConfig()
	edit(&cfg)
	h, err := New(cfg, resource.New(), m, zerolog.Nop(), nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, m
}

func TestBookmarkNeverAheadOfEvents(t *testing.T) {
	srv, m := watchServer(t, 100_000, func(c *Config) { c.BookmarkInterval = time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/namespaces/ns/configmaps?watch=true&allowWatchBookmarks=true&resourceVersion=7", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	const last = 20_007
	go func() {
		for rev := int64(8); rev <= last; rev++ {
			m.cache.Add(Event{Type: Added, Rev: rev, Resource: "configmaps", Meta: Meta{Namespace: "ns", Name: fmt.Sprint("c", rev)},
				Object: []byte(fmt.Sprintf(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c%d","namespace":"ns","resourceVersion":"%d"}}`, rev, rev))})
			if rev%50 == 0 {
				time.Sleep(100 * time.Microsecond) // let bookmarks come between
			}
		}
	}()
	dec := json.NewDecoder(resp.Body)
	var bookmark, bookmarks int64
	for {
		var ev struct {
			Type   string
			Object struct {
				Metadata struct{ ResourceVersion string }
			}
		}
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("after bookmark %d: %v", bookmark, err)
		}
		rv, _ := strconv.ParseInt(ev.Object.Metadata.ResourceVersion, 10, 64)
		if ev.Type == "BOOKMARK" {
			bookmark, bookmarks = rv, bookmarks+1
			continue
		}
		if rv <= bookmark {
			t.Fatalf("%s at %d arrived after a BOOKMARK at %d", ev.Type, rv, bookmark)
		}
		if rv == last {
			break
		}
	}
	if bookmarks == 0 {
		t.Fatal("no bookmark came between the events; the test shows nothing")
	}
	t.Logf("%d bookmarks between %d events", bookmarks, last-7)
}

// TestSlowBodyCutOff: a client that announces a body and stops sending it gets 400 once the
// body timeout passes, instead of holding its goroutine and buffer for as long as it likes.
func TestSlowBodyCutOff(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BodyTimeout = 300 * time.Millisecond
	h, err := New(cfg, resource.New(), &memStore{cache: NewCache(10, 10)}, zerolog.Nop(), nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /api/v1/namespaces/ns/configmaps/c HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3000000\r\n\r\n{\"api")
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(status, "400") {
		t.Fatalf("after %s: %q %v; want a 400", time.Since(start), status, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the stalled body was cut off after %s, want about the body timeout", d)
	}
}

// TestWatchCap: past MaxWatches a watch gets 429 with Retry-After and a TooManyRequests
// Status, and client-go, asking while the cap is reached, waits and gets its watch once one
// closes.
func TestWatchCap(t *testing.T) {
	srv, _ := watchServer(t, 100, func(c *Config) { c.MaxWatches = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const path = "/api/v1/namespaces/ns/configmaps?watch=true&resourceVersion=7"
	open := func() *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var held []*http.Response
	for range 2 {
		resp := open()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("a watch under the cap: %d", resp.StatusCode)
		}
		defer resp.Body.Close()
		held = append(held, resp)
	}
	resp := open()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var st metav1.Status
	json.Unmarshal(body, &st)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" || st.Reason != metav1.StatusReasonTooManyRequests {
		t.Fatalf("a watch past the cap: %d, Retry-After %q, %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}

	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		w, err := cs.CoreV1().ConfigMaps("ns").Watch(ctx, metav1.ListOptions{ResourceVersion: "7"})
		if err == nil {
			w.Stop()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("client-go's watch ended while the cap was reached: %v", err)
	case <-time.After(1500 * time.Millisecond): // it got 429 and waits out Retry-After
	}
	held[0].Body.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("client-go's watch after one closed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client-go's watch did not open after one of the others closed")
	}
}
