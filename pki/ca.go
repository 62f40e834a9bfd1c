package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Files of the cloud CA in its directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

const (
	caCommonName     = "tether-ca"
	serverCommonName = "tether-server"
	caYears          = 10

	// caBackdate and serverBackdate move NotBefore into the past because the certificates are
	// checked by edge hosts whose clocks may be behind the cloud's by more than a little, right
	// after the cloud (re)starts. A node certificate is checked by the cloud, whose clock issued
	// it, so it only needs nodeBackdate for skew between cloud replicas.
	caBackdate     = time.Hour
	serverBackdate = time.Hour
	nodeBackdate   = time.Minute
)

// HashPrefix starts every CA hash, naming the digest like kubeadm's discovery hash does.
const HashPrefix = "sha256:"

// CA is the cloud's certificate authority. It is immutable and safe for concurrent use.
type CA struct {
	cert    *x509.Certificate // set at construction
	certPEM []byte            // set at construction; never handed out without a copy
	key     crypto.Signer     // set at construction
	hash    string            // set at construction
}

// LoadOrCreateCA loads the CA from dir/ca.crt and dir/ca.key, or creates both (and dir, 0700)
// if neither exists: ECDSA P-256, self-signed, CN tether-ca, valid for ten years from now. It
// returns an error wrapping ErrBadCA if only one file exists, they do not belong together, or
// the certificate is not a CA valid at now.
func LoadOrCreateCA(dir string, now time.Time) (*CA, error) {
	ca, _, _, err := loadOrCreateCA(dir, now)
	return ca, err
}

// loadOrCreateCA is LoadOrCreateCA that also returns the key's PEM and whether it made the CA.
func loadOrCreateCA(dir string, now time.Time) (ca *CA, keyPEM []byte, created bool, err error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certPEM, certErr := readFile(certPath)
	keyPEM, keyErr := readFile(keyPath)
	certMissing, keyMissing := errors.Is(certErr, fs.ErrNotExist), errors.Is(keyErr, fs.ErrNotExist)
	switch {
	case certMissing && keyMissing:
		ca, keyPEM, err := createCA(dir, now)
		return ca, keyPEM, err == nil, err
	case certErr != nil && !certMissing:
		return nil, nil, false, fmt.Errorf("pki: load CA: %w", certErr)
	case keyErr != nil && !keyMissing:
		return nil, nil, false, fmt.Errorf("pki: load CA: %w", keyErr)
	case certMissing:
		return nil, nil, false, fmt.Errorf("%w: %s exists but %s does not; restore it from backup "+
			"(a new CA would orphan every joined node)", ErrBadCA, keyPath, certPath)
	case keyMissing:
		return nil, nil, false, fmt.Errorf("%w: %s exists but %s does not; restore it from backup "+
			"(a new CA would orphan every joined node)", ErrBadCA, certPath, keyPath)
	}
	ca, err = newCA(certPEM, keyPEM, now)
	if err != nil {
		return nil, nil, false, fmt.Errorf("%w in %s: %v", ErrBadCA, dir, err)
	}
	return ca, keyPEM, false, nil
}

func createCA(dir string, now time.Time) (*CA, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCommonName},
		NotBefore:             now.Add(-caBackdate),
		NotAfter:              now.AddDate(caYears, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CA signs leaves only; a signed intermediate would be a second root of trust.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	certPEM := encodeCert(der)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("pki: create CA directory: %w", err)
	}
	// Key first: a crash between the writes leaves ca.key alone, which LoadOrCreateCA reports
	// rather than silently replacing; the reverse would leave a certificate nobody can sign with.
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, nil, fmt.Errorf("pki: save CA key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CACertFile), certPEM, 0o644); err != nil {
		return nil, nil, fmt.Errorf("pki: save CA certificate: %w", err)
	}
	ca, err := newCA(certPEM, keyPEM, now)
	return ca, keyPEM, err
}

func newCA(certPEM, keyPEM []byte, now time.Time) (*CA, error) {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", CACertFile, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", CAKeyFile, err)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%s does not hold the private key of %s", CAKeyFile, CACertFile)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", CACertFile)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s may not sign certificates (key usage)", CACertFile)
	}
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("%s expired at %s", CACertFile, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return nil, fmt.Errorf("%s is not valid before %s; check the system clock",
			CACertFile, cert.NotBefore.UTC().Format(time.RFC3339))
	}
	return &CA{cert: cert, certPEM: encodeCert(cert.Raw), key: key, hash: CertHash(cert)}, nil
}

// CertHash returns "sha256:" and the lowercase hex SHA-256 of cert's SubjectPublicKeyInfo.
func CertHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return HashPrefix + hex.EncodeToString(sum[:])
}

// Hash returns the CA's pin, CertHash of its certificate; join tokens carry it.
func (c *CA) Hash() string { return c.hash }

// Certificate returns the parsed CA certificate. Callers must not modify it.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// CertPEM returns the CA certificate as PEM (a copy; the caller may keep or change it).
func (c *CA) CertPEM() []byte { return slices.Clone(c.certPEM) }

// Pool returns a new pool holding only this CA. A new one each call, so a caller that adds to
// its pool cannot widen what another caller trusts.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// ServerTLSConfig is the TLS configuration for the hub's listener: TLS 1.3 only, cert as the
// server certificate, and a client certificate required and verified against this CA alone (so
// one from any other CA, or none, fails the handshake). The hub then takes the node name from
// the verified leaf with NodeNameFromCert. Not for the join port: a joining node has no
// certificate yet.
func (c *CA) ServerTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    c.Pool(),
	}
}

// IssueServer issues a fresh key and a server certificate for the hub and join ports, valid from
// now for validity (cut short at the CA's own expiry). Each host becomes an IP SAN if it parses as
// an IP and a DNS SAN otherwise; localhost, 127.0.0.1 and ::1 are always included so local tools
// and tests can verify it. Blank hosts are skipped; a host that is neither an IP nor a DNS name
// (for example "host:port") is an error naming it.
func (c *CA) IssueServer(hosts []string, validity time.Duration, now time.Time) (tls.Certificate, error) {
	if validity <= 0 {
		return tls.Certificate{}, fmt.Errorf("pki: server certificate validity must be positive, got %s", validity)
	}
	var dnsNames []string
	var ips []net.IP
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		name := strings.ToLower(strings.TrimSuffix(h, "."))
		if err := validDNSName(name); err != nil {
			return tls.Certificate{}, fmt.Errorf("pki: server certificate host %q: %v", truncate(h), err)
		}
		if !slices.Contains(dnsNames, name) {
			dnsNames = append(dnsNames, name)
		}
	}
	notBefore, notAfter, err := c.window(now.Add(-serverBackdate), now.Add(validity))
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: generate server key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: serverCommonName},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: issue server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: parse issued server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// window clamps a leaf's validity to the CA's: a leaf that outlives its issuer fails
// verification anyway, and clamping makes its NotAfter tell the truth.
func (c *CA) window(notBefore, notAfter time.Time) (time.Time, time.Time, error) {
	if notBefore.Before(c.cert.NotBefore) {
		notBefore = c.cert.NotBefore
	}
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	if !notAfter.After(notBefore) {
		return time.Time{}, time.Time{}, fmt.Errorf("pki: the CA expires at %s; nothing can be issued",
			c.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return notBefore, notAfter, nil
}

// randomSerial returns a random positive 128-bit serial number (RFC 5280 allows up to 20 octets;
// 128 random bits make collisions and guessable serials a non-issue).
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("pki: random serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
