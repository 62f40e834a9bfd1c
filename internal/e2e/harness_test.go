// Package e2e runs tether's real programs against each other: a tether-cloud process, tether-edge
// processes, real bbolt files, real TLS websockets on loopback, and the HTTP APIs as clients use
// them.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/internal/freeport"
	"github.com/tetherhub/tether/internal/syncbuf"
	"github.com/tetherhub/tether/resource"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tether-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	// The programs are built with the race detector, so a race in a real process fails the test
	// that started it (see proc.stop).
	cmd := exec.Command("go", "build", "-race", "-o", dir+"/", "../../cmd/tether-cloud", "../../cmd/tether-edge", "../../cmd/tether-sim")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback address nobody listens on right now, on a port no outgoing
// connection can take while its process restarts (package freeport).
func freePort(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// proc is a running program.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	log  *syncbuf.Buffer
	done chan struct{}
	err  error
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, log: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, strings.Fields(name)[0]), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", name, tail(p.log.String(), 60))
		}
	})
	return p
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop sends SIGTERM and requires a clean exit within 10 s (SPEC §1).
func (p *proc) stop() {
	p.t.Helper()
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
		p.t.Fatalf("%s did not stop within 10s of SIGTERM", p.name)
	}
	if p.err != nil {
		p.t.Fatalf("%s exited with %v after SIGTERM\n%s", p.name, p.err, tail(p.log.String(), 40))
	}
	if strings.Contains(p.log.String(), "DATA RACE") {
		p.t.Fatalf("%s reported a data race\n%s", p.name, p.log.String())
	}
}

// kill9 is kill -9.
func (p *proc) kill() {
	if !p.exited() {
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// cloud is a running tether-cloud.
type cloud struct {
	*proc
	dir            string
	hub, join, api string
	extra          []string
}

func newCloud(t *testing.T, extra ...string) *cloud {
	c := &cloud{dir: t.TempDir(), hub: freePort(t), join: freePort(t), api: freePort(t), extra: extra}
	c.start(t)
	// The namespace the tests' objects live in (objects are created only in one that exists);
	// a second replica on the same etcd finds it made.
	if code, body := do(t, http.MethodPost, c.url("/api/v1/namespaces"), "application/json",
		[]byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"`+ns+`"}}`)); code != http.StatusCreated && code != http.StatusConflict {
		t.Fatalf("create namespace %s: %d %s", ns, code, body)
	}
	return c
}

func (c *cloud) start(t *testing.T) {
	t.Helper()
	args := []string{"serve", "--data-dir", c.dir, "--hub-listen", c.hub, "--join-listen", c.join, "--api-listen", c.api,
		"--advertise-address", "127.0.0.1", "--log-level", "debug",
		"--heartbeat", "1s", "--node-grace-period", "3s", "--progress-interval", "200ms", "--write-timeout", "3s"}
	c.proc = start(t, "tether-cloud", append(args, c.extra...)...)
	waitFor(t, 20*time.Second, "cloud ready", func() bool { return httpOK("http://" + c.api + "/readyz") })
}

func (c *cloud) url(path string) string { return "http://" + c.api + path }

// token makes a join token through the real CLI.
func (c *cloud) token(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "tether-cloud"), append([]string{"token", "create", "--server", "http://" + c.api}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("token create: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// edge is a tether-edge.
type edge struct {
	*proc
	name, dir, meta, mqtt string
	c                     *cloud
	extra                 []string
}

func newEdge(t *testing.T, c *cloud, name string, extra ...string) *edge {
	t.Helper()
	e := &edge{name: name, dir: t.TempDir(), meta: freePort(t), mqtt: freePort(t), c: c, extra: extra}
	e.startWith(t, c.token(t, "--node", name))
	e.waitSynced(t)
	t.Cleanup(func() {
		e.kill()
		e.check(t)
	})
	return e
}

func (e *edge) startWith(t *testing.T, token string) {
	t.Helper()
	args := []string{"run", "--node-name", e.name, "--cloud", e.c.hub, "--join", "https://" + e.c.join,
		"--data-dir", e.dir, "--metaserver-listen", e.meta, "--mqtt-listen", e.mqtt, "--log-level", "debug", "--reconnect-max", "1s"}
	if token != "" {
		args = append(args, "--token", token)
	}
	e.proc = start(t, "tether-edge "+e.name, append(args, e.extra...)...)
	waitFor(t, 20*time.Second, e.name+" metaserver up", func() bool { return httpOK("http://" + e.meta + "/healthz") })
}

// restart starts the edge again on its data dir (no token: it has joined).
func (e *edge) restart(t *testing.T) {
	t.Helper()
	e.startWith(t, "")
}

func (e *edge) url(path string) string { return "http://" + e.meta + path }

func (e *edge) waitSynced(t *testing.T) {
	t.Helper()
	waitFor(t, 20*time.Second, e.name+" synced", func() bool { return httpOK(e.url("/readyz")) })
}

// check opens the edge's bbolt file (the edge must be stopped) and runs bbolt's consistency check.
func (e *edge) check(t *testing.T) {
	t.Helper()
	path := filepath.Join(e.dir, "edge.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: true})
	if err != nil {
		t.Errorf("%s: open store for check: %v", e.name, err)
		return
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("%s: bbolt check: %v", e.name, err)
		}
		return nil
	})
}

// storedKeys opens the stopped edge's store and returns every key it holds.
func (e *edge) storedKeys(t *testing.T) []string {
	t.Helper()
	st, err := edgestore.Open(edgestore.DefaultConfig(filepath.Join(e.dir, "edge.db")), resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keys, err := st.Keys()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(keys))
	for k := range keys {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpOK(url string) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// do sends a request and returns the status and body.
func do(t *testing.T, method, url, contentType string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// mustDo is do that requires a 2xx.
func mustDo(t *testing.T, method, url string, obj any) []byte {
	t.Helper()
	var body []byte
	switch o := obj.(type) {
	case nil:
	case string:
		body = []byte(o)
	default:
		body, _ = json.Marshal(o)
	}
	ct := "application/json"
	if method == http.MethodPatch {
		ct = "application/merge-patch+json"
	}
	code, out := do(t, method, url, ct, body)
	if code/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, url, code, out)
	}
	return out
}

// names lists "namespace/name" (or "name") of the items of a list response.
func names(t *testing.T, url string) []string {
	t.Helper()
	code, body := do(t, http.MethodGet, url, "", nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	var list struct {
		Items []struct {
			Metadata struct{ Name, Namespace string }
		}
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	out := []string{}
	for _, i := range list.Items {
		if i.Metadata.Namespace != "" {
			out = append(out, i.Metadata.Namespace+"/"+i.Metadata.Name)
		} else {
			out = append(out, i.Metadata.Name)
		}
	}
	sort.Strings(out)
	return out
}

// waitNames waits until the list at url names exactly want.
func waitNames(t *testing.T, url string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if want == nil {
		want = []string{}
	}
	var got []string
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		got = names(t, url)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s: names %v, want %v", url, got, want)
}

// metric reads one unlabelled sample (or the sum of a labelled family) from a /metrics page.
func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	_, body := do(t, http.MethodGet, url, "", nil)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? ([0-9.e+-]+)$`)
	sum := 0.0
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		sum += v
	}
	return sum
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
