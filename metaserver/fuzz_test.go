package metaserver

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// FuzzRequest sends arbitrary methods, paths, queries and bodies to the metaserver over a real
// edge store holding a few objects. Whatever arrives, the process survives, the answer is an
// object, a list, a watch stream or a metav1.Status with a matching code, and the store is
// untouched.
func FuzzRequest(f *testing.F) {
	reg := resource.New()
	st, err := edgestore.Open(edgestore.DefaultConfig(filepath.Join(f.TempDir(), "edge.db")), reg, zerolog.Nop(), nil)
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	st.BeginSession(ctx, "c1")
	raw, _ := json.Marshal(cm("a", "1"))
	done := make(chan error, 1)
	st.Apply(ctx, []protocol.Message{&protocol.ResetBegin{Seq: 1}, &protocol.Upsert{Seq: 2, Rev: 5, Key: resource.Key{Resource: "configmaps", Namespace: "ns", Name: "a"}, Object: raw}, &protocol.ResetEnd{Seq: 3, Through: 5}}, func(err error) { done <- err })
	if err := <-done; err != nil {
		f.Fatal(err)
	}
	before, _ := st.Keys()
	h, err := kubeapi.New(kubeapi.DefaultConfig(), reg, New(st, reg, 100, 0, 100, &fakeCloud{offline: true}), zerolog.Nop(), nil, "fuzz")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []struct{ method, target, ct, body string }{
		{"GET", "/api/v1/namespaces/ns/configmaps?labelSelector=a%3Db&limit=1", "", ""},
		{"GET", "/api/v1/namespaces/ns/configmaps/a", "", ""},
		{"GET", "/api/v1/configmaps?watch=true&resourceVersion=1", "", ""},
		{"POST", "/api/v1/namespaces/ns/configmaps", "application/json", `{"kind":"ConfigMap"}`},
		{"PATCH", "/api/v1/namespaces/ns/configmaps/a", "application/merge-patch+json", `null`},
		{"GET", "/apis/devices.kubeedge.io/v1beta1/devices?fieldSelector=spec.nodeName%3D%3Dx", "", ""},
		{"DELETE", "/api/v1/nodes/x/status", "", "{"},
	} {
		f.Add(s.method, s.target, s.ct, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, method, target, ct string, body []byte) {
		req, err := http.NewRequest(method, "http://meta"+target, bytes.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		rctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, req.WithContext(rctx))
		if rr.Code >= 500 && rr.Code != http.StatusServiceUnavailable && rr.Code != http.StatusGatewayTimeout {
			t.Fatalf("%s %s: %d %s", method, target, rr.Code, rr.Body.String())
		}
		if rr.Code >= 400 {
			var st struct {
				Kind string
				Code int
			}
			if json.Unmarshal(rr.Body.Bytes(), &st) != nil || st.Kind != "Status" || st.Code != rr.Code {
				t.Fatalf("%s %s: %d with body %q, want a Status", method, target, rr.Code, rr.Body.String())
			}
		}
		if after, _ := st.Keys(); len(after) != len(before) {
			t.Fatalf("the store changed: %v → %v", before, after)
		}
	})
}
