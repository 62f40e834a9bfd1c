package join

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/tetherhub/tether/pki"
)

// maxResponseBytes bounds every response body Join reads. A CA or a certificate is a few KiB.
const maxResponseBytes = 1 << 20

// Per-phase bounds for a server that accepts a connection and then stalls; ctx bounds the whole.
const (
	handshakeTimeout = 15 * time.Second
	headerTimeout    = 30 * time.Second
)

// Join fetches the CA from joinURL (https://HOST:PORT), checks it against the hash in the token,
// then sends a CSR over a connection that trusts only that CA. It returns the signed certificate
// and the CA, both PEM.
//
// Before any network traffic it checks its arguments (node name, labels, token). A CA that does
// not match the token is ErrCAMismatch, and then nothing but the CA request has been sent. A
// refusal from the server is an *Error (errors.Is matches ErrTokenUnknown, ErrTokenExpired,
// ErrTokenWrongNode, ErrCAMismatch). The returned certificate has been checked to be issued by the
// pinned CA for key and nodeName.
func Join(ctx context.Context, joinURL string, token pki.Token, nodeName string, labels map[string]string, key crypto.Signer) (certPEM, caPEM []byte, err error) {
	base, err := parseJoinURL(joinURL)
	if err != nil {
		return nil, nil, err
	}
	// Re-parsing normalises a Token built by hand and refuses a malformed one before it is sent.
	token, err = pki.ParseToken(token.String())
	if err != nil {
		return nil, nil, fmt.Errorf("join: %w", err)
	}
	if err := ValidateLabels(labels); err != nil {
		return nil, nil, fmt.Errorf("join: %w", err)
	}
	if key == nil {
		return nil, nil, errors.New("join: no private key")
	}
	csrPEM, err := pki.CreateCSR(key, nodeName)
	if err != nil {
		return nil, nil, fmt.Errorf("join: %w", err)
	}

	ca, err := fetchCA(ctx, base, token.CAHash)
	if err != nil {
		return nil, nil, err
	}
	body, err := json.Marshal(joinRequest{Token: token.String(), NodeName: nodeName, Labels: labels, CSR: string(csrPEM)})
	if err != nil {
		return nil, nil, fmt.Errorf("join: encode request: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	// From here on the server must prove it holds a certificate from the pinned CA: the token's
	// secret travels only over this connection.
	resp, err := do(ctx, newClient(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}),
		http.MethodPost, base.JoinPath(PathJoin), body)
	if err != nil {
		return nil, nil, err
	}
	var jr joinResponse
	if err := json.Unmarshal(resp, &jr); err != nil {
		return nil, nil, fmt.Errorf("join: the server's answer is not valid JSON: %w", err)
	}
	cert, err := checkIssued([]byte(jr.Certificate), ca, key, nodeName)
	if err != nil {
		return nil, nil, err
	}
	// The CA in the answer must be the pinned one; the pinned copy is what we return either way.
	if respCA, err := firstCert([]byte(jr.CA)); err != nil || pki.CertHash(respCA) != token.CAHash {
		return nil, nil, fmt.Errorf("%w: the join answer names a different CA", ErrCAMismatch)
	}
	return pemCert(cert.Raw), pemCert(ca.Raw), nil
}

func parseJoinURL(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("join: join URL %q must be https://HOST:PORT", clip(raw))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("join: join URL %q must be https://HOST:PORT, without user, query or fragment", clip(u.Redacted()))
	}
	return u, nil
}

// fetchCA downloads the CA bundle and returns the certificate whose hash is want. The connection
// is unverified on purpose: the node has nothing to verify with yet, and the hash from the
// token is the trust anchor. Nothing secret is sent on it.
func fetchCA(ctx context.Context, base *url.URL, want string) (*x509.Certificate, error) {
	body, err := do(ctx, newClient(&tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}),
		http.MethodGet, base.JoinPath(PathCA), nil)
	if err != nil {
		return nil, err
	}
	var served []string
	for rest := body; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue
		}
		h := pki.CertHash(cert)
		if h != want {
			if len(served) < 3 { // enough to diagnose; a huge bundle must not make a huge error
				served = append(served, h)
			}
			continue
		}
		if !cert.IsCA {
			return nil, fmt.Errorf("join: the certificate at %s matches the token but is not a CA", base.JoinPath(PathCA))
		}
		return cert, nil
	}
	if len(served) == 0 {
		return nil, fmt.Errorf("%w: %s served no PEM certificate", ErrCAMismatch, base.JoinPath(PathCA))
	}
	return nil, fmt.Errorf("%w: %s serves a CA with hash %s, the token expects %s; "+
		"the token is for another cloud, or the connection is intercepted",
		ErrCAMismatch, base.JoinPath(PathCA), strings.Join(served, ", "), want)
}

// newClient returns a client for one Join call. Redirects are not followed: the CA must come from
// the URL the operator gave, and a 307 would re-send the token somewhere else.
func newClient(cfg *tls.Config) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			TLSClientConfig:       cfg,
			TLSHandshakeTimeout:   handshakeTimeout,
			ResponseHeaderTimeout: headerTimeout,
			DisableKeepAlives:     true,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// do sends one request and returns the body of a 200 answer, read within maxResponseBytes; any
// other status becomes an *Error.
func do(ctx context.Context, c *http.Client, method string, u *url.URL, body []byte) ([]byte, error) {
	defer c.CloseIdleConnections()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/x-pem-file")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err) // a *url.Error, which names the method and URL
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("join: %s %s: read answer: %w", method, u, err)
	}
	if len(data) > maxResponseBytes {
		return nil, fmt.Errorf("join: %s %s: the answer is larger than %d bytes", method, u, maxResponseBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, serverError(resp.StatusCode, data)
	}
	return data, nil
}

// serverError reads a refusal. A body that is not ours (a proxy's page) still gives a readable
// error, with a short printable excerpt of it.
func serverError(status int, body []byte) *Error {
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil && eb.Code != "" {
		return &Error{Status: status, Code: printable(eb.Code, 64), Message: printable(eb.Message, 300)}
	}
	msg := http.StatusText(status)
	if excerpt := printable(string(body), 200); excerpt != "" {
		msg += ": " + excerpt
	}
	return &Error{Status: status, Message: msg}
}

// printable keeps text from a server safe to print to a terminal or log: no control characters,
// at most n bytes.
func printable(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// checkIssued makes sure the answer is a certificate this node can use, so a broken or hostile
// server cannot make the agent save an identity that fails later at the hub.
func checkIssued(certPEM []byte, ca *x509.Certificate, key crypto.Signer, nodeName string) (*x509.Certificate, error) {
	cert, err := firstCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("join: the server's certificate: %w", err)
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("join: the server's certificate was not issued by the pinned CA: %w", err)
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("join: the server's certificate is not for this node's key")
	}
	if name, err := pki.NodeNameFromCert(cert); err != nil || name != nodeName {
		return nil, fmt.Errorf("join: the server's certificate is for %q, not node %q", clip(cert.Subject.CommonName), nodeName)
	}
	return cert, nil
}

func firstCert(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM certificate")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
