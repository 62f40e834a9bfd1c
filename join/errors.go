package join

import (
	"errors"
	"fmt"
)

var (
	// ErrTokenUnknown is returned by Tokens.Check when no token has the ID or the secret does not
	// match; the two are not told apart, so a caller cannot learn which IDs exist. Join returns an
	// *Error that matches it (errors.Is) when the server answers 401 token_unknown.
	ErrTokenUnknown = errors.New("join: token unknown or secret wrong")

	// ErrTokenExpired is returned by Tokens.Check when the token is known and its secret matches
	// but it has expired. Implementations check the secret first, so only a holder of the secret
	// learns that the token existed. Join's *Error matches it for 401 token_expired.
	ErrTokenExpired = errors.New("join: token expired")

	// ErrTokenWrongNode is returned by Tokens.Check when the token is bound to a node name other
	// than the one joining. Join's *Error matches it for 403 token_wrong_node.
	ErrTokenWrongNode = errors.New("join: token is bound to another node")

	// ErrCAMismatch is returned by Join when the CA served at the join URL does not have the hash
	// the token carries: the token is for another cloud, or someone is in the middle. Nothing but
	// the CA request has been sent when it is returned. Join's *Error also matches it when a
	// server answers 400 ca_mismatch.
	ErrCAMismatch = errors.New("join: the CA at the join URL does not match the token")

	// ErrLaterJoin is returned by Nodes.Register when a join of the name whose certificate was
	// issued later has already been recorded: recording this one would let its older certificate
	// back in. The server answers 409 later_join, and the certificate is not released.
	ErrLaterJoin = errors.New("join: a later join of the node was recorded")
)

// Machine codes in error bodies. Clients branch on these, not on messages.
const (
	CodeInvalidRequest   = "invalid_request"        // 400: body is not one JSON object with the right fields and types
	CodeBodyTooLarge     = "body_too_large"         // 413: body over Config.MaxBodyBytes
	CodeUnsupportedMedia = "unsupported_media_type" // 415: Content-Type is not application/json
	CodeInvalidToken     = "invalid_token"          // 400: the token string is malformed
	CodeCAMismatch       = "ca_mismatch"            // 400: the token carries another CA's hash
	CodeInvalidNodeName  = "invalid_node_name"      // 400: not a DNS-1123 subdomain
	CodeInvalidLabels    = "invalid_labels"         // 400: a label key or value is not valid
	CodeTokenUnknown     = "token_unknown"          // 401: unknown ID or wrong secret
	CodeTokenExpired     = "token_expired"          // 401
	CodeTokenWrongNode   = "token_wrong_node"       // 403: bound to another node name
	CodeInvalidCSR       = "invalid_csr"            // 400: pki.SignCSR refused the CSR
	CodeNotFound         = "not_found"              // 404
	CodeLaterJoin        = "later_join"             // 409: a later join of the name was recorded meanwhile
	CodeMethodNotAllowed = "method_not_allowed"     // 405
	CodeUnavailable      = "unavailable"            // 503: the request was cancelled or timed out in the cloud
	CodeInternal         = "internal"               // 500: the cloud failed; details are in its log
)

// joinCodes lists every result of POST /v1/join, so the metric has all its series from the start.
func joinCodes() []string {
	return []string{
		codeOK, CodeInvalidRequest, CodeBodyTooLarge, CodeUnsupportedMedia, CodeInvalidToken,
		CodeCAMismatch, CodeInvalidNodeName, CodeInvalidLabels, CodeTokenUnknown, CodeTokenExpired,
		CodeTokenWrongNode, CodeInvalidCSR, CodeMethodNotAllowed, CodeLaterJoin, CodeUnavailable, CodeInternal,
	}
}

// codeOK is the metric's label for a successful join; it never appears in an error body.
const codeOK = "ok"

// Error is a refusal from the join server: the HTTP status, the machine code (one of the Code
// constants; empty if the server did not send a tether error body, for example a proxy's page)
// and a one-sentence message for people.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("join: server answered %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("join: server refused (%d %s): %s", e.Status, e.Code, e.Message)
}

// Is lets a caller test a server's answer against the sentinels, e.g.
// errors.Is(err, ErrTokenExpired) to tell the operator to create a new token.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrTokenUnknown:
		return e.Code == CodeTokenUnknown
	case ErrTokenExpired:
		return e.Code == CodeTokenExpired
	case ErrTokenWrongNode:
		return e.Code == CodeTokenWrongNode
	case ErrCAMismatch:
		return e.Code == CodeCAMismatch
	}
	return false
}

// errorBody is the JSON of every refusal.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
