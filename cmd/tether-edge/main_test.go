package main

import (
	"io"
	"strings"
	"testing"

	"github.com/tetherhub/tether/cli"
)

const wellFormedToken = "tether1.0000000000000000000000000000000000000000000000000000000000000000.abcdef.0123456789abcdef"

func validated(t *testing.T, args ...string) (*config, error) {
	t.Helper()
	var c config
	if err := cli.Load(flags(&c, io.Discard), append([]string{"--cloud", "127.0.0.1:10000"}, args...)); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return &c, validate(&c)
}

// TestFlagLimits: a value just outside a flag's range is refused naming the flag, and the value
// at the edge of the range passes the whole validation, the packages' own checks included (so
// the limits here have not drifted from theirs).
func TestFlagLimits(t *testing.T) {
	for _, c := range []struct{ flag, ok, bad string }{
		{"cloud", "a:1,b:2", "nohost"},
		{"write-timeout", "1ns", "0s"},
		{"reconnect-max", "500ms", "499ms"},
		{"report-window", "1", "0"},
		{"report-window", "16384", "16385"},
		{"cert-renew-at", "0.01", "0"},
		{"cert-renew-at", "0.99", "1"},
		{"mqtt-listen", "127.0.0.1:1883", "1883"},
		{"mqtt-max-packet-bytes", "128", "127"},
		{"mqtt-max-packet-bytes", "268435460", "268435461"},
		{"mqtt-max-clients", "1", "0"},
		{"mqtt-max-subscriptions", "1", "0"},
		{"mqtt-max-clients", "2147482647", "2147482648"},
		{"metaserver-listen", "127.0.0.1:0", "nohost"},
		{"metaserver-max-connections", "1", "0"},
		{"metaserver-max-watches", "1", "0"},
		{"max-devices", "1", "0"},
		{"twin-max-value-length", "1", "0"},
		{"device-status-interval", "1ns", "0s"},
		{"device-status-rate", "1", "0"},
		{"outbox-limit", "1", "0"},
		{"memory-limit-mib", "0", "-1"},
		{"node-name", "edge-1", "Edge_1"},
		{"node-labels", "zone=east", "bad label=x"},
		{"join", "https://127.0.0.1:10002", "http://127.0.0.1:10002"},
		{"join", "https://cloud.example:10002", "127.0.0.1:10002"},
		{"join", "https://cloud.example:10002/", "https://user@cloud.example:10002"},
		{"token", wellFormedToken, "tether1.abc"},
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

// TestTokenNeverInErrors: a malformed token is reported by what is wrong with it, not by value.
func TestTokenNeverInErrors(t *testing.T) {
	secretish := strings.Replace(wellFormedToken, "0123456789abcdef", "0123456789ABCDEF", 1)
	_, err := validated(t, "--token", secretish)
	if err == nil || strings.Contains(err.Error(), "0123456789ABCDEF") {
		t.Fatalf("err = %v", err)
	}
}
