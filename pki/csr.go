package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"time"
)

// MaxCSRBytes bounds the CSR PEM SignCSR accepts (SPEC §10). A real one is under 4 KiB.
const MaxCSRBytes = 64 << 10

const (
	pemCSR    = "CERTIFICATE REQUEST"
	pemOldCSR = "NEW CERTIFICATE REQUEST" // what older openssl versions write

	minRSABits = 2048
	// maxRSABits keeps a hostile CSR from making the CA verify huge-modulus signatures.
	maxRSABits = 8192
)

// NewKey generates a node's private key: ECDSA P-256, small and fast on edge hardware.
func NewKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	return key, nil
}

// CreateCSR returns a PEM certificate request for nodeName (subject CN=node:<nodeName>) signed by
// key. Nothing else goes in: the CA decides everything else in the certificate.
func CreateCSR(key crypto.Signer, nodeName string) ([]byte, error) {
	if err := ValidNodeName(nodeName); err != nil {
		return nil, err
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: NodeCNPrefix + nodeName}}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der}), nil
}

// SignCSR issues a client certificate for nodeName from a PEM CSR, valid from now-1m (for clock
// skew) for validity, cut short at the CA's expiry. The CSR must be at most MaxCSRBytes, carry an
// accepted key (ECDSA P-256/P-384, Ed25519, RSA 2048–8192 bits), verify with that key, and have the
// subject CN=node:<nodeName>. A refusal is a *CSRError wrapping ErrCSRMalformed, ErrCSRKey,
// ErrCSRSignature or ErrCSRName; an invalid nodeName wraps ErrInvalidNodeName.
//
// Only the CSR's public key reaches the certificate. Subject, SANs and extensions are set by the
// CA, so a node cannot ask for a server certificate, a CA, or another name.
func (c *CA) SignCSR(csrPEM []byte, nodeName string, validity time.Duration, now time.Time) ([]byte, error) {
	return c.SignCSRIssued(csrPEM, nodeName, validity, now, now)
}

// SignCSRIssued is SignCSR with the issue time the certificate records (IssuedAt) apart from
// the clock its validity starts from: a join whose clock is behind the replica that recorded
// the node's last join records an issue time after that join, but must not make a certificate
// that is not valid yet on this clock and every slower one.
func (c *CA) SignCSRIssued(csrPEM []byte, nodeName string, validity time.Duration, now, issued time.Time) ([]byte, error) {
	if err := ValidNodeName(nodeName); err != nil {
		return nil, err
	}
	if validity <= 0 {
		return nil, fmt.Errorf("pki: certificate validity must be positive, got %s", validity)
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	// The key check comes before the signature check so a hostile key is never used to verify.
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, csrError(ErrCSRSignature, "the CSR's signature does not verify with its own public key")
	}
	want := NodeCNPrefix + nodeName
	if got := csr.Subject.CommonName; got != want {
		return nil, csrError(ErrCSRName, fmt.Sprintf("the CSR's subject CN is %q, want %q", truncate(got), want))
	}
	notBefore, notAfter, err := c.window(now.Add(-nodeBackdate), now.Add(validity))
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The subject's serialNumber attribute is when the certificate was issued, to the
		// nanosecond (NotBefore has whole seconds, and is backdated): see IssuedAt.
		Subject:               pkix.Name{CommonName: want, SerialNumber: issued.UTC().Format(time.RFC3339Nano)},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, csr.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("pki: issue node certificate: %w", err)
	}
	return encodeCert(der), nil
}

// parseCSR accepts exactly one CSR PEM block with nothing but whitespace around it: anything else
// is either a client bug worth hearing about or someone probing the parser.
func parseCSR(data []byte) (*x509.CertificateRequest, error) {
	if len(data) > MaxCSRBytes {
		return nil, csrError(ErrCSRMalformed, fmt.Sprintf("the CSR is %d bytes, at most %d allowed", len(data), MaxCSRBytes))
	}
	trimmed := bytes.TrimSpace(data)
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return nil, csrError(ErrCSRMalformed, "the CSR is not PEM-encoded")
	}
	block, rest := pem.Decode(trimmed)
	if block == nil {
		return nil, csrError(ErrCSRMalformed, "the CSR is not PEM-encoded")
	}
	if block.Type != pemCSR && block.Type != pemOldCSR {
		return nil, csrError(ErrCSRMalformed, fmt.Sprintf("the PEM block is %q, want %q", truncate(block.Type), pemCSR))
	}
	if len(block.Headers) != 0 {
		return nil, csrError(ErrCSRMalformed, "the CSR PEM block has headers; it must be unencrypted")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, csrError(ErrCSRMalformed, "data follows the CSR PEM block; send exactly one")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, csrError(ErrCSRMalformed, "the CSR does not parse as PKCS #10")
	}
	return csr, nil
}

func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return csrError(ErrCSRKey, fmt.Sprintf("ECDSA curve %s is not accepted; use P-256 or P-384", k.Curve.Params().Name))
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if bits < minRSABits {
			return csrError(ErrCSRKey, fmt.Sprintf("RSA key of %d bits is too weak; use at least %d", bits, minRSABits))
		}
		if bits > maxRSABits {
			return csrError(ErrCSRKey, fmt.Sprintf("RSA key of %d bits is too large; at most %d accepted", bits, maxRSABits))
		}
		return nil
	default:
		return csrError(ErrCSRKey, fmt.Sprintf("key type %T is not accepted; use ECDSA P-256/P-384, Ed25519 or RSA", pub))
	}
}

// IssuedAt is when SignCSR issued a node certificate: the instant in its subject's
// serialNumber attribute, or, for a certificate without one (issued before tether recorded
// it), its NotBefore. A join records the instant of the certificate it signed, and the hub
// refuses the name's certificates issued before it, so a second join retires the first one's
// certificate even within the same second.
func IssuedAt(cert *x509.Certificate) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, cert.Subject.SerialNumber); err == nil {
		return t
	}
	return cert.NotBefore
}
