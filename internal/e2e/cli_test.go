package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadConfigurationExits2: a bad flag or config key gets one clear line naming it and exit
// code 2, and nothing starts (no data dir is created).
func TestBadConfigurationExits2(t *testing.T) {
	dir := t.TempDir()
	badFile := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badFile, []byte("hub-listen: 0.0.0.0:10000\nhartbeat: 5s\n"), 0o600)
	data := filepath.Join(dir, "never")
	cases := []struct {
		prog string
		args []string
		want string
	}{
		{"tether-cloud", []string{"--no-such-flag"}, "unknown flag: --no-such-flag"},
		{"tether-cloud", []string{"--heartbeat", "soon", "--data-dir", data}, "heartbeat"},
		{"tether-cloud", []string{"--config", badFile, "--data-dir", data}, `unknown key "hartbeat"`},
		{"tether-cloud", []string{"--store", "mongo", "--data-dir", data}, "store"},
		{"tether-cloud", []string{"--watch-cache", "0", "--data-dir", data}, "watch-cache"},
		{"tether-cloud", []string{"--api-listen", "0.0.0.0:10080", "--data-dir", data}, "api-token-file"},
		{"tether-cloud", []string{"token", "create"}, "--node"},
		{"tether-edge", []string{"--cloud", "nohost", "--data-dir", data}, "cloud"},
		{"tether-edge", []string{"--log-level", "chatty", "--cloud", "a:1", "--data-dir", data}, "log-level"},
		{"tether-edge", []string{"--node-labels", "bad label=x", "--cloud", "a:1", "--data-dir", data}, "node-labels"},
		{"tether-sim", []string{"--scenario", "party"}, "scenario"},
	}
	for _, c := range cases {
		cmd := exec.Command(filepath.Join(binDir, c.prog), c.args...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%s %v: %v (want exit 2): %s", c.prog, c.args, err, out)
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		last := lines[len(lines)-1]
		if !strings.Contains(last, c.want) || !strings.HasPrefix(last, c.prog+":") {
			t.Errorf("%s %v: output %q, want one line naming %q", c.prog, c.args, out, c.want)
		}
	}
	if _, err := os.Stat(data); err == nil {
		t.Error("a program with a bad configuration created its data dir")
	}
}

// TestConfigFileAndPrintConfig: keys of the YAML file mirror the flags, flags win, and
// --print-config shows the result (without secrets).
func TestConfigFileAndPrintConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "edge.yaml")
	os.WriteFile(file, []byte("node-name: from-file\ncloud: [10.0.0.1:10000, 10.0.0.2:10000]\nnode-labels: {zone: east}\ntoken: sekret\nwrite-timeout: 3s\n"), 0o600)
	out, err := exec.Command(filepath.Join(binDir, "tether-edge"), "--config", file, "--write-timeout", "4s", "--print-config").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, want := range []string{"node-name: from-file", "- 10.0.0.2:10000", "zone: east", "write-timeout: 4s", "token: <redacted>"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("print-config lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "sekret") {
		t.Error("print-config printed the token")
	}
	// A cloud started from a config file listens where the file says.
	api := freePort(t)
	cfg := filepath.Join(dir, "cloud.yaml")
	os.WriteFile(cfg, []byte("data-dir: "+filepath.Join(dir, "cloud")+"\napi-listen: "+api+"\nhub-listen: "+freePort(t)+"\njoin-listen: "+freePort(t)+"\nlog-format: console\n"), 0o600)
	p := start(t, "tether-cloud", "--config", cfg)
	waitFor(t, 20*time.Second, "cloud from a config file", func() bool { return httpOK("http://" + api + "/readyz") })
	p.stop()
}

// TestAPIBeyondLoopback: an API bound beyond loopback is HTTPS with the cloud CA and requires a
// bearer token from --api-token-file (probes excepted); token create reaches it with the token
// and the CA.
func TestAPIBeyondLoopback(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("# operators\nopen-sesame\n"), 0o600)
	_, port, _ := net.SplitHostPort(freePort(t))
	c := &cloud{dir: filepath.Join(dir, "cloud"), hub: freePort(t), join: freePort(t), api: "0.0.0.0:" + port}
	c.proc = start(t, "tether-cloud", "--data-dir", c.dir, "--hub-listen", c.hub, "--join-listen", c.join,
		"--api-listen", c.api, "--api-token-file", tokens, "--advertise-address", "127.0.0.1")
	caPEM := func() []byte { b, _ := os.ReadFile(filepath.Join(c.dir, "ca.crt")); return b }
	waitFor(t, 20*time.Second, "CA written", func() bool { return len(caPEM()) > 0 })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	get := func(path, token string) int {
		req, _ := http.NewRequest(http.MethodGet, "https://127.0.0.1:"+port+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, 20*time.Second, "HTTPS API ready", func() bool { return get("/readyz", "") == http.StatusOK })
	if code := get("/api/v1/nodes", ""); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", code)
	}
	if code := get("/api/v1/nodes", "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d, want 401", code)
	}
	if code := get("/api/v1/nodes", "open-sesame"); code != http.StatusOK {
		t.Fatalf("good token: %d, want 200", code)
	}
	if resp, err := http.Get("http://127.0.0.1:" + port + "/api/v1/nodes"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("the API answered plain HTTP beyond loopback")
		}
	}
	out, err := exec.Command(filepath.Join(binDir, "tether-cloud"), "token", "create", "--server", "https://127.0.0.1:"+port,
		"--ca-file", filepath.Join(c.dir, "ca.crt"), "--token-file", tokens, "--node", "edge-9").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "tether1.") {
		t.Fatalf("token create over HTTPS: %v: %s", err, out)
	}
	c.stop()
}
