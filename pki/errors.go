package pki

import "errors"

var (
	// ErrBadCA is returned by LoadOrCreateCA when the directory holds CA files it cannot use: only
	// one of ca.crt and ca.key exists, either does not parse, the key does not belong to the
	// certificate, or the certificate is not a CA valid at the given time. The CA is never
	// regenerated over such files, because every node certificate and token depends on it.
	ErrBadCA = errors.New("pki: unusable CA files")

	// ErrCSRMalformed is returned by SignCSR when the input is larger than MaxCSRBytes, is not
	// exactly one PEM block of type CERTIFICATE REQUEST, or does not parse as a PKCS #10 request.
	ErrCSRMalformed = errors.New("pki: malformed CSR")

	// ErrCSRSignature is returned by SignCSR when the request's signature does not verify with the
	// public key it carries: the sender does not hold the private key it asks a certificate for.
	ErrCSRSignature = errors.New("pki: CSR signature does not verify")

	// ErrCSRName is returned by SignCSR when the request's subject is not exactly CN=node:<name>
	// for the node name being joined.
	ErrCSRName = errors.New("pki: CSR subject does not match the node name")

	// ErrCSRKey is returned by SignCSR when the request's public key is weak or of a kind tether
	// does not issue for. Accepted: ECDSA P-256 and P-384, Ed25519, RSA of 2048 to 8192 bits.
	ErrCSRKey = errors.New("pki: CSR key not accepted")

	// ErrInvalidNodeName is returned by ValidNodeName, and by every function that takes or reads a
	// node name, when the name is not a DNS-1123 subdomain (what Kubernetes requires of a Node).
	ErrInvalidNodeName = errors.New("pki: invalid node name")

	// ErrNotNodeCert is returned by NodeNameFromCert when the certificate's subject is not
	// CN=node:<name>, for example the hub's own server certificate.
	ErrNotNodeCert = errors.New("pki: not a node certificate")

	// ErrNoIdentity is returned by LoadNodeIdentity when the directory has no node.crt (or does not
	// exist): the node has not joined yet, or a join was interrupted before its certificate was
	// written. The agent should join.
	ErrNoIdentity = errors.New("pki: no node identity")

	// ErrBadIdentity is returned by LoadNodeIdentity when node.crt exists but the identity cannot
	// be used (node.key or ca.crt missing or unparseable, the key does not belong to the
	// certificate, or the certificate was not issued by the CA), and by SaveNodeIdentity when asked
	// to save such a set. Unlike ErrNoIdentity it needs an operator's look before re-joining.
	ErrBadIdentity = errors.New("pki: unusable node identity")

	// ErrMalformedToken is returned by ParseToken for any string that is not a well-formed tether1
	// join token. Its message says which part is wrong and never repeats the input, which may
	// hold a secret.
	ErrMalformedToken = errors.New("pki: malformed join token")
)

// CSRError is the error SignCSR returns for a request it refuses. Err is one of ErrCSRMalformed,
// ErrCSRSignature, ErrCSRName or ErrCSRKey (match with errors.Is); Detail is one sentence, without
// a package prefix, fit to send back to the node that made the request.
type CSRError struct {
	Err    error
	Detail string
}

func (e *CSRError) Error() string { return "pki: " + e.Detail }

func (e *CSRError) Unwrap() error { return e.Err }

func csrError(sentinel error, detail string) error {
	return &CSRError{Err: sentinel, Detail: detail}
}
