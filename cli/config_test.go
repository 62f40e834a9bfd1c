package cli

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func testFlags() (*pflag.FlagSet, *string, *time.Duration, *[]string, *map[string]string, *string) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("config", "", "")
	name := fs.String("node-name", "default", "")
	hb := fs.Duration("heartbeat", 15*time.Second, "")
	cloud := fs.StringSlice("cloud", nil, "")
	labels := fs.StringToString("node-labels", nil, "")
	token := fs.String("token", "", "")
	MarkSecret(fs, "token")
	return fs, name, hb, cloud, labels, token
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFileThenFlags(t *testing.T) {
	fs, name, hb, cloud, labels, _ := testFlags()
	p := writeFile(t, "node-name: from-file\nheartbeat: 5s\ncloud: [a:1, b:2]\nnode-labels: {zone: east, tier: gold}\n")
	if err := Load(fs, []string{"--config", p, "--node-name", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if *name != "from-flag" || *hb != 5*time.Second || strings.Join(*cloud, ",") != "a:1,b:2" || (*labels)["zone"] != "east" || (*labels)["tier"] != "gold" {
		t.Fatalf("got name=%s hb=%s cloud=%v labels=%v", *name, *hb, *cloud, *labels)
	}
}

func TestBadConfigNamesTheKey(t *testing.T) {
	for body, want := range map[string]string{
		"nodename: x\n":           `unknown key "nodename"`,
		"heartbeat: soon\n":       `key "heartbeat"`,
		"heartbeat: [1, 2\n":      "not valid YAML",
		"node-labels: {a: [1]}\n": `key "node-labels"`,
	} {
		fs, _, _, _, _, _ := testFlags()
		err := Load(fs, []string{"--config", writeFile(t, body)})
		if err == nil || !IsUsage(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want a usage error with %q", body, err, want)
		}
	}
	fs, _, _, _, _, _ := testFlags()
	if err := Load(fs, []string{"--heartbeat", "x"}); !IsUsage(err) {
		t.Errorf("bad flag: %v", err)
	}
	fs, _, _, _, _, _ = testFlags()
	if err := Load(fs, []string{"--config", "/does/not/exist"}); !IsUsage(err) {
		t.Errorf("missing file: %v", err)
	}
}

func TestPrintHidesSecretsAndRoundTrips(t *testing.T) {
	fs, _, _, _, _, _ := testFlags()
	if err := Load(fs, []string{"--token", "s3cret", "--cloud", "a:1,b:2", "--heartbeat", "7s"}); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Print(fs, &b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "s3cret") || !strings.Contains(out, "token: <redacted>") {
		t.Fatalf("print-config leaks or drops the secret:\n%s", out)
	}
	// What Print writes (secret aside) Load reads back.
	fs2, _, hb, cloud, _, _ := testFlags()
	body := strings.ReplaceAll(out, "token: <redacted>\n", "")
	if err := Load(fs2, []string{"--config", writeFile(t, body)}); err != nil {
		t.Fatalf("reload of printed config: %v\n%s", err, body)
	}
	if *hb != 7*time.Second || strings.Join(*cloud, ",") != "a:1,b:2" {
		t.Fatalf("round trip: hb=%s cloud=%v", *hb, *cloud)
	}
}

func TestLogger(t *testing.T) {
	var b bytes.Buffer
	l, err := NewLogger(&b, "json", "info", "p")
	if err != nil {
		t.Fatal(err)
	}
	l.Debug().Msg("hidden")
	l.Info().Msg("shown")
	if strings.Contains(b.String(), "hidden") || !strings.Contains(b.String(), `"program":"p"`) {
		t.Fatalf("log = %s", b.String())
	}
	if _, err := NewLogger(&b, "xml", "info", "p"); !IsUsage(err) {
		t.Fatal("bad format accepted")
	}
	if _, err := NewLogger(&b, "json", "loud", "p"); !IsUsage(err) {
		t.Fatal("bad level accepted")
	}
}

func TestHelpIsNotAnError(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var out bytes.Buffer
		fs := NewFlagSet("t", &out)
		fs.String("node-name", "", "this node's name")
		err := Load(fs, []string{arg})
		if !errors.Is(err, pflag.ErrHelp) || !strings.Contains(out.String(), "--node-name") {
			t.Fatalf("%s: err = %v, usage on stdout %q", arg, err, out.String())
		}
		var stderr bytes.Buffer
		if code := Exit("t", err, &stderr); code != 0 || stderr.Len() != 0 {
			t.Fatalf("%s: exit %d, stderr %q", arg, code, stderr.String())
		}
	}
}

func TestPositionalArgumentsAreRefused(t *testing.T) {
	for _, args := range [][]string{{"extra"}, {"--node-name", "x", "extra"}, {"--", "extra"}} {
		fs, _, _, _, _, _ := testFlags()
		err := Load(fs, args)
		if !IsUsage(err) || !strings.Contains(err.Error(), `"extra"`) {
			t.Errorf("%q: err = %v, want a usage error naming the argument", args, err)
		}
	}
}

func TestCheckFlagsNamesTheFlag(t *testing.T) {
	err := CheckFlags(
		Flag("a", Positive(time.Second)),
		Flag("b", AtLeast(0, 1)),
		Flag("c", Between(5, 1, 3)),
	)
	if !IsUsage(err) || err.Error() != "--b: must be at least 1, got 0" {
		t.Fatalf("err = %v", err)
	}
	if err := CheckFlags(Flag("a", nil), Flag("b", Between(2, 1, 3))); err != nil {
		t.Fatalf("err = %v", err)
	}
	for addr, ok := range map[string]bool{"127.0.0.1:80": true, ":10000": true, "[::1]:1": true, "1883": false, "h:http": false, "h:70000": false} {
		if err := HostPort(addr); (err == nil) != ok {
			t.Errorf("HostPort(%q) = %v", addr, err)
		}
	}
}
