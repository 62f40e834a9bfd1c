package join_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/join"
	"github.com/tetherhub/tether/pki"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func parseCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", data)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestJoinEndToEnd is SPEC §3 steps 1–3: token, join, saved identity, mutual TLS with the hub.
func TestJoinEndToEnd(t *testing.T) {
	e := newEnv(t)
	tok := e.token("edge-1", time.Hour)
	labels := map[string]string{"zone": "north", "tether.io/site": "plant-7", "empty": ""}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}

	certPEM, caPEM, err := join.Join(ctxT(t), e.url, tok, "edge-1", labels, key)
	if err != nil {
		t.Fatalf("Join: %v", err)
	}

	// The certificate: issued by our CA, for client auth, for edge-1, for our key.
	cert := parseCert(t, certPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: e.ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("certificate does not verify against the CA: %v", err)
	}
	if cert.Subject.CommonName != "node:edge-1" {
		t.Errorf("CN = %q, want node:edge-1", cert.Subject.CommonName)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("certificate is not for the node's key")
	}
	if want := time.Now().Add(90 * 24 * time.Hour); cert.NotAfter.Before(want.Add(-time.Minute)) || cert.NotAfter.After(want.Add(time.Minute)) {
		t.Errorf("NotAfter = %s, want about 90 days from now", cert.NotAfter)
	}
	if !bytes.Equal(caPEM, e.ca.CertPEM()) {
		t.Error("returned CA is not the cloud's CA")
	}

	// The cloud side: one registration, with the labels.
	regs := e.nodes.registrations()
	if len(regs) != 1 || regs[0].name != "edge-1" || !maps.Equal(regs[0].labels, labels) {
		t.Fatalf("registrations = %+v, want one for edge-1 with %v", regs, labels)
	}
	if got := e.seen(); strings.Join(got, ",") != "GET /ca.crt,POST /v1/join" {
		t.Errorf("server saw %v", got)
	}
	if e.joinCount("ok") != 1 {
		t.Errorf("ok count = %v, want 1", e.joinCount("ok"))
	}
	if logs := e.logs.String(); !strings.Contains(logs, `"token_id":"`+tok.ID+`"`) || !strings.Contains(logs, "node joined") {
		t.Errorf("the join is not logged with its token ID:\n%s", logs)
	}

	// The edge side: save, load back, and use it against a hub that requires client certificates.
	dir := filepath.Join(t.TempDir(), "edge")
	if err := pki.SaveNodeIdentity(dir, certPEM, caPEM, key); err != nil {
		t.Fatalf("SaveNodeIdentity: %v", err)
	}
	id, err := pki.LoadNodeIdentity(dir)
	if err != nil {
		t.Fatalf("LoadNodeIdentity: %v", err)
	}
	if id.Name != "edge-1" {
		t.Fatalf("identity name %q", id.Name)
	}
	hubCert, err := e.ca.IssueServer([]string{"127.0.0.1"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	hub := &http.Server{
		TLSConfig: e.ca.ServerTLSConfig(hubCert),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// The hub's rule: identity is the verified certificate's subject, nothing else.
			name, err := pki.NodeNameFromCert(r.TLS.VerifiedChains[0][0])
			if err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			io.WriteString(w, name)
		}),
	}
	hubURL := serve(t, hub)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: id.ClientTLSConfig("127.0.0.1")}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(hubURL)
	if err != nil {
		t.Fatalf("mutual TLS with the hub: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "edge-1" {
		t.Errorf("hub answered %d %q, want 200 edge-1", resp.StatusCode, body)
	}
}

func TestJoinFleetToken(t *testing.T) {
	e := newEnv(t)
	tok := e.token("", time.Hour)
	for _, name := range []string{"edge-a", "edge-b.site-1"} {
		key, _ := pki.NewKey()
		certPEM, _, err := join.Join(ctxT(t), e.url, tok, name, nil, key)
		if err != nil {
			t.Fatalf("Join %s: %v", name, err)
		}
		if got := parseCert(t, certPEM).Subject.CommonName; got != "node:"+name {
			t.Errorf("CN = %q", got)
		}
	}
	if regs := e.nodes.registrations(); len(regs) != 2 {
		t.Errorf("registrations = %+v", regs)
	}
}

func TestJoinAgainReplacesCertificate(t *testing.T) {
	// A node that lost its certificate joins again with a still-valid token; Register is
	// idempotent on the cloud side, and the node gets a fresh certificate.
	e := newEnv(t)
	tok := e.token("edge-1", time.Hour)
	key, _ := pki.NewKey()
	first, _, err := join.Join(ctxT(t), e.url, tok, "edge-1", nil, key)
	if err != nil {
		t.Fatal(err)
	}
	second, _, err := join.Join(ctxT(t), e.url, tok, "edge-1", nil, key)
	if err != nil {
		t.Fatal(err)
	}
	if parseCert(t, first).SerialNumber.Cmp(parseCert(t, second).SerialNumber) == 0 {
		t.Error("the same certificate was issued twice")
	}
}

func TestCAEndpoint(t *testing.T) {
	e := newEnv(t)
	status, body := e.do(http.MethodGet, "/ca.crt", "", nil)
	if status != http.StatusOK || !bytes.Equal(body, e.ca.CertPEM()) {
		t.Errorf("GET /ca.crt = %d %q", status, body)
	}
	if pki.CertHash(parseCert(t, body)) != e.ca.Hash() {
		t.Error("served CA does not have the CA's hash")
	}
	status, _ = e.do(http.MethodHead, "/ca.crt", "", nil)
	if status != http.StatusOK {
		t.Errorf("HEAD /ca.crt = %d", status)
	}
	status, body = e.do(http.MethodPost, "/ca.crt", "", nil)
	if status != http.StatusMethodNotAllowed || !strings.Contains(string(body), `"code":"method_not_allowed"`) {
		t.Errorf("POST /ca.crt = %d %s", status, body)
	}
}
