package main

import (
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/cli"
)

func validated(t *testing.T, args ...string) (*config, error) {
	t.Helper()
	var c config
	if err := cli.Load(flags(&c, io.Discard), args); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return &c, validate(&c)
}

// TestFlagLimits: a value just outside a flag's range is refused naming the flag, and the value
// at the edge of the range passes the whole validation, the packages' own checks included (so
// the limits here have not drifted from theirs).
func TestFlagLimits(t *testing.T) {
	for _, c := range []struct{ flag, ok, bad string }{
		{"heartbeat", "1ns", "0s"},
		{"node-grace-period", "1ns", "-1s"},
		{"node-status-interval", "1ns", "0s"},
		{"progress-interval", "1ns", "0s"},
		{"write-timeout", "1ns", "0s"},
		{"slow-node-timeout", "1ns", "0s"},
		{"node-window", "1", "0"},
		{"node-window", "16384", "16385"},
		{"max-message-bytes", "1114112", "1114111"},
		{"cert-validity", "1h", "59m59s"},
		{"cert-validity", "87600h", "87600h1s"},
		{"max-body-bytes", "1024", "1023"},
		{"max-watches", "1", "0"},
		{"history", "1000", "999"},
		{"watch-cache", "1", "0"},
		{"watch-cache-window", "0s", "-1s"},
		{"watch-cache-bytes", "0", "-1"},
		{"hub-listen", "127.0.0.1:0", "127.0.0.1"},
		{"advertise-address", "Cloud.Example.", "cloud.example:10000"},
		{"store", "embedded", "mongo"},
	} {
		if _, err := validated(t, "--"+c.flag, c.ok); err != nil {
			t.Errorf("--%s %s: %v", c.flag, c.ok, err)
		}
		_, err := validated(t, "--"+c.flag, c.bad)
		if !cli.IsUsage(err) || !strings.HasPrefix(err.Error(), "--"+c.flag+": ") {
			t.Errorf("--%s %s: %v, want a usage error naming the flag", c.flag, c.bad, err)
		}
	}
}

// TestCertHostsNameListenIPs: the shared server certificate names each specific listen IP,
// but not a wildcard.
func TestCertHostsNameListenIPs(t *testing.T) {
	c := &config{advertise: []string{"cloud.example"}, hubListen: "[::]:1", joinListen: "127.0.0.2:2", apiListen: "0.0.0.0:3"}
	if got := certHosts(c); !slices.Equal(got, []string{"cloud.example", "127.0.0.2"}) {
		t.Fatalf("hosts = %v", got)
	}
	c.apiListen = "192.0.2.2:10080"
	if got := certHosts(c); !slices.Equal(got, []string{"cloud.example", "127.0.0.2", "192.0.2.2"}) {
		t.Fatalf("hosts = %v", got)
	}
	if !slices.Equal(c.advertise, []string{"cloud.example"}) {
		t.Fatalf("certHosts changed --advertise-address: %v", c.advertise)
	}
}

// TestListenerLimit: past maxConns connections at once, the next waits to be accepted (a client
// that opens connections and stalls them cannot use up the file descriptors); it is served once
// one of them closes.
func TestListenerLimit(t *testing.T) {
	ln, err := limitedListen("127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()
	var stalled []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		stalled = append(stalled, c)
	}
	get := func() error {
		c := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get("http://" + addr)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	time.Sleep(100 * time.Millisecond) // both stalled connections accepted
	if err := get(); err == nil {
		t.Fatal("a third connection was served while two stalled ones held the limit")
	}
	stalled[0].Close()
	if err := get(); err != nil {
		t.Fatalf("after one stalled connection closed: %v", err)
	}
}
