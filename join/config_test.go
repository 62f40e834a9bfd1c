package join_test

import (
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/join"
	"github.com/tetherhub/tether/pki"
)

func TestConfig(t *testing.T) {
	def := join.DefaultConfig()
	if err := def.Validate(); err != nil {
		t.Fatalf("DefaultConfig does not validate: %v", err)
	}
	if def.CertValidity != 90*24*time.Hour || def.MaxBodyBytes != 64<<10 {
		t.Errorf("DefaultConfig = %+v", def)
	}
	for _, tt := range []struct {
		name   string
		change func(*join.Config)
		field  string
	}{
		{"validity zero", func(c *join.Config) { c.CertValidity = 0 }, "CertValidity"},
		{"validity a minute", func(c *join.Config) { c.CertValidity = time.Minute }, "CertValidity"},
		{"validity a century", func(c *join.Config) { c.CertValidity = 100 * 365 * 24 * time.Hour }, "CertValidity"},
		{"body zero", func(c *join.Config) { c.MaxBodyBytes = 0 }, "MaxBodyBytes"},
		{"body huge", func(c *join.Config) { c.MaxBodyBytes = 1 << 30 }, "MaxBodyBytes"},
		{"timeout zero", func(c *join.Config) { c.Timeout = 0 }, "Timeout"},
	} {
		c := join.DefaultConfig()
		tt.change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: Validate() = %v, want an error naming %s", tt.name, err, tt.field)
		}
	}
}

func TestNewServerChecks(t *testing.T) {
	ca, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tokens, nodes := &fakeTokens{}, &fakeNodes{}
	if _, err := join.NewServer(nil, tokens, nodes, join.DefaultConfig(), zerolog.Nop(), nil); err == nil {
		t.Error("nil CA accepted")
	}
	if _, err := join.NewServer(ca, nil, nodes, join.DefaultConfig(), zerolog.Nop(), nil); err == nil {
		t.Error("nil Tokens accepted")
	}
	if _, err := join.NewServer(ca, tokens, nil, join.DefaultConfig(), zerolog.Nop(), nil); err == nil {
		t.Error("nil Nodes accepted")
	}
	if _, err := join.NewServer(ca, tokens, nodes, join.Config{}, zerolog.Nop(), nil); err == nil {
		t.Error("zero Config accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := join.NewServer(ca, tokens, nodes, join.DefaultConfig(), zerolog.Nop(), reg); err != nil {
		t.Fatal(err)
	}
	var are prometheus.AlreadyRegisteredError
	if _, err := join.NewServer(ca, tokens, nodes, join.DefaultConfig(), zerolog.Nop(), reg); !errors.As(err, &are) {
		t.Errorf("second server on one registry: err = %v, want AlreadyRegisteredError", err)
	}
}

func TestConfigClockAndValidity(t *testing.T) {
	// Within the CA's validity (it is backdated an hour), so no clamping is involved.
	issued := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	e := newEnv(t, func(c *join.Config) {
		c.CertValidity = 2 * time.Hour
		c.Now = func() time.Time { return issued }
	})
	tok := e.token("edge-1", time.Hour)
	key, _ := pki.NewKey()
	certPEM, _, err := join.Join(ctxT(t), e.url, tok, "edge-1", nil, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCert(t, certPEM)
	if !cert.NotBefore.Equal(issued.Add(-time.Minute)) || !cert.NotAfter.Equal(issued.Add(2*time.Hour)) {
		t.Errorf("validity %s – %s, want from the injected clock %s for 2h", cert.NotBefore, cert.NotAfter, issued)
	}
}

func TestServerSmallBodyLimit(t *testing.T) {
	e := newEnv(t, func(c *join.Config) { c.MaxBodyBytes = 4 << 10 })
	status, body := e.do(http.MethodPost, "/v1/join", "application/json", strings.NewReader(`{"csr":"`+strings.Repeat("x", 5<<10)+`"}`))
	if status != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "larger than 4096 bytes") {
		t.Errorf("got %d %s", status, body)
	}
}

func TestValidateLabels(t *testing.T) {
	valid := []map[string]string{
		nil,
		{},
		{"zone": "north"},
		{"a": ""},
		{"example.com/zone": "n-1_2.3"},
		{"kubernetes.io/hostname": "edge-1"},
		{"Zone_1.x": "A"},
		{strings.Repeat("k", 63): strings.Repeat("v", 63)},
		{strings.Repeat("p", 253) + "/k": "v"},
	}
	invalid := []map[string]string{
		{"": "v"},
		{"/zone": "v"},
		{"example.com/": "v"},
		{"a/b/c": "v"},
		{"-zone": "v"},
		{"zone-": "v"},
		{"zo ne": "v"},
		{strings.Repeat("k", 64): "v"},
		{strings.Repeat("p", 254) + "/k": "v"},
		{"zone": "-v"},
		{"zone": "v v"},
		{"zone": strings.Repeat("v", 64)},
		{"zone": "é"},
		{"apps.kubeedge.io/belonging-to": "group-a"},
	}
	for _, l := range valid {
		if err := join.ValidateLabels(l); err != nil {
			t.Errorf("ValidateLabels(%v) = %v, want nil", l, err)
		}
	}
	for _, l := range invalid {
		if err := join.ValidateLabels(l); err == nil {
			t.Errorf("ValidateLabels(%v) = nil, want an error", l)
		}
	}
	// Deterministic: the first bad key in sorted order is named.
	for range 20 {
		err := join.ValidateLabels(map[string]string{"b b": "", "a a": "", "c c": ""})
		if err == nil || !strings.Contains(err.Error(), `"a a"`) {
			t.Fatalf("err = %v, want the first key in order", err)
		}
	}
}

func TestErrorIs(t *testing.T) {
	for code, sentinel := range map[string]error{
		join.CodeTokenUnknown:   join.ErrTokenUnknown,
		join.CodeTokenExpired:   join.ErrTokenExpired,
		join.CodeTokenWrongNode: join.ErrTokenWrongNode,
		join.CodeCAMismatch:     join.ErrCAMismatch,
	} {
		err := error(&join.Error{Status: 401, Code: code, Message: "m"})
		if !errors.Is(err, sentinel) {
			t.Errorf("code %s does not match %v", code, sentinel)
		}
		if errors.Is(&join.Error{Status: 400, Code: join.CodeInvalidCSR}, sentinel) {
			t.Errorf("invalid_csr matches %v", sentinel)
		}
	}
	if got := (&join.Error{Status: 403, Code: "token_wrong_node", Message: "m."}).Error(); got != "join: server refused (403 token_wrong_node): m." {
		t.Errorf("Error() = %q", got)
	}
}
