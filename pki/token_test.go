package pki_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/tetherhub/tether/pki"
)

const testHash = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var tokenRE = regexp.MustCompile(`^tether1\.[0-9a-f]{64}\.[a-z0-9]{6}\.[a-z0-9]{16}$`)

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	counts := map[rune]int{}
	for range 200 {
		tok, err := pki.NewToken(testHash)
		if err != nil {
			t.Fatal(err)
		}
		s := tok.String()
		if !tokenRE.MatchString(s) {
			t.Fatalf("token %q does not match %s", s, tokenRE)
		}
		if tok.CAHash != testHash {
			t.Fatalf("CAHash = %q", tok.CAHash)
		}
		if seen[tok.Secret] {
			t.Fatal("secret repeated")
		}
		seen[tok.Secret] = true
		for _, c := range tok.ID + tok.Secret {
			counts[c]++
		}
	}
	// 4400 characters over 36 symbols: every symbol shows up if the draw is uniform.
	if len(counts) != 36 {
		t.Errorf("only %d of 36 symbols drawn", len(counts))
	}
	for _, bad := range []string{"", "0123", strings.TrimPrefix(testHash, "sha256:"), "sha256:" + strings.ToUpper(testHash[7:]), "md5:" + testHash[7:]} {
		if _, err := pki.NewToken(bad); err == nil {
			t.Errorf("NewToken(%q) accepted", bad)
		}
	}
}

func TestParseTokenRoundTrip(t *testing.T) {
	tok, err := pki.NewToken(testHash)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{tok.String(), tok.String() + "\n", "  " + tok.String() + "\r\n"} {
		got, err := pki.ParseToken(s)
		if err != nil {
			t.Fatalf("ParseToken(%q): %v", s, err)
		}
		if got != tok {
			t.Fatalf("ParseToken round trip: got %#v, want %#v", got.String(), tok.String())
		}
	}
	fixed := "tether1.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.abc123.0123456789abcdef"
	got, err := pki.ParseToken(fixed)
	if err != nil {
		t.Fatal(err)
	}
	if got.CAHash != testHash || got.ID != "abc123" || got.Secret != "0123456789abcdef" || got.String() != fixed {
		t.Errorf("ParseToken(%s) = {%s %s %s}", fixed, got.CAHash, got.ID, got.Secret)
	}
}

func TestParseTokenRejects(t *testing.T) {
	const (
		hash   = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		secret = "s3cr3ts3cr3ts3cr"
	)
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "empty"},
		{"blank", " \n\t", "empty"},
		{"kubeadm token", "abcdef.0123456789abcdef", "does not start with"},
		{"k3s token", "K10" + hash + "::server:" + secret, "does not start with"},
		{"other version", "tether2." + hash + ".abc123." + secret, "does not start with"},
		{"upper prefix", "TETHER1." + hash + ".abc123." + secret, "does not start with"},
		{"three parts", "tether1." + hash + ".abc123", "4 dot-separated parts"},
		{"five parts", "tether1." + hash + ".abc123." + secret + ".x", "4 dot-separated parts"},
		{"sha256 prefix in hash", "tether1.sha256:" + hash + ".abc123." + secret, "CA hash"},
		{"short hash", "tether1." + hash[:63] + ".abc123." + secret, "CA hash"},
		{"upper hash", "tether1." + strings.ToUpper(hash) + ".abc123." + secret, "CA hash"},
		{"non-hex hash", "tether1." + strings.Repeat("g", 64) + ".abc123." + secret, "CA hash"},
		{"short id", "tether1." + hash + ".abc12." + secret, "token ID"},
		{"upper id", "tether1." + hash + ".ABC123." + secret, "token ID"},
		{"id with dash", "tether1." + hash + ".abc-12." + secret, "token ID"},
		{"short secret", "tether1." + hash + ".abc123." + secret[:15], "token secret"},
		{"long secret", "tether1." + hash + ".abc123." + secret + "x", "token secret"},
		{"secret with space", "tether1." + hash + ".abc123." + secret[:8] + " " + secret[9:], "token secret"},
		{"unicode secret", "tether1." + hash + ".abc123." + secret[:14] + "é", "token secret"},
		{"NUL", "tether1." + hash + ".abc123." + secret[:15] + "\x00", "token secret"},
		{"huge", "tether1." + strings.Repeat(secret, 1000), "characters, a token has 96"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pki.ParseToken(tt.in)
			if !errors.Is(err, pki.ErrMalformedToken) {
				t.Fatalf("err = %v, want ErrMalformedToken", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret[:8]) {
				t.Errorf("error %q repeats the secret", err)
			}
		})
	}
}

func TestTokenNeverPrintsSecret(t *testing.T) {
	tok, err := pki.NewToken(testHash)
	if err != nil {
		t.Fatal(err)
	}
	red := tok.Redacted()
	if want := "tether1.01234567…." + tok.ID + ".<redacted>"; red != want {
		t.Errorf("Redacted() = %q", red)
	}
	js, err := json.Marshal(map[string]any{"token": tok, "ptr": &tok})
	if err != nil {
		t.Fatal(err)
	}
	wrapped := struct{ T pki.Token }{tok}
	for _, s := range []string{
		red,
		fmt.Sprint(tok), fmt.Sprintf("%s", tok), fmt.Sprintf("%v", tok), fmt.Sprintf("%+v", tok),
		fmt.Sprintf("%#v", tok), fmt.Sprintf("%q", tok), fmt.Sprintf("%v", &tok), fmt.Sprintf("%+v", wrapped),
		fmt.Errorf("join with %v failed", tok).Error(),
		string(js),
	} {
		if strings.Contains(s, tok.Secret) {
			t.Errorf("%q contains the secret", s)
		}
		if !strings.Contains(s, tok.ID) {
			t.Errorf("%q lost the token ID, which logs need", s)
		}
	}
	if !strings.Contains(tok.String(), tok.Secret) {
		t.Error("String() must be the full token")
	}
}

func TestSecretDigest(t *testing.T) {
	tok, err := pki.NewToken(testHash)
	if err != nil {
		t.Fatal(err)
	}
	d := pki.SecretDigest(tok.Secret)
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(d) || strings.Contains(d, tok.Secret) {
		t.Fatalf("SecretDigest = %q", d)
	}
	// A known vector, so the stored format cannot drift between releases.
	if got := pki.SecretDigest("0123456789abcdef"); got != "9f9f5111f7b27a781f1f1ddde5ebc2dd2b796bfc7365c9c28b548e564176929f" {
		t.Errorf("SecretDigest(0123456789abcdef) = %s", got)
	}
	if !pki.SecretMatches(d, tok.Secret) {
		t.Error("SecretMatches rejects the right secret")
	}
	for _, wrong := range []string{"", tok.Secret[:15], tok.Secret + "x", strings.ToUpper(tok.Secret), d} {
		if pki.SecretMatches(d, wrong) {
			t.Errorf("SecretMatches accepts %q", wrong)
		}
	}
	if pki.SecretMatches("", "") || pki.SecretMatches(d[:63], tok.Secret) {
		t.Error("SecretMatches accepts a truncated or empty digest")
	}
}
