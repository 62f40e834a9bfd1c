package cloudapi

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	secretsPath = "/api/v1/namespaces/ns/secrets"
	cmsPath     = "/api/v1/namespaces/ns/configmaps"
	modelsPath  = "/apis/devices.kubeedge.io/v1beta1/namespaces/ns/devicemodels"
)

// watchLines starts a watch on path (which holds its query) and delivers its lines.
func (c *cloud) watchLines(path string) <-chan string {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.srv.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("watch %s: %d", path, resp.StatusCode)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 8<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	c.t.Cleanup(func() { resp.Body.Close() })
	return lines
}

// next returns the type and metadata.name of the next event, or fails after a while.
func next(t *testing.T, lines <-chan string) (typ, name string) {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("the watch ended")
		}
		var ev struct {
			Type   string
			Object struct{ Metadata struct{ Name string } }
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("event %q: %v", l, err)
		}
		return ev.Type, ev.Object.Metadata.Name
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	return "", ""
}

func rvOf(t *testing.T, obj string) string {
	t.Helper()
	var o struct {
		Metadata struct{ ResourceVersion string }
	}
	if err := json.Unmarshal([]byte(obj), &o); err != nil || o.Metadata.ResourceVersion == "" {
		t.Fatalf("no resourceVersion in %s (%v)", obj, err)
	}
	return o.Metadata.ResourceVersion
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestSecretStringData: a Secret's stringData is folded into data (base64, winning over data
// for the same key) on create, update and patch, and is not stored; other fields are kept.
// Before, stringData was stored as it came and data lacked the keys.
func TestSecretStringData(t *testing.T) {
	c := newCloud(t, 1000)
	out := c.must(http.MethodPost, secretsPath, `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","labels":{"a":"b"}},"type":"Opaque",
		"data":{"user":"`+b64("old")+`","keep":"`+b64("k")+`"},"stringData":{"user":"admin","password":"hunter2"},"x-extra":1}`)
	check := func(what, out string, want map[string]string) {
		t.Helper()
		var s map[string]any
		json.Unmarshal([]byte(out), &s)
		if _, ok := s["stringData"]; ok {
			t.Errorf("%s: stringData was kept: %s", what, out)
		}
		data, _ := s["data"].(map[string]any)
		for k, v := range want {
			if data[k] != b64(v) {
				t.Errorf("%s: data.%s = %v, want %q (base64 of %q): %s", what, k, data[k], b64(v), v, out)
			}
		}
		if len(data) != len(want) {
			t.Errorf("%s: data has %d keys, want %d: %s", what, len(data), len(want), out)
		}
		if s["type"] != "Opaque" || s["x-extra"] == nil || !strings.Contains(out, `"labels":{"a":"b"}`) {
			t.Errorf("%s: other fields were not kept: %s", what, out)
		}
	}
	check("create", out, map[string]string{"user": "admin", "password": "hunter2", "keep": "k"})
	check("read after create", c.must(http.MethodGet, secretsPath+"/s", ""), map[string]string{"user": "admin", "password": "hunter2", "keep": "k"})

	out = c.must(http.MethodPut, secretsPath+"/s", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","labels":{"a":"b"}},"type":"Opaque","x-extra":1,
		"stringData":{"token":"t1"}}`)
	check("update", out, map[string]string{"token": "t1"})

	out = c.must(http.MethodPatch, secretsPath+"/s", `{"stringData":{"token":"t2","more":"m"}}`)
	check("merge patch", out, map[string]string{"token": "t2", "more": "m"})

	code, out := c.do(http.MethodPatch, secretsPath+"/s", "application/json-patch+json", `[{"op":"add","path":"/stringData","value":{"jp":"j"}}]`)
	if code != http.StatusOK {
		t.Fatalf("json patch: %d %s", code, out)
	}
	check("json patch", out, map[string]string{"token": "t2", "more": "m", "jp": "j"})

	code, out = c.do(http.MethodPatch, secretsPath+"/s", "application/strategic-merge-patch+json", `{"stringData":{"sp":"s"}}`)
	if code != http.StatusOK {
		t.Fatalf("strategic merge patch: %d %s", code, out)
	}
	check("strategic merge patch", out, map[string]string{"token": "t2", "more": "m", "jp": "j", "sp": "s"})

	for _, bad := range []string{`{"stringData":"x"}`, `{"stringData":{"k":5}}`} {
		if code, out := c.do(http.MethodPatch, secretsPath+"/s", "application/merge-patch+json", bad); code != http.StatusBadRequest {
			t.Errorf("patch %s: %d %s, want 400", bad, code, out)
		}
	}
}

// TestNoOpWritesKeepTheVersion: a write whose result is the stored object (an identical PUT,
// a label that is already there, an empty merge patch) answers 200 with the stored object and
// its resourceVersion, and writes nothing: a watcher sees no event. Before, each moved the
// version and sent a MODIFIED.
func TestNoOpWritesKeepTheVersion(t *testing.T) {
	c := newCloud(t, 1000)
	created := c.must(http.MethodPost, cmsPath, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1","labels":{"env":"prod"}},"data":{"a":"1"}}`)
	rv := rvOf(t, created)
	events := c.watchLines(cmsPath + "?watch=true&resourceVersion=" + rv)

	writes := []struct{ name, method, ct, body string }{
		{"identical PUT", http.MethodPut, "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1","labels":{"env":"prod"}},"data":{"a":"1"}}`},
		{"identical PUT with the version", http.MethodPut, "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1","resourceVersion":"` + rv + `","labels":{"env":"prod"}},"data":{"a":"1"}}`},
		{"label already set", http.MethodPatch, "application/merge-patch+json", `{"metadata":{"labels":{"env":"prod"}}}`},
		{"strategic label already set", http.MethodPatch, "application/strategic-merge-patch+json", `{"metadata":{"labels":{"env":"prod"}}}`},
		{"empty merge patch", http.MethodPatch, "application/merge-patch+json", `{}`},
		{"empty JSON patch", http.MethodPatch, "application/json-patch+json", `[]`},
	}
	for _, w := range writes {
		code, out := c.do(w.method, cmsPath+"/c1", w.ct, w.body)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", w.name, code, out)
		}
		if got := rvOf(t, out); got != rv {
			t.Errorf("%s: resourceVersion %s, want %s (unchanged)", w.name, got, rv)
		}
		if out != created {
			t.Errorf("%s: answered\n%s\nwant the stored object\n%s", w.name, out, created)
		}
	}
	// A real change is written, and it is the first event the watcher gets.
	changed := c.must(http.MethodPatch, cmsPath+"/c1", `{"data":{"a":"2"}}`)
	if rvOf(t, changed) == rv {
		t.Fatal("a change kept the version")
	}
	if typ, name := next(t, events); typ != "MODIFIED" || name != "c1" {
		t.Fatalf("first event %s %s", typ, name)
	}
	var got struct {
		Metadata struct{ ResourceVersion string }
	}
	json.Unmarshal([]byte(c.must(http.MethodGet, cmsPath+"/c1", "")), &got)
	if got.Metadata.ResourceVersion != rvOf(t, changed) {
		t.Fatalf("read %s after the change at %s", got.Metadata.ResourceVersion, rvOf(t, changed))
	}
	select {
	case l := <-events:
		t.Fatalf("another event: %s", l)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestPatchOverTheLimitIs413: a patch whose result is larger than the object limit is a 413
// (RequestEntityTooLarge) like an oversize body, whatever the patch type. Before, a 400.
func TestPatchOverTheLimitIs413(t *testing.T) {
	c := newCloud(t, 1000)
	c.must(http.MethodPost, cmsPath, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"a":"`+strings.Repeat("a", 2<<20)+`"}}`)
	half := strings.Repeat("b", 1<<20+512<<10)
	for _, tc := range []struct{ ct, body string }{
		{"application/merge-patch+json", `{"data":{"b":"` + half + `"}}`},
		{"application/strategic-merge-patch+json", `{"data":{"b":"` + half + `"}}`},
		{"application/json-patch+json", `[{"op":"add","path":"/data/b","value":"` + half + `"}]`},
	} {
		code, out := c.do(http.MethodPatch, cmsPath+"/big", tc.ct, tc.body)
		if code != http.StatusRequestEntityTooLarge || !strings.Contains(out, `"reason":"RequestEntityTooLarge"`) {
			t.Errorf("%s growing the object past 3 MiB: %d %.300s, want 413", tc.ct, code, out)
		}
	}
}

// TestUnsupportedPatchTypes: server-side apply and a strategic merge patch of a KubeEdge kind
// are 415 (UnsupportedMediaType) Statuses, as Kubernetes answers them. Before, 400s.
func TestUnsupportedPatchTypes(t *testing.T) {
	c := newCloud(t, 1000)
	c.must(http.MethodPost, cmsPath, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1"}}`)
	c.must(http.MethodPost, devsPath, deviceJSON("d1", "edge-1"))
	for _, tc := range []struct{ path, ct, body string }{
		{cmsPath + "/c1?fieldManager=kubectl", "application/apply-patch+yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\ndata:\n  a: \"1\"\n"},
		{devsPath + "/d1", "application/strategic-merge-patch+json", `{"metadata":{"labels":{"a":"b"}}}`},
	} {
		code, out := c.do(http.MethodPatch, tc.path, tc.ct, tc.body)
		if code != http.StatusUnsupportedMediaType || !strings.Contains(out, `"kind":"Status"`) || !strings.Contains(out, `"reason":"UnsupportedMediaType"`) {
			t.Errorf("%s to %s: %d %s, want a 415 Status", tc.ct, tc.path, code, out)
		}
	}
}

// TestFieldSelectorsOnObjectFields: Pods select by status.phase and Secrets by type, in lists
// (whole and in pages) and watches, where a Pod leaving the selection is a DELETED and one
// entering it an ADDED. Before, both were "field label not supported" (400).
func TestFieldSelectorsOnObjectFields(t *testing.T) {
	c := newCloud(t, 1000)
	for _, p := range []struct{ name, node, phase string }{{"p1", "edge-1", ""}, {"p2", "edge-1", "Running"}, {"p3", "edge-2", "Pending"}, {"p4", "edge-1", "Pending"}, {"p5", "edge-1", "Failed"}} {
		c.must(http.MethodPost, podsPath, podJSON(p.name, p.node))
		if p.phase != "" {
			c.must(http.MethodPatch, podsPath+"/"+p.name+"/status", `{"status":{"phase":"`+p.phase+`"}}`)
		}
	}
	for _, s := range []struct{ name, typ string }{{"s1", "Opaque"}, {"s2", "kubernetes.io/tls"}, {"s3", ""}} {
		typ := ""
		if s.typ != "" {
			typ = `,"type":"` + s.typ + `"`
		}
		c.must(http.MethodPost, secretsPath, `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"`+s.name+`"}`+typ+`}`)
	}
	names := func(path string) string {
		t.Helper()
		var got []string
		for cont := ""; ; {
			var l struct {
				Metadata struct{ Continue string }
				Items    []struct{ Metadata struct{ Name string } }
			}
			p := path
			if cont != "" {
				p += "&continue=" + cont
			}
			if err := json.Unmarshal([]byte(c.must(http.MethodGet, p, "")), &l); err != nil {
				t.Fatal(err)
			}
			for _, it := range l.Items {
				got = append(got, it.Metadata.Name)
			}
			if cont = l.Metadata.Continue; cont == "" {
				return strings.Join(got, ",")
			}
			got = append(got, "|")
		}
	}
	for _, tc := range []struct{ path, want string }{
		{podsPath + "?fieldSelector=status.phase%3DPending", "p1,p3,p4"}, // no phase is Pending, as kubectl shows it
		{podsPath + "?fieldSelector=status.phase%3DPending,spec.nodeName%3Dedge-1", "p1,p4"},
		{podsPath + "?fieldSelector=status.phase!%3DPending", "p2,p5"},
		{podsPath + "?fieldSelector=status.phase%3DPending&limit=2", "p1,p3,|,p4"},
		{podsPath + "?fieldSelector=status.phase%3DPending&limit=1", "p1,|,p3,|,p4"},
		{podsPath + "?fieldSelector=status.phase%3DPending&limit=3", "p1,p3,p4"},
		{"/api/v1/pods?fieldSelector=status.phase%3DRunning", "p2"},
		{secretsPath + "?fieldSelector=type%3DOpaque", "s1,s3"}, // no type is Opaque
		{secretsPath + "?fieldSelector=type%3Dkubernetes.io/tls", "s2"},
		{secretsPath + "?fieldSelector=type%3DOpaque,metadata.name%3Ds3", "s3"},
	} {
		if got := names(tc.path); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.path, got, tc.want)
		}
	}
	for _, bad := range []string{podsPath + "?fieldSelector=status.podIP%3Dx", secretsPath + "?fieldSelector=status.phase%3DPending", cmsPath + "?fieldSelector=type%3DOpaque"} {
		if code, out := c.do(http.MethodGet, bad, "", ""); code != http.StatusBadRequest || !strings.Contains(out, "field label not supported") {
			t.Errorf("%s: %d %s, want 400", bad, code, out)
		}
	}

	// Watches, from now and from the current state.
	var l struct {
		Metadata struct{ ResourceVersion string }
	}
	json.Unmarshal([]byte(c.must(http.MethodGet, podsPath, "")), &l)
	pending := c.watchLines(podsPath + "?watch=true&fieldSelector=status.phase%3DPending&resourceVersion=" + l.Metadata.ResourceVersion)
	running := c.watchLines(podsPath + "?watch=true&fieldSelector=status.phase%3DRunning")
	if typ, name := next(t, running); typ != "ADDED" || name != "p2" {
		t.Fatalf("initial event of a status.phase=Running watch: %s %s", typ, name)
	}
	c.must(http.MethodPatch, podsPath+"/p4/status", `{"status":{"phase":"Running"}}`)
	if typ, name := next(t, pending); typ != "DELETED" || name != "p4" {
		t.Errorf("p4 left Pending: %s %s, want DELETED p4", typ, name)
	}
	if typ, name := next(t, running); typ != "ADDED" || name != "p4" {
		t.Errorf("p4 became Running: %s %s, want ADDED p4", typ, name)
	}
	c.must(http.MethodPatch, podsPath+"/p5/status", `{"status":{"phase":"Succeeded"}}`) // in neither selection
	c.must(http.MethodPatch, podsPath+"/p3", `{"metadata":{"labels":{"x":"y"}}}`)
	if typ, name := next(t, pending); typ != "MODIFIED" || name != "p3" {
		t.Errorf("p3 changed, still Pending: %s %s, want MODIFIED p3", typ, name)
	}
	c.must(http.MethodDelete, podsPath+"/p2", "")
	if typ, name := next(t, running); typ != "DELETED" || name != "p2" {
		t.Errorf("p2 deleted: %s %s, want DELETED p2", typ, name)
	}
	c.must(http.MethodPost, podsPath, podJSON("p6", "edge-1"))
	if typ, name := next(t, pending); typ != "ADDED" || name != "p6" {
		t.Errorf("p6 created: %s %s, want ADDED p6", typ, name)
	}
}

// TestDeviceDesiredValuesMatchTheModel: a Device's desired values must be of the types its
// DeviceModel gives the properties, and its property names twin keys, or the edge refuses its
// whole desired state; the API says so with a 422 naming the property. A Device whose model
// does not exist yet is accepted. Before, all were accepted.
func TestDeviceDesiredValuesMatchTheModel(t *testing.T) {
	c := newCloud(t, 1000)
	device := func(name, model string, props ...string) string {
		return `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":"` + name + `","namespace":"ns"},
			"spec":{"nodeName":"edge-1","deviceModelRef":{"name":"` + model + `"},"properties":[` + strings.Join(props, ",") + `]}}`
	}
	prop := func(name, value string) string {
		return `{"name":"` + name + `","collectCycle":10000,"reportToCloud":true,"desired":{"value":"` + value + `","metadata":{"timestamp":"1700000000000"}}}`
	}
	// Accepted while the model does not exist: the edge waits for it.
	c.must(http.MethodPost, devsPath, device("early", "thermo", prop("power", "maybe")))
	c.must(http.MethodPost, modelsPath, `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"thermo","namespace":"ns"},
		"spec":{"protocol":"modbus","properties":[
			{"name":"temperature","type":"INT","accessMode":"ReadWrite","minimum":"1","maximum":"100"},
			{"name":"ratio","type":"FLOAT","accessMode":"ReadWrite"},
			{"name":"power","type":"BOOLEAN","accessMode":"ReadWrite"},
			{"name":"label","type":"STRING","accessMode":"ReadWrite"},
			{"name":"blob","type":"BYTES","accessMode":"ReadOnly"}]}}`)

	c.must(http.MethodPost, devsPath, device("good", "thermo", prop("temperature", "30"), prop("ratio", "0.5"), prop("power", "true"),
		prop("label", "anything"), prop("blob", "AAEC"), prop("unmodelled", "free text"), prop("power", ""), `{"name":"nodesired"}`))
	for _, tc := range []struct {
		name, body string
		says       []string
	}{
		{"boolean", device("bad1", "thermo", prop("temperature", "30"), prop("power", "maybe")),
			[]string{`spec.properties[1].desired.value`, `maybe`, `property \"power\"`, "boolean"}},
		{"int", device("bad2", "thermo", prop("temperature", "abc")),
			[]string{`spec.properties[0].desired.value`, `abc`, `property \"temperature\"`, "int"}},
		{"float", device("bad3", "thermo", prop("ratio", "half")),
			[]string{`spec.properties[0].desired.value`, `property \"ratio\"`, "float"}},
		{"name", device("bad4", "thermo", prop("bad name", "1")),
			[]string{`spec.properties[0].name`, `bad name`, "twin property name"}},
	} {
		code, out := c.do(http.MethodPost, devsPath, "application/json", tc.body)
		ok := code == http.StatusUnprocessableEntity && strings.Contains(out, `"reason":"Invalid"`) && strings.Contains(out, `"kind":"Status"`)
		for _, s := range tc.says {
			ok = ok && strings.Contains(out, s)
		}
		if !ok {
			t.Errorf("%s: %d %s, want 422 saying %q", tc.name, code, out, tc.says)
		}
	}
	// Updates and patches too; a refused one changes nothing.
	before := c.must(http.MethodGet, devsPath+"/good", "")
	code, out := c.do(http.MethodPatch, devsPath+"/good", "application/json-patch+json", `[{"op":"replace","path":"/spec/properties/0/desired/value","value":"abc"}]`)
	if code != http.StatusUnprocessableEntity || !strings.Contains(out, `property \"temperature\"`) {
		t.Errorf("JSON patch to a bad INT: %d %s, want 422", code, out)
	}
	code, out = c.do(http.MethodPut, devsPath+"/good", "application/json", device("good", "thermo", prop("power", "yes")))
	if code != http.StatusUnprocessableEntity || !strings.Contains(out, `property \"power\"`) {
		t.Errorf("PUT with a bad BOOLEAN: %d %s, want 422", code, out)
	}
	if after := c.must(http.MethodGet, devsPath+"/good", ""); after != before {
		t.Fatalf("a refused write changed the device:\n%s\n%s", before, after)
	}
	c.must(http.MethodPatch, devsPath+"/good", `{"spec":{"properties":[{"name":"temperature","desired":{"value":"31"}}]}}`)
	// The Device made before its model keeps taking edits that leave its spec alone.
	c.must(http.MethodPatch, devsPath+"/early", `{"metadata":{"labels":{"a":"b"}}}`)
	if code, out := c.do(http.MethodPatch, devsPath+"/early", "application/merge-patch+json", `{"spec":{"nodeName":"edge-2"}}`); code != http.StatusUnprocessableEntity {
		t.Errorf("a spec change of a Device whose desired value its model refuses: %d %s, want 422", code, out)
	}
}

// TestWrongTypesSayWhichField: a field of the wrong JSON type is a 400 naming the field and
// the type it must have, not the server's Go types. Before, the message quoted a Go struct, and
// metadata that was not an object was taken for none (422, name required).
func TestWrongTypesSayWhichField(t *testing.T) {
	c := newCloud(t, 1000)
	for _, tc := range []struct{ name, path, body, says string }{
		{"device spec", devsPath, `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":"d"},"spec":"str"}`, "spec: must be an object"},
		{"device desired value", devsPath, `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":"d"},"spec":{"deviceModelRef":{"name":"m"},"properties":[{"name":"p","desired":{"value":5}}]}}`, "spec.properties.desired.value: must be a string"},
		{"kind", cmsPath, `{"apiVersion":"v1","kind":5,"metadata":{"name":"c"}}`, "kind: must be a string"},
		{"configmap metadata", cmsPath, `{"apiVersion":"v1","kind":"ConfigMap","metadata":"str"}`, "metadata: must be an object"},
		{"configmap data", cmsPath, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":5}`, "data: must be an object"},
		{"labels", cmsPath, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","labels":["a"]}}`, "metadata.labels: must be an object"},
		{"pod port", podsPath, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"x","ports":[{"containerPort":"80"}]}]}}`, "spec.containers.ports.containerPort: must be an integer"},
	} {
		code, out := c.do(http.MethodPost, tc.path, "application/json", tc.body)
		if code != http.StatusBadRequest || !strings.Contains(out, tc.says) || strings.Contains(out, "Go struct") || strings.Contains(out, "Go value") {
			t.Errorf("%s: %d %s, want 400 saying %q", tc.name, code, out, tc.says)
		}
	}
	c.must(http.MethodPost, cmsPath, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}`)
	if code, out := c.do(http.MethodPatch, cmsPath+"/c", "application/merge-patch+json", `{"metadata":"str"}`); code != http.StatusBadRequest || !strings.Contains(out, "metadata: must be an object") {
		t.Errorf("patch making metadata a string: %d %s, want 400", code, out)
	}
}

// TestImmutableFieldsRefused: as Kubernetes answers with 422, an update may not change the
// uid (it was taken silently from the stored object), a Secret's type, or the data of a
// ConfigMap or Secret marked immutable, nor lift that mark; other fields of such an object may
// change.
func TestImmutableFieldsRefused(t *testing.T) {
	c := newCloud(t, 1000)
	cms := "/api/v1/namespaces/ns/configmaps"
	secrets := "/api/v1/namespaces/ns/secrets"
	c.must(http.MethodPost, cms, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"im"},"immutable":true,"data":{"a":"1"}}`)
	c.must(http.MethodPost, secrets, `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"type":"Opaque","data":{"a":"MQ=="}}`)
	c.must(http.MethodPost, cms, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"plain"},"data":{"a":"1"}}`)
	for _, tc := range []struct{ what, path, ct, body string }{
		{"immutable data", cms + "/im", "application/merge-patch+json", `{"data":{"a":"2"}}`},
		{"immutable lifted", cms + "/im", "application/merge-patch+json", `{"immutable":false}`},
		{"secret type", secrets + "/s", "application/merge-patch+json", `{"type":"kubernetes.io/tls"}`},
		{"uid", cms + "/plain", "application/merge-patch+json", `{"metadata":{"uid":"another"}}`},
	} {
		code, body := c.do(http.MethodPatch, tc.path, tc.ct, tc.body)
		if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), "immutable") {
			t.Errorf("%s: %d %s, want 422", tc.what, code, body)
		}
	}
	// A Secret's type, none being Opaque: a PUT that leaves out a TLS Secret's type, and a
	// patch giving one to a Secret made without.
	c.must(http.MethodPost, secrets, `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"tls"},"type":"kubernetes.io/tls","data":{"tls.crt":"","tls.key":""}}`)
	c.must(http.MethodPost, secrets, `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"untyped"}}`)
	if code, body := c.do(http.MethodPut, secrets+"/tls", "application/json", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"tls"},"data":{"tls.crt":"","tls.key":""}}`); code != http.StatusUnprocessableEntity {
		t.Errorf("a PUT without the TLS Secret's type: %d %s, want 422", code, body)
	}
	if code, body := c.do(http.MethodPatch, secrets+"/untyped", "application/merge-patch+json", `{"type":"kubernetes.io/tls"}`); code != http.StatusUnprocessableEntity {
		t.Errorf("a type given to a Secret made without: %d %s, want 422", code, body)
	}
	if code, body := c.do(http.MethodPatch, secrets+"/untyped", "application/merge-patch+json", `{"type":"Opaque"}`); code != http.StatusOK {
		t.Errorf("Opaque given to a Secret made without a type: %d %s, want 200", code, body)
	}
	if code, body := c.do(http.MethodPatch, cms+"/im", "application/merge-patch+json", `{"metadata":{"labels":{"x":"1"}}}`); code != http.StatusOK {
		t.Errorf("a label on an immutable ConfigMap: %d %s", code, body)
	}
	if code, body := c.do(http.MethodPatch, cms+"/plain", "application/merge-patch+json", `{"data":{"a":"2"}}`); code != http.StatusOK {
		t.Errorf("the data of a mutable ConfigMap: %d %s", code, body)
	}
}

// TestPatchAndSubresourceAnswers: the answers Kubernetes gives, where they differed: a JSON patch
// whose operations do not apply (a failed "test", a missing path) is 422 and a malformed one 400;
// the status of a kind without a status subresource is 404 for every verb, and writes nothing.
// Before, the first was 400 and the status write a 200 that changed nothing.
func TestPatchAndSubresourceAnswers(t *testing.T) {
	c := newCloud(t, 1000)
	before := c.must(http.MethodPost, cmsPath, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1"},"data":{"k":"v"}}`)
	const jp = "application/json-patch+json"
	for _, tc := range []struct {
		body string
		code int
		says string
	}{
		{`[{"op":"test","path":"/data/k","value":"other"},{"op":"replace","path":"/data/k","value":"w"}]`, 422, `ConfigMap \"c1\" is invalid`},
		{`[{"op":"remove","path":"/data/missing"}]`, 422, `is invalid`},
		{`[{"op":"replace","path":"/data/k"`, 400, `BadRequest`},
	} {
		code, out := c.do(http.MethodPatch, cmsPath+"/c1", jp, tc.body)
		if code != tc.code || !strings.Contains(out, tc.says) {
			t.Errorf("JSON patch %s: %d %s, want %d saying %s", tc.body, code, out, tc.code, tc.says)
		}
	}
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPatch} {
		code, out := c.do(m, cmsPath+"/c1/status", "application/merge-patch+json", `{"data":{"k":"status"}}`)
		if m == http.MethodPut {
			code, out = c.do(m, cmsPath+"/c1/status", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1"},"data":{"k":"status"}}`)
		}
		if code != 404 || !strings.Contains(out, `"reason":"NotFound"`) {
			t.Errorf("%s configmaps/c1/status: %d %s, want 404", m, code, out)
		}
	}
	if after := c.must(http.MethodGet, cmsPath+"/c1", ""); rvOf(t, after) != rvOf(t, before) {
		t.Errorf("the refused writes changed the object: %s", after)
	}
	c.must(http.MethodPost, devsPath, deviceJSON("d1", "edge-1"))
	c.must(http.MethodGet, devsPath+"/d1/status", "")
}

// TestCreateSetsTheStartingStatus: as in Kubernetes, a created Pod starts Pending and a created
// Service or Device with no status, whatever status the create sent; a Node keeps its own.
// Before, a create stored the status it was given.
func TestCreateSetsTheStartingStatus(t *testing.T) {
	c := newCloud(t, 1000)
	withStatus := func(obj, status string) string {
		return strings.TrimSuffix(strings.TrimSpace(obj), "}") + `,"status":` + status + `}`
	}
	statusOf := func(obj string) string {
		var o struct{ Status json.RawMessage }
		if err := json.Unmarshal([]byte(obj), &o); err != nil {
			t.Fatal(err)
		}
		return string(o.Status)
	}
	for _, tc := range []struct{ path, obj, want string }{
		{podsPath, withStatus(podJSON("p", "edge-1"), `{"phase":"Running","podIP":"10.0.0.9"}`), `{"phase":"Pending"}`},
		{devsPath, withStatus(deviceJSON("d", "edge-1"), `{"state":"online","twins":[{"propertyName":"t","reported":{"value":"1"}}]}`), ``},
		{"/api/v1/namespaces/ns/services", withStatus(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"ports":[{"port":80}]}}`, `{"loadBalancer":{"ingress":[{"ip":"1.2.3.4"}]}}`), ``},
		{nodesPath, withStatus(`{"apiVersion":"v1","kind":"Node","metadata":{"name":"n"}}`, `{"nodeInfo":{"kubeletVersion":"v1"}}`), `{"nodeInfo":{"kubeletVersion":"v1"}}`},
	} {
		if got := statusOf(c.must(http.MethodPost, tc.path, tc.obj)); got != tc.want {
			t.Errorf("created at %s with a status: stored status %s, want %q", tc.path, got, tc.want)
		}
	}
}

// TestFieldValidationOnPatches: as in Kubernetes, fieldValidation applies to the object a patch
// makes: Strict refuses an unknown field with 400 and writes nothing, Warn (the default) answers
// with a warning, Ignore says nothing. Before, patches were not checked.
func TestFieldValidationOnPatches(t *testing.T) {
	c := newCloud(t, 1000)
	before := c.must(http.MethodPost, cmsPath, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1"},"data":{"k":"v"}}`)
	patch := func(query, ct, body string) (int, string, []string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPatch, c.srv.URL+cmsPath+"/c1"+query, strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header.Values("Warning")
	}
	const mp, sp, jp = "application/merge-patch+json", "application/strategic-merge-patch+json", "application/json-patch+json"
	for _, tc := range []struct{ ct, body string }{
		{mp, `{"dta":{"k":"w"}}`},
		{sp, `{"dta":{"k":"w"}}`},
		{jp, `[{"op":"add","path":"/dta","value":{"k":"w"}}]`},
	} {
		code, out, _ := patch("?fieldValidation=Strict", tc.ct, tc.body)
		if code != 400 || !strings.Contains(out, `strict decoding error: unknown field \"dta\"`) {
			t.Errorf("Strict %s %s: %d %s, want 400 naming dta", tc.ct, tc.body, code, out)
		}
	}
	if after := c.must(http.MethodGet, cmsPath+"/c1", ""); rvOf(t, after) != rvOf(t, before) {
		t.Fatalf("a refused patch was written: %s", after)
	}
	// A strategic patch's directives are not unknown fields.
	if code, out, _ := patch("?fieldValidation=Strict", sp, `{"data":{"$patch":"replace","k":"x"}}`); code != 200 {
		t.Fatalf("Strict strategic patch with a directive: %d %s", code, out)
	}
	if code, _, warnings := patch("", mp, `{"dta":{"k":"w"}}`); code != 200 || len(warnings) != 1 || !strings.Contains(warnings[0], `unknown field \"dta\"`) {
		t.Fatalf("patch with the default Warn: %d, warnings %q", code, warnings)
	}
	if code, _, warnings := patch("?fieldValidation=Ignore", mp, `{"data":{"k":"y"}}`); code != 200 || len(warnings) != 0 {
		t.Fatalf("patch with Ignore: %d, warnings %q", code, warnings)
	}
	// The unknown field is stored now: a Strict patch that does not bring it (kubectl's label,
	// apply, edit) is not refused for it, and not warned about it either.
	if code, out, _ := patch("?fieldValidation=Strict", sp, `{"metadata":{"labels":{"a":"b"}}}`); code != 200 {
		t.Fatalf("Strict patch of an object that holds an unknown field: %d %s", code, out)
	}
	if code, _, warnings := patch("", mp, `{"data":{"k":"z"}}`); code != 200 || len(warnings) != 0 {
		t.Fatalf("Warn patch of an object that holds an unknown field: %d, warnings %q", code, warnings)
	}
	// A field the patch names twice is gone from the object it makes; it is refused all the same.
	if code, out, _ := patch("?fieldValidation=Strict", mp, `{"data":{"k":"a","k":"b"}}`); code != 400 || !strings.Contains(out, `duplicate field \"data.k\"`) {
		t.Fatalf("Strict patch naming a field twice: %d %s", code, out)
	}
}
