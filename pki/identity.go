package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Files of a node's identity in its directory.
const (
	NodeCertFile = "node.crt"
	NodeKeyFile  = "node.key"
	NodeCAFile   = "ca.crt"
)

// NodeIdentity is what a joined node holds: its key, its certificate and the CA it pinned.
// It is built only by LoadNodeIdentity, which checks the parts belong together; treat it as
// read-only (it is then safe for concurrent use).
type NodeIdentity struct {
	Name    string            // the node name, from the certificate's CN
	CertPEM []byte            // the node certificate, PEM
	Leaf    *x509.Certificate // the node certificate, parsed (NotAfter says when to rotate)
	Key     crypto.Signer     // the node's private key
	CAPEM   []byte            // the CA certificate, PEM
	CA      *x509.Certificate // the CA certificate, parsed
	CAPool  *x509.CertPool    // a pool holding only the CA
	TLSCert tls.Certificate   // Leaf and Key, ready for a tls.Config
}

// ClientTLSConfig is the TLS configuration for dialing the hub: TLS 1.3 only, this identity as the
// client certificate, and only the pinned CA trusted, with serverName checked against the hub's
// certificate (a host from --advertise-address, or an IP).
func (id *NodeIdentity) ClientTLSConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.TLSCert},
		RootCAs:      id.CAPool,
		ServerName:   serverName,
	}
}

// SaveNodeIdentity checks that certPEM was issued by caPEM for key and names a valid node, then
// writes node.key (0600), ca.crt and node.crt (0644) into dir (created 0700 if needed), each
// atomically. Files whose content is unchanged are not rewritten, so re-signing the same key
// replaces node.crt alone. A set that does not belong together is refused with an error wrapping
// ErrBadIdentity before anything is written.
func SaveNodeIdentity(dir string, certPEM, caPEM []byte, key crypto.Signer) error {
	if key == nil {
		return fmt.Errorf("%w: no private key", ErrBadIdentity)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	id, err := newIdentity(certPEM, caPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: create identity directory: %w", err)
	}
	// node.crt last: LoadNodeIdentity treats its absence as "not joined", so an interrupted first
	// save reads as no identity and the agent simply joins again.
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{NodeKeyFile, keyPEM, 0o600},
		{NodeCAFile, id.CAPEM, 0o644},
		{NodeCertFile, id.CertPEM, 0o644},
	} {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("pki: save node identity: %w", err)
		}
	}
	return nil
}

// LoadNodeIdentity reads the identity SaveNodeIdentity wrote to dir. It returns an error wrapping
// ErrNoIdentity if node.crt does not exist (the node must join), and one wrapping ErrBadIdentity
// if the files exist but do not make a usable identity. It does not check expiry: the caller
// compares Leaf.NotAfter with its clock.
func LoadNodeIdentity(dir string) (*NodeIdentity, error) {
	certPath := filepath.Join(dir, NodeCertFile)
	certPEM, err := readFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", ErrNoIdentity, certPath)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: load node identity: %w", err)
	}
	keyPEM, err := readFile(filepath.Join(dir, NodeKeyFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %s exists but: %v", ErrBadIdentity, certPath, err)
	}
	caPEM, err := readFile(filepath.Join(dir, NodeCAFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %s exists but: %v", ErrBadIdentity, certPath, err)
	}
	id, err := newIdentity(certPEM, caPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w in %s: %v", ErrBadIdentity, dir, err)
	}
	return id, nil
}

func newIdentity(certPEM, caPEM, keyPEM []byte) (*NodeIdentity, error) {
	leaf, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %v", err)
	}
	ca, err := ParseCertPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %v", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("node key: %v", err)
	}
	if !samePublicKey(leaf.PublicKey, key.Public()) {
		return nil, errors.New("the node key does not belong to the node certificate")
	}
	// CheckSignatureFrom rather than Verify: Verify needs a clock, and an expired identity is
	// still this node's identity (the caller decides what to do about expiry).
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("the node certificate was not issued by the CA certificate: %v", err)
	}
	name, err := NodeNameFromCert(leaf)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &NodeIdentity{
		Name:    name,
		CertPEM: encodeCert(leaf.Raw),
		Leaf:    leaf,
		Key:     key,
		CAPEM:   encodeCert(ca.Raw),
		CA:      ca,
		CAPool:  pool,
		TLSCert: tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf},
	}, nil
}

// NewNodeIdentity builds an identity in memory from what Join returned and the node's key, with
// the same checks LoadNodeIdentity makes; for callers that keep no files (the simulator).
func NewNodeIdentity(certPEM, caPEM []byte, key crypto.Signer) (*NodeIdentity, error) {
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	id, err := newIdentity(certPEM, caPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	return id, nil
}
