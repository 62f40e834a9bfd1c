package kubeapi

import (
	"bytes"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestBodyShapeBounded: a body of a million empty objects, within the size limit, is refused
// with 413 before any typed decode (it took 1.5 GB and 15 s), on create and on patch; so is
// one nested too deep. A body of an ordinary shape still passes.
func TestBodyShapeBounded(t *testing.T) {
	srv, _ := newTestServer(t, map[string][]byte{})
	many := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"ns"},"spec":{"containers":[` +
		strings.Repeat(`{},`, 1_000_000) + `{}]}}`
	deep := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"ns"},"x":` +
		strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`
	for _, c := range []struct{ name, method, path, ct, body string }{
		{"a million containers", http.MethodPost, "/api/v1/namespaces/ns/pods", "application/json", many},
		{"a million containers, patched", http.MethodPatch, "/api/v1/namespaces/ns/pods/p", "application/merge-patch+json", many},
		{"200 levels", http.MethodPost, "/api/v1/namespaces/ns/configmaps", "application/json", deep},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, bytes.NewReader([]byte(c.body)))
		req.Header.Set("Content-Type", c.ct)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: %d, want 413", c.name, resp.StatusCode)
		}
		t.Logf("%s: %d in %s", c.name, resp.StatusCode, time.Since(start))
	}
	// The same in protobuf and in YAML, refused before they are decoded (the protobuf one took
	// 3.5 GB to decode in a review, the YAML one 300 MB).
	pod := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"},
		Spec: corev1.PodSpec{Containers: make([]corev1.Container, 100_000)}}
	yamlBody := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: ns\nspec:\n  containers:\n" + strings.Repeat("  - {}\n", 200_000)
	for _, c := range []struct {
		name, ct string
		body     []byte
	}{
		{"protobuf", mediaProtobuf, protobufBody(t, pod)},
		{"yaml", "application/yaml", []byte(yamlBody)},
	} {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/namespaces/ns/pods", bytes.NewReader(c.body))
		req.Header.Set("Content-Type", c.ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		runtime.ReadMemStats(&m1)
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("%s, %d bytes: %d, want 413", c.name, len(c.body), resp.StatusCode)
		}
		alloc := (m1.TotalAlloc - m0.TotalAlloc) >> 20
		t.Logf("%s, %d bytes: %d, %d MB allocated in the process meanwhile", c.name, len(c.body), resp.StatusCode, alloc)
		if alloc > 40 { // decoded first, the protobuf one allocated 250 MB here, the YAML one 65 MB
			t.Errorf("%s: %d MB allocated to refuse it", c.name, alloc)
		}
	}
	// An ordinary protobuf Pod passes the check.
	small := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: metav1.ObjectMeta{Name: "q", Namespace: "ns", Labels: map[string]string{"a": "b"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i", Env: []corev1.EnvVar{{Name: "X", Value: "{[["}}}}}}
	if err := checkProtobufShape(protobufBody(t, small)); err != nil {
		t.Fatalf("an ordinary protobuf Pod: %v", err)
	}
	if err := CheckJSONShape([]byte(`{"a":"[[[[{{{{\"]]]","b":[{"c":[1,2,{"d":{}}]}]}`)); err != nil {
		t.Fatalf("an ordinary body (brackets inside strings): %v", err)
	}
}
