package kubeapi

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"
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
	if err := CheckJSONShape([]byte(`{"a":"[[[[{{{{\"]]]","b":[{"c":[1,2,{"d":{}}]}]}`)); err != nil {
		t.Fatalf("an ordinary body (brackets inside strings): %v", err)
	}
}
