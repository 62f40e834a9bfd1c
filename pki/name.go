package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// NodeCNPrefix starts the subject CN of every node certificate: CN=node:<name>.
const NodeCNPrefix = "node:"

// maxNodeName is Kubernetes' limit for a DNS-1123 subdomain, and so for a Node's name.
const maxNodeName = 253

// ValidNodeName returns nil if name can name a Node: a DNS-1123 subdomain, that is at most 253
// characters of lowercase letters, digits, '-' and '.', made of dot-separated parts that each
// start and end with a letter or digit. Otherwise it returns an error wrapping ErrInvalidNodeName.
func ValidNodeName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidNodeName)
	}
	if len(name) > maxNodeName {
		return fmt.Errorf("%w: %d characters, at most %d allowed", ErrInvalidNodeName, len(name), maxNodeName)
	}
	for part := range strings.SplitSeq(name, ".") {
		if !isDNSLabel(part) {
			return fmt.Errorf("%w: %q must be lowercase letters, digits, '-' and '.', "+
				"with each dot-separated part starting and ending with a letter or digit",
				ErrInvalidNodeName, truncate(name))
		}
	}
	return nil
}

// isDNSLabel reports whether s is a non-empty run of [a-z0-9-] that does not start or end with '-'.
// Kubernetes does not limit the parts of a subdomain to 63 characters, so neither do we.
func isDNSLabel(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validDNSName checks a lowercased host for a server certificate's DNS SAN: RFC 1123 labels of
// at most 63 characters, an optional leading "*." wildcard.
func validDNSName(name string) error {
	if len(name) > maxNodeName {
		return errors.New("longer than 253 characters")
	}
	rest := strings.TrimPrefix(name, "*.")
	for part := range strings.SplitSeq(rest, ".") {
		if len(part) > 63 || !isDNSLabel(part) {
			if strings.Contains(name, ":") {
				return errors.New("not an IP address or DNS name (give the host without a port)")
			}
			return errors.New("not an IP address or DNS name")
		}
	}
	return nil
}

// NodeNameFromCert returns the node name of a node certificate, from its subject CN=node:<name>.
// It does not verify the certificate: call it on a chain the TLS stack has already verified
// against the CA. It returns an error wrapping ErrNotNodeCert if the CN lacks the prefix and
// ErrInvalidNodeName if the rest is not a valid node name.
func NodeNameFromCert(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", fmt.Errorf("%w: no certificate", ErrNotNodeCert)
	}
	cn := cert.Subject.CommonName
	name, ok := strings.CutPrefix(cn, NodeCNPrefix)
	if !ok {
		return "", fmt.Errorf("%w: subject CN %q does not start with %q", ErrNotNodeCert, truncate(cn), NodeCNPrefix)
	}
	if err := ValidNodeName(name); err != nil {
		return "", err
	}
	return name, nil
}

// truncate shortens untrusted text before it goes into an error message, which may be logged or
// sent back over the network.
func truncate(s string) string {
	const maxLen = 64
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + "…"
}
