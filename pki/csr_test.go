package pki_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/pki"
)

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func mustCSR(t testing.TB, key crypto.Signer, name string) []byte {
	t.Helper()
	csr, err := pki.CreateCSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// rawCSR builds a CSR with any subject and extras, bypassing CreateCSR's checks.
func rawCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// foreignSignedCSR returns a CSR that carries one key's public key but is signed by another: what
// an attacker who has a node's public key (say, from its certificate) but not its private key
// could send. crypto/x509 refuses to create one, so the signature is replaced by hand.
func foreignSignedCSR(t testing.TB, name string) []byte {
	t.Helper()
	other := mustKey(t)
	csrPEM := rawCSR(t, mustKey(t), &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node:" + name}})
	block, _ := pem.Decode(csrPEM)
	var outer struct {
		TBS       asn1.RawValue
		Algorithm asn1.RawValue
		Signature asn1.BitString
	}
	if _, err := asn1.Unmarshal(block.Bytes, &outer); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(outer.TBS.FullBytes)
	sig, err := ecdsa.SignASN1(rand.Reader, other, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	outer.Signature = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
	der, err := asn1.Marshal(outer)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestSignCSRAcceptsKeys(t *testing.T) {
	ca, _ := newCA(t, t0)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		key  crypto.Signer
	}{
		{"ECDSA P-256", mustKey(t)},
		{"ECDSA P-384", p384},
		{"Ed25519", ed},
		{"RSA 2048", rsa2048},
	} {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, err := ca.SignCSR(mustCSR(t, tt.key, "edge-1"), "edge-1", 24*time.Hour, t0)
			if err != nil {
				t.Fatalf("SignCSR: %v", err)
			}
			cert := parseCert(t, certPEM)
			if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Fatalf("issued certificate does not verify: %v", err)
			}
			if !samePub(cert.PublicKey, tt.key.Public()) {
				t.Error("certificate carries a different public key than the CSR")
			}
		})
	}
}

func samePub(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func parseCert(t testing.TB, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, rest := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatalf("not exactly one PEM certificate: %q", certPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestSignCSRCertificateFields(t *testing.T) {
	ca, _ := newCA(t, t0)
	key := mustKey(t)
	// A CSR asking for more than a node may have: SANs, a server-ish extension.
	greedy := rawCSR(t, key, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "node:edge-1", Organization: []string{"system:masters"}},
		DNSNames:    []string{"hub.example.com"},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.1")},
	})
	certPEM, err := ca.SignCSR(greedy, "edge-1", 90*24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCert(t, certPEM)
	if cert.Subject.CommonName != "node:edge-1" || len(cert.Subject.Organization) != 0 {
		t.Errorf("subject = %q, want CN=node:edge-1 and no organization", cert.Subject.String())
	}
	// The issue instant, to the nanosecond, which NotBefore (whole seconds, backdated) is not.
	at := t0.Add(123456789 * time.Nanosecond)
	precise := parseCert(t, must(ca.SignCSR(greedy, "edge-1", time.Hour, at)))
	if got := pki.IssuedAt(precise); !got.Equal(at) {
		t.Errorf("IssuedAt = %s, want %s", got, at)
	}
	old := *precise
	old.Subject.SerialNumber = "" // a certificate issued before tether recorded the instant
	if got := pki.IssuedAt(&old); !got.Equal(precise.NotBefore) {
		t.Errorf("IssuedAt without the attribute = %s, want NotBefore %s", got, precise.NotBefore)
	}
	if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses)+len(cert.URIs) != 0 {
		t.Errorf("SANs copied from the CSR: %v %v", cert.DNSNames, cert.IPAddresses)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ExtKeyUsage = %v, want only ClientAuth", cert.ExtKeyUsage)
	}
	if cert.IsCA {
		t.Error("node certificate is a CA")
	}
	if !cert.NotBefore.Equal(t0.Add(-time.Minute)) || !cert.NotAfter.Equal(t0.Add(90*24*time.Hour)) {
		t.Errorf("validity %s – %s, want %s – %s", cert.NotBefore, cert.NotAfter, t0.Add(-time.Minute), t0.Add(90*24*time.Hour))
	}
	if bits := cert.SerialNumber.BitLen(); cert.SerialNumber.Sign() <= 0 || bits > 128 || bits < 96 {
		t.Errorf("serial %v (%d bits) is not a random positive 128-bit number", cert.SerialNumber, bits)
	}
	again := parseCert(t, must(ca.SignCSR(greedy, "edge-1", time.Hour, t0)))
	if again.SerialNumber.Cmp(cert.SerialNumber) == 0 {
		t.Error("two certificates got the same serial")
	}
	name, err := pki.NodeNameFromCert(cert)
	if err != nil || name != "edge-1" {
		t.Errorf("NodeNameFromCert = %q, %v", name, err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("node certificate verifies as a server certificate")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestSignCSRRefuses(t *testing.T) {
	ca, _ := newCA(t, t0)
	key := mustKey(t)
	good := mustCSR(t, key, "edge-1")
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	block, _ := pem.Decode(good)

	tests := []struct {
		name    string
		csr     []byte
		node    string
		want    error
		wantMsg string
	}{
		{"wrong CN", mustCSR(t, key, "edge-2"), "edge-1", pki.ErrCSRName, `"node:edge-2", want "node:edge-1"`},
		{"CN without prefix", rawCSR(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "edge-1"}}), "edge-1", pki.ErrCSRName, "subject CN"},
		{"CN system:node", rawCSR(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:edge-1"}}), "edge-1", pki.ErrCSRName, "subject CN"},
		{"signed by a different key", foreignSignedCSR(t, "edge-1"), "edge-1", pki.ErrCSRSignature, "signature"},
		{"weak RSA 1024", rawCSR(t, rsa1024, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node:edge-1"}}), "edge-1", pki.ErrCSRKey, "1024 bits is too weak"},
		{"ECDSA P-224", rawCSR(t, p224, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node:edge-1"}}), "edge-1", pki.ErrCSRKey, "P-224"},
		{"ECDSA P-521", rawCSR(t, p521, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node:edge-1"}}), "edge-1", pki.ErrCSRKey, "P-521"},
		{"empty", nil, "edge-1", pki.ErrCSRMalformed, "not PEM"},
		{"not PEM", []byte("hello"), "edge-1", pki.ErrCSRMalformed, "not PEM"},
		{"DER without PEM", block.Bytes, "edge-1", pki.ErrCSRMalformed, "not PEM"},
		{"certificate block", ca.CertPEM(), "edge-1", pki.ErrCSRMalformed, `"CERTIFICATE"`},
		{"two CSRs", append(append([]byte{}, good...), good...), "edge-1", pki.ErrCSRMalformed, "exactly one"},
		{"trailing junk", append(append([]byte{}, good...), "junk"...), "edge-1", pki.ErrCSRMalformed, "exactly one"},
		{"leading junk", append([]byte("junk\n"), good...), "edge-1", pki.ErrCSRMalformed, "not PEM"},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), "edge-1", pki.ErrCSRMalformed, "PKCS #10"},
		{"encrypted headers", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: block.Bytes}), "edge-1", pki.ErrCSRMalformed, "headers"},
		{"oversize", append(append([]byte{}, good...), make([]byte, pki.MaxCSRBytes)...), "edge-1", pki.ErrCSRMalformed, "at most 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := ca.SignCSR(tt.csr, tt.node, time.Hour, t0)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if cert != nil {
				t.Error("a certificate was returned with the error")
			}
			var ce *pki.CSRError
			if !errors.As(err, &ce) || ce.Detail == "" || strings.HasPrefix(ce.Detail, "pki:") {
				t.Errorf("err %v is not a *CSRError with a bare detail", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestSignCSRChecksArguments(t *testing.T) {
	ca, _ := newCA(t, t0)
	csr := mustCSR(t, mustKey(t), "edge-1")
	if _, err := ca.SignCSR(csr, "Edge_1", time.Hour, t0); !errors.Is(err, pki.ErrInvalidNodeName) {
		t.Errorf("invalid node name: err = %v", err)
	}
	if _, err := ca.SignCSR(csr, "edge-1", 0, t0); err == nil {
		t.Error("zero validity accepted")
	}
	if _, err := ca.SignCSR(csr, "edge-1", time.Hour, t0.AddDate(11, 0, 0)); err == nil || !strings.Contains(err.Error(), "CA expires") {
		t.Errorf("signing after the CA expired: err = %v", err)
	}
	long := parseCert(t, must(ca.SignCSR(csr, "edge-1", 20*365*24*time.Hour, t0)))
	if !long.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Errorf("NotAfter %s not clamped to the CA's %s", long.NotAfter, ca.Certificate().NotAfter)
	}
}

func TestCreateCSR(t *testing.T) {
	key := mustKey(t)
	csrPEM := mustCSR(t, key, "edge-1.site-a")
	block, _ := pem.Decode(csrPEM)
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if csr.Subject.String() != "CN=node:edge-1.site-a" || csr.CheckSignature() != nil {
		t.Errorf("CSR subject %q, signature %v", csr.Subject, csr.CheckSignature())
	}
	if _, err := pki.CreateCSR(key, "UPPER"); !errors.Is(err, pki.ErrInvalidNodeName) {
		t.Errorf("CreateCSR with an invalid name: err = %v", err)
	}
}

func TestValidNodeName(t *testing.T) {
	valid := []string{"a", "edge-1", "edge-1.site-a.example", "0", "1-2-3", strings.Repeat("a", 253), strings.Repeat("a", 100) + "." + strings.Repeat("b", 100)}
	invalid := []string{"", "Edge-1", "edge_1", "-edge", "edge-", "edge..1", ".edge", "edge.", "edge 1", "edge/1", "édge", "node:edge", strings.Repeat("a", 254), "edge-1\n"}
	for _, n := range valid {
		if err := pki.ValidNodeName(n); err != nil {
			t.Errorf("ValidNodeName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range invalid {
		if err := pki.ValidNodeName(n); !errors.Is(err, pki.ErrInvalidNodeName) {
			t.Errorf("ValidNodeName(%q) = %v, want ErrInvalidNodeName", n, err)
		}
	}
}

func TestNodeNameFromCert(t *testing.T) {
	ca, _ := newCA(t, t0)
	server, err := ca.IssueServer(nil, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.NodeNameFromCert(server.Leaf); !errors.Is(err, pki.ErrNotNodeCert) {
		t.Errorf("server certificate: err = %v, want ErrNotNodeCert", err)
	}
	if _, err := pki.NodeNameFromCert(ca.Certificate()); !errors.Is(err, pki.ErrNotNodeCert) {
		t.Errorf("CA certificate: err = %v, want ErrNotNodeCert", err)
	}
	if _, err := pki.NodeNameFromCert(nil); !errors.Is(err, pki.ErrNotNodeCert) {
		t.Errorf("nil: err = %v, want ErrNotNodeCert", err)
	}
	bad := &x509.Certificate{Subject: pkix.Name{CommonName: "node:Bad_Name"}}
	if _, err := pki.NodeNameFromCert(bad); !errors.Is(err, pki.ErrInvalidNodeName) {
		t.Errorf("invalid name: err = %v, want ErrInvalidNodeName", err)
	}
}
