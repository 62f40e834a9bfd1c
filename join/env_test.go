package join_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/internal/syncbuf"
	"github.com/tetherhub/tether/join"
	"github.com/tetherhub/tether/pki"
)

// fakeTokens is an in-memory token store with the semantics Tokens documents: it keeps digests,
// never secrets, and checks the secret before it says anything about expiry or binding.
type fakeTokens struct {
	mu     sync.Mutex
	byID   map[string]storedToken
	fail   error // if set, Check returns it: a store outage
	checks int
}

type storedToken struct {
	digest  string
	node    string // "" for a fleet token
	expires time.Time
}

func (f *fakeTokens) Check(_ context.Context, id, secret, nodeName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks++
	if f.fail != nil {
		return f.fail
	}
	st, ok := f.byID[id]
	if !ok || !pki.SecretMatches(st.digest, secret) {
		return join.ErrTokenUnknown
	}
	if !time.Now().Before(st.expires) {
		return join.ErrTokenExpired
	}
	if st.node != "" && st.node != nodeName {
		return join.ErrTokenWrongNode
	}
	return nil
}

type registration struct {
	name   string
	labels map[string]string
}

type fakeNodes struct {
	mu     sync.Mutex
	regs   []registration
	fail   error
	joined time.Time // what Joined answers
}

func (f *fakeNodes) Register(_ context.Context, name string, labels map[string]string, _ time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.regs = append(f.regs, registration{name, labels})
	return f.fail
}

func (f *fakeNodes) Joined(context.Context, string) (time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.joined, nil
}

func (f *fakeNodes) registrations() []registration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]registration(nil), f.regs...)
}

// env is a real join server on 127.0.0.1:0 with a fresh CA, fake Tokens and Nodes, a log buffer
// and a metrics registry.
type env struct {
	t        *testing.T
	ca       *pki.CA
	tokens   *fakeTokens
	nodes    *fakeNodes
	reg      *prometheus.Registry
	logs     *syncbuf.Buffer
	url      string
	client   *http.Client // trusts only ca, as a node does after pinning it
	mu       sync.Mutex
	requests []string // "METHOD /path" the server received, in order
	secrets  []string // every secret a test used; none may reach the log
}

func newEnv(t *testing.T, tweak ...func(*join.Config)) *env {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "cloud"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		t:      t,
		ca:     ca,
		tokens: &fakeTokens{byID: map[string]storedToken{}},
		nodes:  &fakeNodes{},
		reg:    prometheus.NewRegistry(),
		logs:   &syncbuf.Buffer{},
	}
	// Registered first so it runs last, after the server has stopped writing.
	t.Cleanup(e.checkLogs)

	cfg := join.DefaultConfig()
	for _, f := range tweak {
		f(&cfg)
	}
	srv, err := join.NewServer(ca, e.tokens, e.nodes, cfg, zerolog.New(e.logs), e.reg)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer(nil, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	hs := srv.HTTPServer(cert)
	inner := hs.Handler
	hs.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.requests = append(e.requests, r.Method+" "+r.URL.Path)
		e.mu.Unlock()
		inner.ServeHTTP(w, r)
	})
	e.url = serve(t, hs)
	e.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS13}}}
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

// serve runs hs over TLS on 127.0.0.1:0 until the test ends and returns its https URL.
func serve(t *testing.T, hs *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if hs.ErrorLog == nil {
		// Refused handshakes are what several tests provoke; keep them off stderr.
		hs.ErrorLog = log.New(io.Discard, "", 0)
	}
	done := make(chan error, 1)
	go func() { done <- hs.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return "https://" + ln.Addr().String()
}

// token stores a token for node ("" for a fleet token) valid for ttl (negative: expired).
func (e *env) token(node string, ttl time.Duration) pki.Token {
	e.t.Helper()
	tok, err := pki.NewToken(e.ca.Hash())
	if err != nil {
		e.t.Fatal(err)
	}
	e.tokens.mu.Lock()
	e.tokens.byID[tok.ID] = storedToken{digest: pki.SecretDigest(tok.Secret), node: node, expires: time.Now().Add(ttl)}
	e.tokens.mu.Unlock()
	e.remember(tok)
	return tok
}

func (e *env) remember(tok pki.Token) {
	e.mu.Lock()
	e.secrets = append(e.secrets, tok.Secret)
	e.mu.Unlock()
}

func (e *env) seen() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.requests...)
}

func (e *env) posts() int {
	n := 0
	for _, r := range e.seen() {
		if strings.HasPrefix(r, "POST ") {
			n++
		}
	}
	return n
}

func (e *env) checkLogs() {
	logs := e.logs.String()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.secrets {
		if strings.Contains(logs, s) {
			e.t.Errorf("the server logged a token secret:\n%s", logs)
			return
		}
	}
}

// joinCount reads tether_cloud_join_requests_total{code} from the registry.
func (e *env) joinCount(code string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tether_cloud_join_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == code {
					return m.GetCounter().GetValue()
				}
			}
		}
		e.t.Fatalf("no series for code %q", code)
	}
	e.t.Fatal("tether_cloud_join_requests_total not registered")
	return 0
}

// randomSecret is a well-formed secret no token store knows.
func randomSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	rand.Read(b)
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// do sends a raw request over a connection that trusts the CA and returns the status, the decoded
// error body (if any) and the raw body.
func (e *env) do(method, path, contentType string, body io.Reader) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, data
}
