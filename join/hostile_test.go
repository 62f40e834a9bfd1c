package join_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhub/tether/join"
	"github.com/tetherhub/tether/pki"
)

func csrFor(t *testing.T, key crypto.Signer, cn string) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// foreignSignedCSR carries one key's public key and a signature by another: a request from
// someone who knows a node's public key but not its private key.
func foreignSignedCSR(t *testing.T, cn string) string {
	t.Helper()
	a, _ := pki.NewKey()
	b, _ := pki.NewKey()
	block, _ := pem.Decode([]byte(csrFor(t, a, cn)))
	var outer struct {
		TBS       asn1.RawValue
		Algorithm asn1.RawValue
		Signature asn1.BitString
	}
	if _, err := asn1.Unmarshal(block.Bytes, &outer); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(outer.TBS.FullBytes)
	sig, err := ecdsa.SignASN1(rand.Reader, b, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	outer.Signature = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
	der, err := asn1.Marshal(outer)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// TestServerRefuses sends hostile and broken requests straight to the server. Each must get its
// status, its code and a message that says what is wrong, and no Node may be registered.
func TestServerRefuses(t *testing.T) {
	e := newEnv(t)
	key, _ := pki.NewKey()
	valid := e.token("edge-1", time.Hour)
	expired := e.token("edge-1", -time.Minute)
	otherCA, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "other"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreignCA := valid
	foreignCA.CAHash = otherCA.Hash()
	unknown := pki.Token{CAHash: e.ca.Hash(), ID: "zzzzzz", Secret: randomSecret(t)}
	wrongSecret := valid
	wrongSecret.Secret = randomSecret(t)
	e.remember(unknown)
	e.remember(wrongSecret)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}

	// request returns a valid request body after applying change to it.
	request := func(change func(m map[string]any)) string {
		m := map[string]any{
			"token":    valid.String(),
			"nodeName": "edge-1",
			"labels":   map[string]string{"zone": "north"},
			"csr":      csrFor(t, key, "node:edge-1"),
		}
		if change != nil {
			change(m)
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	set := func(k string, v any) func(map[string]any) { return func(m map[string]any) { m[k] = v } }
	validBody := request(nil)
	big := `{"token":"` + strings.Repeat("a", 70<<10) + `"}`

	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        io.Reader
		status      int
		code        string
		msg         string
	}{
		// Tokens.
		{name: "expired token", body: strings.NewReader(request(set("token", expired.String()))), status: 401, code: "token_expired", msg: "expired"},
		{name: "unknown token", body: strings.NewReader(request(set("token", unknown.String()))), status: 401, code: "token_unknown", msg: "unknown"},
		{name: "wrong secret", body: strings.NewReader(request(set("token", wrongSecret.String()))), status: 401, code: "token_unknown", msg: "secret is wrong"},
		{name: "token bound to another node", body: strings.NewReader(request(func(m map[string]any) {
			m["nodeName"] = "edge-2"
			m["csr"] = csrFor(t, key, "node:edge-2")
		})), status: 403, code: "token_wrong_node", msg: "bound to another node"},
		{name: "token for another CA", body: strings.NewReader(request(set("token", foreignCA.String()))), status: 400, code: "ca_mismatch", msg: "another CA"},
		{name: "malformed token", body: strings.NewReader(request(set("token", "tether1.abc"))), status: 400, code: "invalid_token", msg: "4 dot-separated parts"},
		// CSRs.
		{name: "CSR with wrong CN", body: strings.NewReader(request(set("csr", csrFor(t, key, "node:edge-2")))), status: 400, code: "invalid_csr", msg: `"node:edge-2", want "node:edge-1"`},
		{name: "CSR signed by another key", body: strings.NewReader(request(set("csr", foreignSignedCSR(t, "node:edge-1")))), status: 400, code: "invalid_csr", msg: "signature does not verify"},
		{name: "weak RSA key", body: strings.NewReader(request(set("csr", csrFor(t, rsa1024, "node:edge-1")))), status: 400, code: "invalid_csr", msg: "1024 bits is too weak"},
		{name: "CSR not PEM", body: strings.NewReader(request(set("csr", "hello"))), status: 400, code: "invalid_csr", msg: "not PEM"},
		// Body and JSON.
		{name: "oversize body", body: strings.NewReader(big), status: 413, code: "body_too_large", msg: "larger than 65536 bytes"},
		{name: "oversize body without length", body: struct{ io.Reader }{strings.NewReader(big)}, status: 413, code: "body_too_large", msg: "larger than 65536 bytes"},
		{name: "garbage JSON", body: strings.NewReader(`{"token": tether1`), status: 400, code: "invalid_request", msg: "not valid JSON"},
		{name: "truncated JSON", body: strings.NewReader(validBody[:len(validBody)/2]), status: 400, code: "invalid_request", msg: "ends inside"},
		{name: "null body", body: strings.NewReader("null"), status: 400, code: "invalid_request", msg: "null"},
		{name: "empty body", body: strings.NewReader(""), status: 400, code: "invalid_request", msg: "empty"},
		{name: "array body", body: strings.NewReader(`[` + validBody + `]`), status: 400, code: "invalid_request", msg: "must be a JSON object, not a JSON array"},
		{name: "nodeName a number", body: strings.NewReader(request(set("nodeName", 7))), status: 400, code: "invalid_request", msg: "nodeName must be a string, not a JSON number"},
		{name: "labels an array", body: strings.NewReader(request(set("labels", []string{"a=b"}))), status: 400, code: "invalid_request", msg: "labels must be an object of strings, not a JSON array"},
		{name: "label value a number", body: strings.NewReader(request(set("labels", map[string]any{"zone": 1}))), status: 400, code: "invalid_request", msg: "values in labels must be strings"},
		{name: "token an object", body: strings.NewReader(request(set("token", map[string]string{}))), status: 400, code: "invalid_request", msg: "token must be a string"},
		{name: "unknown field", body: strings.NewReader(request(set("admin", true))), status: 400, code: "invalid_request", msg: `unknown field "admin"`},
		{name: "two objects", body: strings.NewReader(validBody + validBody), status: 400, code: "invalid_request", msg: "data after the JSON object"},
		{name: "missing csr", body: strings.NewReader(request(func(m map[string]any) { delete(m, "csr") })), status: 400, code: "invalid_request", msg: "csr is required"},
		{name: "missing token", body: strings.NewReader(request(set("token", nil))), status: 400, code: "invalid_request", msg: "token is required"},
		{name: "text/plain", contentType: "text/plain", body: strings.NewReader(validBody), status: 415, code: "unsupported_media_type", msg: "application/json"},
		// Names and labels.
		{name: "invalid node name", body: strings.NewReader(request(func(m map[string]any) {
			m["nodeName"] = "Edge_1"
			m["csr"] = csrFor(t, key, "node:Edge_1")
		})), status: 400, code: "invalid_node_name", msg: `"Edge_1"`},
		{name: "node name too long", body: strings.NewReader(request(set("nodeName", strings.Repeat("a", 254)))), status: 400, code: "invalid_node_name", msg: "at most 253"},
		{name: "label key invalid", body: strings.NewReader(request(set("labels", map[string]string{"bad key": "v"}))), status: 400, code: "invalid_labels", msg: `"bad key"`},
		{name: "label prefix invalid", body: strings.NewReader(request(set("labels", map[string]string{"Example.COM/zone": "v"}))), status: 400, code: "invalid_labels", msg: "prefix"},
		{name: "label value invalid", body: strings.NewReader(request(set("labels", map[string]string{"zone": "north/east"}))), status: 400, code: "invalid_labels", msg: `"north/east"`},
		{name: "label value too long", body: strings.NewReader(request(set("labels", map[string]string{"zone": strings.Repeat("n", 64)}))), status: 400, code: "invalid_labels", msg: "at most 63"},
		{name: "node group label", body: strings.NewReader(request(set("labels", map[string]string{"apps.kubeedge.io/belonging-to": "g1"}))), status: 400, code: "invalid_labels", msg: "managed by NodeGroups"},
		// Routing.
		{name: "GET join", method: http.MethodGet, path: "/v1/join", status: 405, code: "method_not_allowed", msg: "POST"},
		{name: "unknown path", method: http.MethodGet, path: "/v1/admin", status: 404, code: "not_found", msg: "/v1/join"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path, ct := tt.method, tt.path, tt.contentType
			if method == "" {
				method, path = http.MethodPost, "/v1/join"
			}
			if ct == "" && method == http.MethodPost {
				ct = "application/json"
			}
			status, body := e.do(method, path, ct, tt.body)
			var eb errorBody
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("answer is not a JSON error: %d %q", status, body)
			}
			if status != tt.status || eb.Code != tt.code {
				t.Fatalf("got %d %s (%s), want %d %s", status, eb.Code, eb.Message, tt.status, tt.code)
			}
			if !strings.Contains(eb.Message, tt.msg) {
				t.Errorf("message %q does not mention %q", eb.Message, tt.msg)
			}
			if strings.Contains(eb.Message, valid.Secret) || strings.Contains(string(body), "CERTIFICATE-----") {
				t.Errorf("refusal leaks a secret or a certificate: %s", body)
			}
			if regs := e.nodes.registrations(); len(regs) != 0 {
				t.Fatalf("a refused join registered %+v", regs)
			}
		})
	}

	// Every refusal is counted under its code, and nothing as ok.
	for code, want := range map[string]float64{"ok": 0, "token_unknown": 2, "invalid_request": 13, "invalid_labels": 5, "body_too_large": 2, "method_not_allowed": 1} {
		if got := e.joinCount(code); got != want {
			t.Errorf("count{code=%q} = %v, want %v", code, got, want)
		}
	}
	// A well-formed token that was refused is logged by ID, not by secret (checkLogs covers the
	// secret at cleanup).
	if logs := e.logs.String(); !strings.Contains(logs, `"token_id":"`+expired.ID+`"`) {
		t.Errorf("refusal of token %s not logged by ID:\n%s", expired.ID, logs)
	}
}

// TestServerStreamedOversizeStopsReading: a client that streams far more than the limit is cut
// off after about the limit, not read to the end.
func TestServerStreamedOversizeStopsReading(t *testing.T) {
	e := newEnv(t)
	src := &countingZeros{limit: 1 << 30}
	req, err := http.NewRequest(http.MethodPost, e.url+"/v1/join", src)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("want a 413 answer, got %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d, want 413", resp.StatusCode)
	}
	// Socket buffers hold a few MiB at most; a server that kept reading would take the whole GiB.
	if n := src.n.Load(); n > 16<<20 {
		t.Errorf("the client sent %d bytes before the server stopped it", n)
	}
}

type countingZeros struct {
	n     atomic.Int64
	limit int64
}

func (c *countingZeros) Read(p []byte) (int, error) {
	done := c.n.Load()
	if done >= c.limit {
		return 0, io.EOF
	}
	n := min(int64(len(p)), c.limit-done)
	for i := range p[:n] {
		p[i] = ' '
	}
	c.n.Add(n)
	return int(n), nil
}

func TestServerCloudFailures(t *testing.T) {
	t.Run("token store down", func(t *testing.T) {
		e := newEnv(t)
		tok := e.token("edge-1", time.Hour)
		e.tokens.fail = errors.New("etcd: connection refused to 10.1.2.3:2379")
		key, _ := pki.NewKey()
		_, _, err := join.Join(ctxT(t), e.url, tok, "edge-1", nil, key)
		var je *join.Error
		if !errors.As(err, &je) || je.Status != 500 || je.Code != join.CodeInternal {
			t.Fatalf("err = %v, want a 500 internal *Error", err)
		}
		if strings.Contains(je.Message, "10.1.2.3") {
			t.Errorf("internal detail sent to the client: %q", je.Message)
		}
		if !strings.Contains(e.logs.String(), "10.1.2.3") {
			t.Errorf("cause not logged:\n%s", e.logs.String())
		}
		if len(e.nodes.registrations()) != 0 {
			t.Error("registered despite the failure")
		}
	})
	t.Run("register fails", func(t *testing.T) {
		e := newEnv(t)
		tok := e.token("edge-1", time.Hour)
		e.nodes.fail = errors.New("store full")
		key, _ := pki.NewKey()
		cert, ca, err := join.Join(ctxT(t), e.url, tok, "edge-1", nil, key)
		var je *join.Error
		if !errors.As(err, &je) || je.Status != 500 {
			t.Fatalf("err = %v, want a 500 *Error", err)
		}
		if cert != nil || ca != nil {
			t.Error("a certificate was released although the node was not registered")
		}
		if e.joinCount("internal") != 1 {
			t.Errorf("internal count = %v", e.joinCount("internal"))
		}
	})
	t.Run("a later join recorded", func(t *testing.T) {
		e := newEnv(t)
		tok := e.token("edge-1", time.Hour)
		e.nodes.fail = fmt.Errorf("record the join of node edge-1: %w", join.ErrLaterJoin)
		key, _ := pki.NewKey()
		cert, _, err := join.Join(ctxT(t), e.url, tok, "edge-1", nil, key)
		var je *join.Error
		if !errors.As(err, &je) || je.Status != 409 || je.Code != join.CodeLaterJoin || !strings.Contains(je.Message, "join again") {
			t.Fatalf("err = %v, want a 409 later_join *Error", err)
		}
		if cert != nil {
			t.Error("the older join's certificate was released")
		}
		if e.joinCount("later_join") != 1 {
			t.Errorf("later_join count = %v", e.joinCount("later_join"))
		}
	})
}

// TestClientRefusals runs the real client against the real server.
func TestClientRefusals(t *testing.T) {
	e := newEnv(t)
	key, _ := pki.NewKey()

	t.Run("expired", func(t *testing.T) {
		tok := e.token("edge-1", -time.Minute)
		_, _, err := join.Join(ctxT(t), e.url, tok, "edge-1", nil, key)
		var je *join.Error
		if !errors.Is(err, join.ErrTokenExpired) || !errors.As(err, &je) || je.Status != 401 || je.Code != "token_expired" {
			t.Fatalf("err = %v, want 401 token_expired matching ErrTokenExpired", err)
		}
		if !strings.HasSuffix(err.Error(), "create a new one with tether-cloud token create.") {
			t.Errorf("error %q does not say what to do", err)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		tok := pki.Token{CAHash: e.ca.Hash(), ID: "nosuch", Secret: randomSecret(t)}
		e.remember(tok)
		_, _, err := join.Join(ctxT(t), e.url, tok, "edge-1", nil, key)
		if !errors.Is(err, join.ErrTokenUnknown) {
			t.Fatalf("err = %v, want ErrTokenUnknown", err)
		}
	})
	t.Run("bound to another node", func(t *testing.T) {
		tok := e.token("edge-1", time.Hour)
		_, _, err := join.Join(ctxT(t), e.url, tok, "edge-2", nil, key)
		var je *join.Error
		if !errors.Is(err, join.ErrTokenWrongNode) || !errors.As(err, &je) || je.Status != 403 {
			t.Fatalf("err = %v, want 403 ErrTokenWrongNode", err)
		}
	})
	if regs := e.nodes.registrations(); len(regs) != 0 {
		t.Errorf("refused joins registered %+v", regs)
	}
}

// TestClientCAMismatch: a token for another cloud's CA stops the client after GET /ca.crt; the
// token and the CSR are never sent.
func TestClientCAMismatch(t *testing.T) {
	e := newEnv(t)
	otherCA, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "other"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := pki.NewToken(otherCA.Hash())
	if err != nil {
		t.Fatal(err)
	}
	e.remember(tok)
	key, _ := pki.NewKey()
	_, _, err = join.Join(ctxT(t), e.url, tok, "edge-1", nil, key)
	if !errors.Is(err, join.ErrCAMismatch) {
		t.Fatalf("err = %v, want ErrCAMismatch", err)
	}
	if !strings.Contains(err.Error(), e.ca.Hash()) || !strings.Contains(err.Error(), otherCA.Hash()) {
		t.Errorf("error %q does not show both hashes", err)
	}
	if got := e.seen(); len(got) != 1 || got[0] != "GET /ca.crt" {
		t.Errorf("server saw %v, want only GET /ca.crt", got)
	}
	if e.posts() != 0 || e.tokens.checks != 0 {
		t.Error("the token reached the server")
	}
}

// TestClientImpostor: a server that copies the real (public) ca.crt but cannot present a
// certificate from it gets the CA request and nothing else.
func TestClientImpostor(t *testing.T) {
	genuine, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "genuine"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fake, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "fake"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := fake.IssueServer(nil, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var posts atomic.Int32
	url := serve(t, &http.Server{
		TLSConfig: join.TLSConfig(cert),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				posts.Add(1)
			}
			w.Write(genuine.CertPEM())
		}),
	})
	tok, _ := pki.NewToken(genuine.Hash())
	key, _ := pki.NewKey()
	_, _, err = join.Join(ctxT(t), url, tok, "edge-1", nil, key)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("err = %v, want a certificate verification failure", err)
	}
	if posts.Load() != 0 {
		t.Error("the token was posted to an impostor")
	}
}

// TestClientChecksAnswers: a server that answers badly cannot make the client accept it.
func TestClientChecksAnswers(t *testing.T) {
	ca, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer(nil, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewKey()
	otherKey, _ := pki.NewKey()
	issue := func(k crypto.Signer, name string) string {
		c, err := ca.SignCSR([]byte(csrFor(t, k, "node:"+name)), name, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return string(c)
	}
	answer := func(v any) []byte { b, _ := json.Marshal(v); return b }
	tests := []struct {
		name   string
		caBody []byte
		status int
		body   []byte
		want   string
	}{
		{"certificate for another key", ca.CertPEM(), 200, answer(map[string]string{"certificate": issue(otherKey, "edge-1"), "ca": string(ca.CertPEM())}), "not for this node's key"},
		{"certificate for another node", ca.CertPEM(), 200, answer(map[string]string{"certificate": issue(key, "edge-2"), "ca": string(ca.CertPEM())}), `"node:edge-2"`},
		{"no certificate", ca.CertPEM(), 200, answer(map[string]string{"ca": string(ca.CertPEM())}), "no PEM certificate"},
		{"not JSON", ca.CertPEM(), 200, []byte("<html>"), "not valid JSON"},
		{"proxy error page", ca.CertPEM(), 502, []byte("<html><body>\x1b[31mBad gateway</body></html>"), "Bad Gateway: <html><body> [31mBad gateway"},
		{"huge CA answer", bytes.Repeat([]byte("A"), 2<<20), 0, nil, "larger than 1048576 bytes"},
		{"no CA", []byte("nothing here"), 0, nil, "served no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := serve(t, &http.Server{
				TLSConfig: join.TLSConfig(cert),
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/ca.crt" {
						w.Write(tt.caBody)
						return
					}
					w.WriteHeader(tt.status)
					w.Write(tt.body)
				}),
			})
			tok, _ := pki.NewToken(ca.Hash())
			certPEM, caPEM, err := join.Join(ctxT(t), url, tok, "edge-1", nil, key)
			if err == nil || certPEM != nil || caPEM != nil {
				t.Fatalf("Join accepted a bad answer: %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

// TestClientChecksArguments: bad input is refused before any request.
func TestClientChecksArguments(t *testing.T) {
	e := newEnv(t)
	tok := e.token("edge-1", time.Hour)
	key, _ := pki.NewKey()
	tests := []struct {
		name   string
		url    string
		tok    pki.Token
		node   string
		labels map[string]string
		key    crypto.Signer
		want   string
	}{
		{"http URL", strings.Replace(e.url, "https", "http", 1), tok, "edge-1", nil, key, "must be https"},
		{"no scheme", strings.TrimPrefix(e.url, "https://"), tok, "edge-1", nil, key, "must be https"},
		{"URL with query", e.url + "?x=1", tok, "edge-1", nil, key, "without user, query"},
		{"empty token", e.url, pki.Token{}, "edge-1", nil, key, "malformed join token"},
		{"invalid node name", e.url, tok, "Edge_1", nil, key, "invalid node name"},
		{"invalid labels", e.url, tok, "edge-1", map[string]string{"-x": "y"}, key, `label key "-x"`},
		{"no key", e.url, tok, "edge-1", nil, nil, "no private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := join.Join(ctxT(t), tt.url, tt.tok, tt.node, tt.labels, tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if got := e.seen(); len(got) != 0 {
		t.Errorf("requests were sent: %v", got)
	}
}

// TestJoinIssuedAfterTheLastJoin: a replica whose clock is behind the one that signed the node's
// last join issues the new certificate after that join's, not at its own time: recorded at its
// own time, the join would be refused as older than the one it replaces (409 later_join) until
// the clock caught up.
func TestJoinIssuedAfterTheLastJoin(t *testing.T) {
	e := newEnv(t)
	// The last join, by a clock 5 minutes ahead: past the minute a certificate's validity is
	// backdated, so a validity started from the moved issue time would not have begun yet.
	ahead := time.Now().Add(5 * time.Minute)
	e.nodes.mu.Lock()
	e.nodes.joined = ahead
	e.nodes.mu.Unlock()
	key, _ := pki.NewKey()
	certPEM, _, err := join.Join(ctxT(t), e.url, e.token("edge-1", time.Hour), "edge-1", nil, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if issued := pki.IssuedAt(cert); !issued.After(ahead) {
		t.Fatalf("issued at %s, not after the last join's %s", issued, ahead)
	}
	if now := time.Now(); cert.NotBefore.After(now) {
		t.Fatalf("valid from %s, after now (%s): no replica on this clock would take it yet", cert.NotBefore, now)
	}
}
