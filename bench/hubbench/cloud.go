package hubbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tetherhub/tether/pki"
)

// cloudProc is a tether-cloud process under measurement.
type cloudProc struct {
	bin            string
	dir            string
	hub, join, api string
	args           []string
	cmd            *exec.Cmd
	logf           *os.File
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func startCloud(bin, dir string, extra ...string) (*cloudProc, error) {
	c := &cloudProc{bin: bin, dir: dir, args: extra}
	var err error
	for _, p := range []*string{&c.hub, &c.join, &c.api} {
		if *p, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	return c, c.start()
}

func (c *cloudProc) start() error {
	args := append([]string{"serve", "--data-dir", c.dir, "--hub-listen", c.hub, "--join-listen", c.join,
		"--api-listen", c.api, "--advertise-address", "127.0.0.1", "--log-level", "warn"}, c.args...)
	c.cmd = exec.Command(filepath.Join(c.bin, "tether-cloud"), args...)
	f, err := os.OpenFile(filepath.Join(c.dir, "cloud.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	c.logf = f
	c.cmd.Stdout, c.cmd.Stderr = f, f
	if err := c.cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(c.url("/readyz")); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("tether-cloud did not become ready; see %s", filepath.Join(c.dir, "cloud.log"))
}

func (c *cloudProc) stop() error {
	if c.cmd == nil || c.cmd.Process == nil {
		return nil
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		c.logf.Close()
		return err
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-done
		c.logf.Close()
		return fmt.Errorf("tether-cloud did not stop within 15s")
	}
}

func (c *cloudProc) url(p string) string { return "http://" + c.api + p }

// token makes a fleet token.
func (c *cloudProc) token() (pki.Token, error) {
	out, err := exec.Command(filepath.Join(c.bin, "tether-cloud"), "token", "create", "--server", "http://"+c.api, "--any-node", "--ttl", "2h").Output()
	if err != nil {
		return pki.Token{}, fmt.Errorf("token create: %w", err)
	}
	return pki.ParseToken(strings.TrimSpace(string(out)))
}

// request sends a JSON request to the API and returns the body.
func (c *cloudProc) request(method, path, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(method, c.url(path), strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
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

// clusterID asks the cloud for its store's cluster ID.
func (c *cloudProc) clusterID() (string, error) {
	body, err := c.request(http.MethodGet, "/tether/v1/info", "", nil)
	if err != nil {
		return "", err
	}
	var info struct{ Cluster string }
	if err := json.Unmarshal(body, &info); err != nil || info.Cluster == "" {
		return "", fmt.Errorf("no cluster ID from /tether/v1/info: %s", body)
	}
	return info.Cluster, nil
}

// metrics reads the named samples (summing label sets) from /metrics.
func scrape(url string, names ...string) (map[string]float64, error) {
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

// goMemory forces a collection in the process behind base (its pprof heap endpoint with gc=1)
// and returns heap-in-use plus stacks-in-use, the memory the Go runtime holds for live data,
// and the resident set size.
func goMemory(base string) (live, rss float64, err error) {
	resp, err := http.Get(base + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return 0, 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	m, err := scrape(base+"/metrics", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "process_resident_memory_bytes")
	if err != nil {
		return 0, 0, err
	}
	return m["go_memstats_heap_inuse_bytes"] + m["go_memstats_stack_inuse_bytes"], m["process_resident_memory_bytes"], nil
}

func waitUntil(ctx context.Context, d time.Duration, ok func() bool) error {
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
