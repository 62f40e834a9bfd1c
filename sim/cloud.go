package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tetherhub/tether/internal/freeport"
	"github.com/tetherhub/tether/pki"
)

// Cloud is a tether-cloud process the simulator started (for scenarios that restart the cloud,
// and for benchmarks), or one it only talks to (API set, no process).
type Cloud struct {
	Bin            string // directory holding tether-cloud
	Dir            string // its data dir
	Hub, Join, API string // addresses
	Args           []string
	cmd            *exec.Cmd
	logf           *os.File
	done           chan error
}

// StartCloud starts tether-cloud from bin on free loopback ports with its data in dir.
func StartCloud(bin, dir string, extra ...string) (*Cloud, error) {
	c := &Cloud{Bin: bin, Dir: dir, Args: extra}
	var err error
	for _, p := range []*string{&c.Hub, &c.Join, &c.API} {
		if *p, err = freeport.Addr(); err != nil {
			return nil, err
		}
	}
	return c, c.Start()
}

// Start (re)starts the process on the same ports and data dir and waits until it is ready.
func (c *Cloud) Start() error {
	args := append([]string{"serve", "--data-dir", c.Dir, "--hub-listen", c.Hub, "--join-listen", c.Join,
		"--api-listen", c.API, "--advertise-address", "127.0.0.1", "--log-level", "warn"}, c.Args...)
	c.cmd = exec.Command(filepath.Join(c.Bin, "tether-cloud"), args...)
	f, err := os.OpenFile(filepath.Join(c.Dir, "cloud.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	c.logf = f
	c.cmd.Stdout, c.cmd.Stderr = f, f
	if err := c.cmd.Start(); err != nil {
		return err
	}
	c.done = make(chan error, 1)
	cmd := c.cmd
	go func() { c.done <- cmd.Wait() }()
	return c.WaitReady(30 * time.Second)
}

// WaitReady waits until /readyz answers 200.
func (c *Cloud) WaitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(c.URL("/readyz")); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("tether-cloud did not become ready; see %s", filepath.Join(c.Dir, "cloud.log"))
}

// Stop sends SIGTERM and waits for the exit.
func (c *Cloud) Stop() error { return c.end(syscall.SIGTERM) }

// Kill is kill -9.
func (c *Cloud) Kill() error { return c.end(syscall.SIGKILL) }

func (c *Cloud) end(sig syscall.Signal) error {
	if c.cmd == nil || c.cmd.Process == nil {
		return nil
	}
	c.cmd.Process.Signal(sig)
	defer func() { c.logf.Close(); c.cmd = nil }() // ended: a second Stop or Kill has nothing to do
	select {
	case err := <-c.done:
		if sig == syscall.SIGKILL {
			return nil
		}
		return err
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("tether-cloud did not stop within 15s")
	}
}

// Pid is the running process's id (0 when it is not running).
func (c *Cloud) Pid() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// URL is a URL on the cloud API.
func (c *Cloud) URL(p string) string { return "http://" + c.API + p }

// Token makes a fleet token through the real CLI.
func (c *Cloud) Token(ttl time.Duration) (pki.Token, error) {
	out, err := exec.Command(filepath.Join(c.Bin, "tether-cloud"), "token", "create", "--server", "http://"+c.API, "--any-node", "--ttl", ttl.String()).Output()
	if err != nil {
		return pki.Token{}, fmt.Errorf("token create: %w", err)
	}
	return pki.ParseToken(strings.TrimSpace(string(out)))
}

// Request sends a request to the cloud API and returns the body of a 2xx answer.
func Request(base, method, path, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(method, base+path, strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, out)
	}
	return out, nil
}

// EnsureNamespace creates the Namespace ns unless it exists: the cloud creates objects only in
// namespaces that do.
func EnsureNamespace(base, ns string) error {
	body := []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"` + ns + `"}}`)
	if _, err := Request(base, http.MethodPost, "/api/v1/namespaces", "application/json", body); err != nil && !strings.Contains(err.Error(), "409") {
		return err
	}
	return nil
}

// Info is what /tether/v1/info says.
type Info struct {
	Version, Cluster, CAHash, Replica string
}

// GetInfo asks a cloud API for its identity.
func GetInfo(base string) (Info, error) {
	body, err := Request(base, http.MethodGet, "/tether/v1/info", "", nil)
	if err != nil {
		return Info{}, err
	}
	var i Info
	err = json.Unmarshal(body, &i)
	return i, err
}

// Scrape reads the named samples (summing label sets) from a /metrics page.
func Scrape(url string, names ...string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, n := range names {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(n) + `(\{[^}]*\})? ([0-9.e+-]+)$`)
		for _, m := range re.FindAllStringSubmatch(string(body), -1) {
			v, _ := strconv.ParseFloat(m[2], 64)
			out[n] += v
		}
	}
	return out, nil
}

// Memory is a process's memory right after a garbage collection, in bytes.
type Memory struct {
	InUse float64 // heap spans in use plus goroutine stacks: what the process holds, fragmentation included
	Live  float64 // live heap objects plus goroutine stacks: what it still references
	RSS   float64 // resident set size
}

// GoMemory collects garbage in the process behind base (its pprof heap endpoint with gc=1)
// and then reads its memory from its metrics.
func GoMemory(base string) (Memory, error) {
	resp, err := http.Get(base + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return Memory{}, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	m, err := Scrape(base+"/metrics", "go_memstats_heap_inuse_bytes", "go_memstats_heap_alloc_bytes", "go_memstats_stack_inuse_bytes", "process_resident_memory_bytes")
	if err != nil {
		return Memory{}, err
	}
	stacks := m["go_memstats_stack_inuse_bytes"]
	return Memory{InUse: m["go_memstats_heap_inuse_bytes"] + stacks, Live: m["go_memstats_heap_alloc_bytes"] + stacks, RSS: m["process_resident_memory_bytes"]}, nil
}

// QuietMemory is GoMemory's least reading (each field on its own) of n taken every gap. A
// collection keeps whatever in-flight work references at that instant (a busy cloud's
// decode buffers, index versions a write still holds): at 10,000 nodes that moved one reading
// by a tenth either way. What every reading holds is what the process keeps, so comparing
// least readings shows growth that stays, and not the instant a collection happened to hit.
func QuietMemory(ctx context.Context, base string, n int, gap time.Duration) (Memory, error) {
	var least Memory
	for i := range n {
		if i > 0 {
			select {
			case <-ctx.Done():
				return Memory{}, ctx.Err()
			case <-time.After(gap):
			}
		}
		m, err := GoMemory(base)
		if err != nil {
			return Memory{}, err
		}
		if i == 0 {
			least = m
			continue
		}
		least = Memory{InUse: min(least.InUse, m.InUse), Live: min(least.Live, m.Live), RSS: min(least.RSS, m.RSS)}
	}
	return least, nil
}

// WaitUntil polls ok every 20 ms until it holds, d passes or ctx ends.
func WaitUntil(ctx context.Context, d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// ResourceVersion reads metadata.resourceVersion from an API answer (an object or a list) as a
// revision: 0 if it has none.
func ResourceVersion(resp []byte) uint64 {
	var obj struct {
		Metadata struct{ ResourceVersion string }
	}
	json.Unmarshal(resp, &obj)
	var rev uint64
	fmt.Sscan(obj.Metadata.ResourceVersion, &rev)
	return rev
}
