package pki_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/pki"
)

// FuzzParseToken: any string either fails with ErrMalformedToken or parses into a token whose
// String is the trimmed input, so parsing and printing agree and nothing panics. Seeds are in
// testdata/fuzz/FuzzParseToken.
func FuzzParseToken(f *testing.F) {
	f.Add("tether1.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.abc123.0123456789abcdef")
	f.Add("")
	f.Add("tether1....")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := pki.ParseToken(s)
		if err != nil {
			if tok != (pki.Token{}) {
				t.Fatalf("error %v with a non-zero token", err)
			}
			return
		}
		if tok.String() != strings.TrimSpace(s) {
			t.Fatalf("String() = %q, input %q", tok.String(), s)
		}
		again, err := pki.ParseToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("re-parse: %v, %v", again, err)
		}
		if strings.Contains(tok.Redacted(), tok.Secret) {
			t.Fatal("Redacted contains the secret")
		}
	})
}

// FuzzSignCSR: arbitrary bytes as a CSR never panic, and whatever is accepted becomes a
// certificate for exactly the requested node. Seeds are in testdata/fuzz/FuzzSignCSR.
func FuzzSignCSR(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ca, err := pki.LoadOrCreateCA(f.TempDir(), now)
	if err != nil {
		f.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		f.Fatal(err)
	}
	good, err := pki.CreateCSR(key, "edge-1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(bytes.ReplaceAll(good, []byte("\n"), []byte("\r\n")))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certPEM, err := ca.SignCSR(data, "edge-1", time.Hour, now)
		if err != nil {
			if certPEM != nil {
				t.Fatal("certificate returned with an error")
			}
			return
		}
		cert := parseCert(t, certPEM)
		if name, err := pki.NodeNameFromCert(cert); err != nil || name != "edge-1" {
			t.Fatalf("issued for %q (%v), want edge-1", name, err)
		}
		if err := cert.CheckSignatureFrom(ca.Certificate()); err != nil {
			t.Fatalf("issued certificate does not verify: %v", err)
		}
	})
}
