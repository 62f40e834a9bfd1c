package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/pki"
)

// t0 is a fixed clock for tests that look at certificate fields; tests that run a real TLS
// handshake use time.Now, because crypto/tls verifies against the wall clock.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newCA(t testing.TB, now time.Time) (*pki.CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := pki.LoadOrCreateCA(dir, now)
	if err != nil {
		t.Fatalf("LoadOrCreateCA: %v", err)
	}
	return ca, dir
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestLoadOrCreateCACreates(t *testing.T) {
	ca, dir := newCA(t, t0)
	cert := ca.Certificate()

	if cert.Subject.CommonName != "tether-ca" {
		t.Errorf("CN = %q, want tether-ca", cert.Subject.CommonName)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("not a CA: IsCA=%v BasicConstraintsValid=%v KeyUsage=%v", cert.IsCA, cert.BasicConstraintsValid, cert.KeyUsage)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", cert.PublicKey)
	}
	if want := t0.AddDate(10, 0, 0); !cert.NotAfter.Equal(want) {
		t.Errorf("NotAfter = %s, want %s", cert.NotAfter, want)
	}
	if cert.NotBefore.After(t0) {
		t.Errorf("NotBefore = %s is after creation time %s", cert.NotBefore, t0)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if m := fileMode(t, filepath.Join(dir, "ca.crt")); m != 0o644 {
		t.Errorf("ca.crt mode %v, want 0644", m)
	}
	if m := fileMode(t, filepath.Join(dir, "ca.key")); m != 0o600 {
		t.Errorf("ca.key mode %v, want 0600", m)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, ca.CertPEM()) {
		t.Error("CertPEM differs from ca.crt")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir has %d entries (temp files left behind?), want 2", len(entries))
	}
}

func TestLoadOrCreateCAIsIdempotent(t *testing.T) {
	ca1, dir := newCA(t, t0)
	certBefore, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	keyBefore, _ := os.ReadFile(filepath.Join(dir, "ca.key"))

	// A later start loads what the first one created, byte for byte.
	for i := range 3 {
		ca2, err := pki.LoadOrCreateCA(dir, t0.Add(time.Duration(i+1)*24*time.Hour))
		if err != nil {
			t.Fatalf("load %d: %v", i, err)
		}
		if ca2.Hash() != ca1.Hash() {
			t.Fatalf("load %d: hash %s, want %s", i, ca2.Hash(), ca1.Hash())
		}
		if !bytes.Equal(ca2.CertPEM(), ca1.CertPEM()) {
			t.Fatalf("load %d: certificate changed", i)
		}
	}
	certAfter, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	keyAfter, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
	if !bytes.Equal(certBefore, certAfter) || !bytes.Equal(keyBefore, keyAfter) {
		t.Error("loading rewrote the CA files")
	}
}

func TestLoadOrCreateCARefusesBadFiles(t *testing.T) {
	_, dirA := newCA(t, t0)
	_, dirB := newCA(t, t0)
	read := func(dir, name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name    string
		files   map[string][]byte
		now     time.Time
		wantMsg string
	}{
		{"cert without key", map[string][]byte{"ca.crt": read(dirA, "ca.crt")}, t0, "ca.key does not"},
		{"key without cert", map[string][]byte{"ca.key": read(dirA, "ca.key")}, t0, "ca.crt does not"},
		{"key of another CA", map[string][]byte{"ca.crt": read(dirA, "ca.crt"), "ca.key": read(dirB, "ca.key")}, t0, "does not hold the private key"},
		{"garbage cert", map[string][]byte{"ca.crt": []byte("not a cert"), "ca.key": read(dirA, "ca.key")}, t0, "no PEM CERTIFICATE"},
		{"garbage key", map[string][]byte{"ca.crt": read(dirA, "ca.crt"), "ca.key": []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}, t0, "ca.key"},
		{"expired", map[string][]byte{"ca.crt": read(dirA, "ca.crt"), "ca.key": read(dirA, "ca.key")}, t0.AddDate(11, 0, 0), "expired"},
		{"clock behind", map[string][]byte{"ca.crt": read(dirA, "ca.crt"), "ca.key": read(dirA, "ca.key")}, t0.AddDate(-1, 0, 0), "system clock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := pki.LoadOrCreateCA(dir, tt.now)
			if !errors.Is(err, pki.ErrBadCA) {
				t.Fatalf("err = %v, want ErrBadCA", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
			// Nothing may be created or replaced next to a half or broken CA.
			entries, _ := os.ReadDir(dir)
			if len(entries) != len(tt.files) {
				t.Errorf("dir has %d files after the error, want %d", len(entries), len(tt.files))
			}
		})
	}
}

func TestHashIsSHA256OfSPKI(t *testing.T) {
	ca, _ := newCA(t, t0)
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(ca.Hash()) {
		t.Fatalf("Hash() = %q, want sha256:<64 hex>", ca.Hash())
	}
	sum := sha256.Sum256(ca.Certificate().RawSubjectPublicKeyInfo)
	if want := "sha256:" + hex.EncodeToString(sum[:]); ca.Hash() != want || pki.CertHash(ca.Certificate()) != want {
		t.Errorf("Hash() = %s, CertHash = %s, want %s", ca.Hash(), pki.CertHash(ca.Certificate()), want)
	}
	other, _ := newCA(t, t0)
	if other.Hash() == ca.Hash() {
		t.Error("two CAs have the same hash")
	}
}

func TestIssueServer(t *testing.T) {
	ca, _ := newCA(t, t0)
	cert, err := ca.IssueServer([]string{"hub.example.com", "10.0.0.7", " Edge-GW.Example.com. ", "", "10.0.0.7", "2001:db8::1"}, 365*24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if leaf == nil || cert.PrivateKey == nil || len(cert.Certificate) != 1 {
		t.Fatalf("incomplete tls.Certificate: %+v", cert)
	}
	wantDNS := []string{"localhost", "hub.example.com", "edge-gw.example.com"}
	if strings.Join(leaf.DNSNames, ",") != strings.Join(wantDNS, ",") {
		t.Errorf("DNSNames = %v, want %v", leaf.DNSNames, wantDNS)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := "127.0.0.1,::1,10.0.0.7,2001:db8::1"; strings.Join(ips, ",") != want {
		t.Errorf("IPAddresses = %v, want %s", ips, want)
	}
	if !leaf.NotAfter.Equal(t0.Add(365 * 24 * time.Hour)) {
		t.Errorf("NotAfter = %s", leaf.NotAfter)
	}
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "hub.example.com", "10.0.0.7", "2001:db8::1"} {
		_, err := leaf.Verify(x509.VerifyOptions{
			DNSName:     name,
			Roots:       ca.Pool(),
			CurrentTime: t0,
			KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("server certificate verifies for client auth; a hub certificate must not pass as a node")
	}
}

func TestIssueServerClampsToCA(t *testing.T) {
	ca, _ := newCA(t, t0)
	cert, err := ca.IssueServer(nil, 20*365*24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.Leaf.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Errorf("NotAfter = %s, want the CA's %s", cert.Leaf.NotAfter, ca.Certificate().NotAfter)
	}
}

func TestIssueServerRejectsBadHosts(t *testing.T) {
	ca, _ := newCA(t, t0)
	for _, host := range []string{"hub.example.com:10000", "under_score.example", "-lead.example", "a..b", "fe80::1%eth0", "space here"} {
		if _, err := ca.IssueServer([]string{host}, time.Hour, t0); err == nil {
			t.Errorf("IssueServer(%q) succeeded, want an error", host)
		} else if !strings.Contains(err.Error(), "host") {
			t.Errorf("IssueServer(%q) error %q does not name the host", host, err)
		}
	}
	if _, err := ca.IssueServer(nil, 0, t0); err == nil {
		t.Error("zero validity accepted")
	}
}

func TestPoolIsACopy(t *testing.T) {
	ca, _ := newCA(t, t0)
	other, _ := newCA(t, t0)
	p := ca.Pool()
	p.AddCert(other.Certificate())
	if ca.Pool().Equal(p) {
		t.Error("changing one Pool() result changed the CA's pool")
	}
}
