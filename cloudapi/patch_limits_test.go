package cloudapi

import (
	"context"
	"encoding/json"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/protocol"
)

// A JSON patch of a few hundred bytes doubles a ConfigMap's data with every "copy" op: the
// stored object is far larger than MaxBodyBytes (3 MiB), and the server built every
// intermediate copy in memory. 40 ops instead of 12 would ask for ~1 TiB.
func TestJSONPatchCannotAmplify(t *testing.T) {
	c := newCloud(t, 1000)
	seed := strings.Repeat("x", 4096)
	c.must(http.MethodPost, "/api/v1/namespaces/ns/configmaps",
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"},"data":{"a":"`+seed+`"}}`)
	// data.a -> data.b, then copy the whole data map into itself under a new key, n times.
	ops := []string{`{"op":"copy","from":"/data/a","path":"/data/b"}`}
	// Annotations hold a map: copy /data into /metadata/annotations/... would fail validation;
	// instead grow a nested field outside validated metadata.
	ops = append(ops, `{"op":"add","path":"/blob","value":{}}`)
	ops = append(ops, `{"op":"copy","from":"/data","path":"/blob/x0"}`)
	for i := 1; i <= 12; i++ {
		ops = append(ops, `{"op":"copy","from":"/blob","path":"/blob/y`+strconv.Itoa(i)+`"}`)
	}
	patch := "[" + strings.Join(ops, ",") + "]"
	t.Logf("patch body: %d bytes", len(patch))
	code, out := c.do(http.MethodPatch, "/api/v1/namespaces/ns/configmaps/cfg", "application/json-patch+json", patch)
	t.Logf("patch answer: %d, %d bytes", code, len(out))
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a %d-byte patch that doubles the object 12 times: %d (%d bytes), want 413", len(patch), code, len(out))
	}
}

// The same through the edge's write path: a node may JSON-patch its own Node's status, and the
// copy ops grow it past any body limit.
func TestJSONPatchFromAnEdgeCannotAmplify(t *testing.T) {
	c := newCloud(t, 1000)
	c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	ops := []string{`{"op":"add","path":"/status","value":{"nodeInfo":{"kernelVersion":"` + strings.Repeat("k", 4096) + `"}}}`,
		`{"op":"add","path":"/status/capacity","value":{}}`}
	for i := 1; i <= 14; i++ {
		ops = append(ops, `{"op":"copy","from":"/status/nodeInfo","path":"/status/nodeInfo/y`+strconv.Itoa(i)+`"}`)
	}
	patch := "[" + strings.Join(ops, ",") + "]"
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	resp := c.fwd.Forward(context.Background(), "edge-1", &protocol.Request{Method: http.MethodPatch,
		Path: nodesPath + "/edge-1/status", ContentType: "application/json-patch+json", Body: []byte(patch)})
	runtime.ReadMemStats(&after)
	t.Logf("patch body %d bytes -> code %d, answer %d bytes; took %s, allocated %d MiB", len(patch), resp.Code, len(resp.Body), time.Since(start), (after.TotalAlloc-before.TotalAlloc)>>20)
	if after.TotalAlloc-before.TotalAlloc > 1<<30 {
		t.Fatalf("a node's %d-byte status patch made the cloud allocate %d MiB", len(patch), (after.TotalAlloc-before.TotalAlloc)>>20)
	}
	if resp.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a node's %d-byte status patch that doubles its status 14 times: %d (%d bytes), want 413", len(patch), resp.Code, len(resp.Body))
	}
}

// A PUT whose metadata.resourceVersion is a JSON number is taken as unconditional: a stale
// version is not refused (Kubernetes answers 400: resourceVersion is a string).
func TestNumericResourceVersionIsRefused(t *testing.T) {
	c := newCloud(t, 1000)
	out := c.must(http.MethodPost, "/api/v1/namespaces/ns/configmaps", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"},"data":{"a":"1"}}`)
	var got struct {
		Metadata struct{ ResourceVersion string }
	}
	json.Unmarshal([]byte(out), &got)
	stale := got.Metadata.ResourceVersion
	c.must(http.MethodPatch, "/api/v1/namespaces/ns/configmaps/cfg", `{"data":{"a":"2"}}`)
	code, body := c.do(http.MethodPut, "/api/v1/namespaces/ns/configmaps/cfg", "application/json",
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg","namespace":"ns","resourceVersion":`+stale+`},"data":{"a":"3"}}`)
	if code != http.StatusBadRequest {
		t.Fatalf("PUT with the stale resourceVersion %s as a JSON number: %d %s, want 400", stale, code, body)
	}
}

// A JSON patch whose "test" has no value made json-patch dereference nil. Forwarded by an edge
// (on its own Node's status) that panic ran on the hub's goroutine and ended the process; it is
// now a 400 like any patch that cannot be applied, through the API and from an edge.
func TestJSONPatchTestWithoutValueIs400(t *testing.T) {
	c := newCloud(t, 1000)
	c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	const patch = `[{"op":"test","path":""}]`
	resp := c.fwd.Forward(context.Background(), "edge-1", &protocol.Request{Method: http.MethodPatch,
		Path: nodesPath + "/edge-1/status", ContentType: "application/json-patch+json", Body: []byte(patch)})
	if resp.Code != http.StatusBadRequest {
		t.Fatalf("forwarded: %d %s, want 400", resp.Code, resp.Body)
	}
	if code, out := c.do(http.MethodPatch, nodesPath+"/edge-1", "application/json-patch+json", patch); code != http.StatusBadRequest {
		t.Fatalf("API: %d %s, want 400", code, out)
	}
}
