package e2e

import (
	"context"
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
		// Extra positional arguments are refused, not ignored.
		{"tether-cloud", []string{"serve", "extra-arg", "--data-dir", data}, `"extra-arg"`},
		{"tether-cloud", []string{"token", "create", "--node", "edge-1", "extra"}, `"extra"`},
		{"tether-cloud", []string{"token", "create", "--node", "edge-1", "--server", "notaurl"}, "--server"},
		{"tether-cloud", []string{"version", "extra"}, `"extra"`},
		{"tether-edge", []string{"run", "extra", "--cloud", "a:1", "--data-dir", data}, `"extra"`},
		{"tether-sim", []string{"run", "extra"}, `"extra"`},
		// Values a package refuses name the flag they came from.
		{"tether-cloud", []string{"--node-window", "0", "--data-dir", data}, "--node-window"},
		{"tether-cloud", []string{"--cert-validity", "-1h", "--data-dir", data}, "--cert-validity"},
		{"tether-cloud", []string{"--max-message-bytes", "-1", "--data-dir", data}, "--max-message-bytes"},
		{"tether-cloud", []string{"--node-grace-period", "-1s", "--data-dir", data}, "--node-grace-period"},
		{"tether-cloud", []string{"--max-body-bytes", "10", "--data-dir", data}, "--max-body-bytes"},
		{"tether-cloud", []string{"--advertise-address", "cloud:10000", "--data-dir", data}, "--advertise-address"},
		{"tether-cloud", []string{"--api-listen", "0.0.0.0:10080", "--api-token-file", filepath.Join(dir, "none"), "--data-dir", data}, "--api-token-file"},
		{"tether-edge", []string{"--report-window", "0", "--cloud", "a:1", "--data-dir", data}, "--report-window"},
		{"tether-edge", []string{"--reconnect-max", "0s", "--cloud", "a:1", "--data-dir", data}, "--reconnect-max"},
		{"tether-edge", []string{"--write-timeout", "0s", "--cloud", "a:1", "--data-dir", data}, "--write-timeout"},
		{"tether-edge", []string{"--mqtt-max-clients", "0", "--cloud", "a:1", "--data-dir", data}, "--mqtt-max-clients"},
		{"tether-edge", []string{"--mqtt-max-packet-bytes", "0", "--cloud", "a:1", "--data-dir", data}, "--mqtt-max-packet-bytes"},
		{"tether-edge", []string{"--mqtt-listen", "1883", "--cloud", "a:1", "--data-dir", data}, "--mqtt-listen"},
		{"tether-edge", []string{"--cert-renew-at", "1.5", "--cloud", "a:1", "--data-dir", data}, "--cert-renew-at"},
		// Join settings are checked at startup, before the data dir is created or the join is tried.
		{"tether-edge", []string{"--node-name", "x", "--join", "http://127.0.0.1:21002", "--token", wellFormedToken, "--cloud", "a:1", "--data-dir", data}, "--join"},
		{"tether-edge", []string{"--node-name", "x", "--join", "127.0.0.1:21002", "--token", wellFormedToken, "--cloud", "a:1", "--data-dir", data}, "--join"},
		{"tether-edge", []string{"--node-name", "x", "--join", "https://127.0.0.1:21002", "--token", "tether1.abc", "--cloud", "a:1", "--data-dir", data}, "--token"},
		{"tether-edge", []string{"--node-name", "X_1", "--join", "https://127.0.0.1:21002", "--token", wellFormedToken, "--cloud", "a:1", "--data-dir", data}, "--node-name"},
		{"tether-edge", []string{"--node-name", "x", "--cloud", "a:1", "--data-dir", data}, "--join"},
	}
	for _, c := range cases {
		// A regression here (a retry loop instead of an exit) must fail the test, not hang it.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, c.prog), c.args...)
		out, err := cmd.CombinedOutput()
		cancel()
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

// wellFormedToken parses as a join token; no cloud issued it.
var wellFormedToken = "tether1." + strings.Repeat("0", 64) + ".abcdef.0123456789abcdef"

// TestHelpExits0: --help (and -h) prints the usage on stdout and exits 0, without an error line.
func TestHelpExits0(t *testing.T) {
	for _, c := range []struct {
		prog string
		args []string
	}{
		{"tether-cloud", []string{"--help"}},
		{"tether-cloud", []string{"serve", "--help"}},
		{"tether-cloud", []string{"token", "create", "--help"}},
		{"tether-cloud", []string{"token", "--help"}},
		{"tether-edge", []string{"--help"}},
		{"tether-edge", []string{"run", "-h"}},
		{"tether-sim", []string{"--help"}},
		{"tether-sim", []string{"mapper", "--help"}},
	} {
		cmd := exec.Command(filepath.Join(binDir, c.prog), c.args...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Errorf("%s %v: %v (want exit 0)\nstdout: %s\nstderr: %s", c.prog, c.args, err, stdout.String(), stderr.String())
			continue
		}
		if !strings.Contains(strings.ToLower(stdout.String()), "usage") || stderr.Len() != 0 {
			t.Errorf("%s %v: want the usage on stdout and nothing on stderr\nstdout: %s\nstderr: %s", c.prog, c.args, stdout.String(), stderr.String())
		}
	}
}

// TestEdgeStopsWhileJoining: SIGTERM while the edge waits for an unreachable join service is a
// requested stop, so exit 0 (SPEC §1), and promptly.
func TestEdgeStopsWhileJoining(t *testing.T) {
	p := start(t, "tether-edge", "run", "--node-name", "waiting", "--cloud", freePort(t), "--join", "https://"+freePort(t),
		"--token", wellFormedToken, "--data-dir", t.TempDir(), "--metaserver-listen", freePort(t), "--mqtt-listen", freePort(t))
	waitFor(t, 20*time.Second, "a join attempt", func() bool { return strings.Contains(p.log.String(), "cannot reach the join service") })
	p.stop()
}

// TestServerCertificateCoversListenIPs: the certificate the hub, join and API ports share names
// the specific IPs they listen on, so a client dialing that IP verifies it without
// --advertise-address.
func TestServerCertificateCoversListenIPs(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("open-sesame\n"), 0o600)
	// 127.0.0.2 is loopback but not one of the names always in the certificate.
	_, joinPort, _ := net.SplitHostPort(freePort(t))
	joinAddr := "127.0.0.2:" + joinPort
	// And the operator's case: the API bound to a non-loopback address of this host.
	var hostIP string
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				hostIP = n.IP.String()
				break
			}
		}
	}
	args := []string{"--data-dir", filepath.Join(dir, "cloud"), "--hub-listen", freePort(t), "--join-listen", joinAddr,
		"--advertise-address", "cloud.example"}
	api := freePort(t)
	if hostIP != "" {
		_, port, _ := net.SplitHostPort(api)
		api = net.JoinHostPort(hostIP, port)
		args = append(args, "--api-token-file", tokens)
	}
	args = append(args, "--api-listen", api)
	p := start(t, "tether-cloud", args...)
	caFile := filepath.Join(dir, "cloud", "ca.crt")
	waitFor(t, 20*time.Second, "CA written", func() bool { b, _ := os.ReadFile(caFile); return len(b) > 0 })
	caPEM, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	dial := func(addr string) error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool})
		if err != nil {
			return err
		}
		return conn.Close()
	}
	var last error
	waitFor(t, 20*time.Second, "join port verifies at "+joinAddr, func() bool {
		last = dial(joinAddr)
		var unknown x509.HostnameError
		if errors.As(last, &unknown) {
			t.Fatalf("join port at %s: %v", joinAddr, last)
		}
		return last == nil
	})
	if hostIP == "" {
		t.Log("no non-loopback IPv4 address on this host: API case skipped")
	} else {
		waitFor(t, 20*time.Second, "API verifies at "+api, func() bool {
			last = dial(api)
			var unknown x509.HostnameError
			if errors.As(last, &unknown) {
				t.Fatalf("API at %s: %v", api, last)
			}
			return last == nil
		})
	}
	p.stop()
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
