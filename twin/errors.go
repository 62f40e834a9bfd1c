package twin

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Result codes carried in the code field of an error result on
// $hw/events/device/{id}/twin/update/result (SPEC §6). They are KubeEdge's codes,
// so existing mappers interpret them unchanged.
const (
	CodeBadRequest = 400 // the payload is malformed or breaks a rule of this package
	CodeNotFound   = 404 // no such device on this node (decided by the caller)
	CodeConflict   = 409 // the input carries an older version than the one stored
	CodeInternal   = 500 // the edge could not process or store the input
)

// Sentinel errors. Every error returned by this package is an *Error that wraps
// exactly one of these, so callers branch with errors.Is and count rejected inputs
// by sentinel without parsing reasons.
var (
	// ErrTooLarge is returned by the decoders when the payload is longer than
	// Limits.MaxPayload. Code 400.
	ErrTooLarge = errors.New("twin: payload too large")

	// ErrMalformed is returned by the decoders when the payload is not JSON, is
	// not a JSON object, has a field of the wrong JSON type, or lacks a required
	// field. Code 400.
	ErrMalformed = errors.New("twin: malformed payload")

	// ErrKey is returned when a property name does not match
	// ^[a-zA-Z0-9-_.,:/@#]{1,128}$ (DecodeUpdate, ApplyReport, ApplyDesired). Code 400.
	ErrKey = errors.New("twin: invalid property name")

	// ErrValueTooLong is returned by DecodeUpdate when a value, or the event_id,
	// is longer than the configured limit. Code 400.
	ErrValueTooLong = errors.New("twin: value too long")

	// ErrTooMany is returned by DecodeUpdate when an update names more properties
	// than Limits.MaxProperties. Code 400.
	ErrTooMany = errors.New("twin: too many properties")

	// ErrType is returned by CheckValue, ApplyReport and ApplyDesired when a
	// value does not parse as the property's DeviceModel type. Code 400.
	ErrType = errors.New("twin: value does not match the property type")

	// ErrModelType is returned when the DeviceModel declares a property type this
	// package does not know, so no value can be checked. It is a configuration
	// fault of the cloud, not of the device. Code 500.
	ErrModelType = errors.New("twin: unsupported property type in device model")

	// ErrUnknownProperty is returned by ApplyReport when a device reports a
	// property that is neither in the DeviceModel nor already in the twin. Code 400.
	ErrUnknownProperty = errors.New("twin: property not in device model")

	// ErrNotOptional is returned by ApplyReport when a device deletes (sends null
	// for) a property the cloud declared, which is not optional. Code 400.
	ErrNotOptional = errors.New("twin: property is not optional")

	// ErrState is returned by DecodeStateUpdate when state is missing or not one
	// of online, offline, ok, unknown, unhealthy. Code 400.
	ErrState = errors.New("twin: invalid device state")

	// ErrStale is returned by ApplyDesired when the desired state carries an
	// older version than one already applied; nothing is changed. Code 409.
	ErrStale = errors.New("twin: older version")
)

// Error is the error type of this package: a result code and a reason fit to be
// sent to a device verbatim in the reason field, wrapping one sentinel.
type Error struct {
	Code   int    // one of the Code constants
	Reason string // one line, names the offending property or field
	Err    error  // the sentinel; see Unwrap
}

func (e *Error) Error() string { return e.Reason }

// Unwrap returns the sentinel so errors.Is works.
func (e *Error) Unwrap() error { return e.Err }

// CodeOf returns the result code for err: the Code of an *Error in its chain,
// CodeInternal for any other error, and 0 for nil. A handler answers a device
// with EncodeError(id, CodeOf(err), err.Error(), now).
func CodeOf(err error) int {
	if err == nil {
		return 0
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

func newError(code int, sentinel error, format string, args ...any) *Error {
	return &Error{Code: code, Reason: fmt.Sprintf(format, args...), Err: sentinel}
}

func badRequest(sentinel error, format string, args ...any) *Error {
	return newError(CodeBadRequest, sentinel, format, args...)
}

// maxQuoted bounds how much of a device-supplied string is quoted back in a
// reason, so a 256 KiB bad key cannot turn into a 256 KiB error result.
const maxQuoted = 64

// quote quotes s for a reason, cut to maxQuoted characters.
func quote(s string) string {
	if utf8.RuneCountInString(s) <= maxQuoted {
		return fmt.Sprintf("%q", s)
	}
	n := 0
	for i := range s {
		if n == maxQuoted {
			return fmt.Sprintf("%q…", s[:i])
		}
		n++
	}
	return fmt.Sprintf("%q", s)
}
