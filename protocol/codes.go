package protocol

import "fmt"

// Code is the reason carried by an Error message. Values are part of the wire format.
type Code uint16

const (
	// CodeBadFrame: a frame could not be decoded (truncated, unknown type, field out of bounds).
	CodeBadFrame Code = 1
	// CodeUnsupportedVersion: the Hello's version is not one the cloud speaks.
	CodeUnsupportedVersion Code = 2
	// CodeIdentityMismatch: the Hello names a node other than the one in the client certificate.
	CodeIdentityMismatch Code = 3
	// CodeProtocol: a well-formed message arrived where it is not allowed (a second Hello, an
	// Upsert sent by an edge, an Ack for a sequence never sent).
	CodeProtocol Code = 4
	// CodeReplaced: a newer session for the same node took over; the old one ends.
	CodeReplaced Code = 5
	// CodeRevoked: the node was deleted in the cloud; its certificate no longer admits it.
	CodeRevoked Code = 6
	// CodeTooSlow: the node did not keep its window moving; it reconnects and catches up.
	CodeTooSlow Code = 7
	// CodeShuttingDown: the cloud is stopping; reconnect to it or another replica.
	CodeShuttingDown Code = 8
	// CodeBadReport: a report could not be applied (malformed payload, unknown kind). The edge
	// drops that one report from its outbox and counts it; the session goes on.
	CodeBadReport Code = 9
	// CodeInternal: the cloud failed (store unavailable); retry later.
	CodeInternal Code = 10
	// CodeHandshakeTimeout: no Hello within the handshake deadline.
	CodeHandshakeTimeout Code = 11
	// CodeBehind: the node has seen more of the store than this replica has processed yet;
	// reconnect, to it or another replica (a reset from its older view would take newer objects
	// back).
	CodeBehind Code = 12
)

func (c Code) String() string {
	switch c {
	case CodeBadFrame:
		return "bad-frame"
	case CodeUnsupportedVersion:
		return "unsupported-version"
	case CodeIdentityMismatch:
		return "identity-mismatch"
	case CodeProtocol:
		return "protocol-violation"
	case CodeReplaced:
		return "replaced"
	case CodeRevoked:
		return "revoked"
	case CodeTooSlow:
		return "too-slow"
	case CodeShuttingDown:
		return "shutting-down"
	case CodeBadReport:
		return "bad-report"
	case CodeInternal:
		return "internal"
	case CodeHandshakeTimeout:
		return "handshake-timeout"
	case CodeBehind:
		return "replica-behind"
	}
	return fmt.Sprintf("code-%d", uint16(c))
}
