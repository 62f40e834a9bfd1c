package join_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/join"
	"github.com/tetherhub/tether/pki"
)

// FuzzJoinRequest sends arbitrary bodies to the join handler. Whatever arrives, the answer is a
// 4xx with a JSON error (the fuzzer holds no valid token, so never a 200), never a 5xx or a
// panic, and no node is ever registered.
func FuzzJoinRequest(f *testing.F) {
	ca, err := pki.LoadOrCreateCA(filepath.Join(f.TempDir(), "ca"), time.Now())
	if err != nil {
		f.Fatal(err)
	}
	tok, _ := pki.NewToken(ca.Hash())
	key, _ := pki.NewKey()
	csr, _ := pki.CreateCSR(key, "edge-1")
	good, _ := json.Marshal(map[string]any{"token": tok.String(), "nodeName": "edge-1", "labels": map[string]string{"a": "b"}, "csr": string(csr)})
	for _, seed := range [][]byte{good, []byte(`{}`), []byte(`null`), []byte(`[]`), []byte(`{"token":5}`), []byte(`{"nodeName":"UPPER"}`), {0xff, 0}} {
		f.Add(seed)
	}
	tokens := &fakeTokens{byID: map[string]storedToken{}}
	nodes := &fakeNodes{}
	srv, err := join.NewServer(ca, tokens, nodes, join.DefaultConfig(), zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		rr := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, join.PathJoin, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rr, req)
		if rr.Code < 400 || rr.Code >= 500 {
			t.Fatalf("status %d for %q: %s", rr.Code, body, rr.Body.String())
		}
		var e struct{ Code, Message string }
		if err := json.Unmarshal(rr.Body.Bytes(), &e); err != nil || e.Code == "" || e.Message == "" {
			t.Fatalf("error body %q is not {code, message}", rr.Body.String())
		}
		if n := len(nodes.registrations()); n != 0 {
			t.Fatalf("%d nodes registered", n)
		}
	})
}
