package twin

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/tetherhub/tether/internal/jsonkind"
)

// Update is a decoded $hw/events/device/{id}/twin/update.
type Update struct {
	EventID   string
	Timestamp int64 // as sent; informational only, the edge stamps values itself
	// Twin holds one entry per property named. A nil *Report is the device's
	// null: delete that property. An absent key is not touched.
	Twin map[string]*Report
}

// Report is one property of an Update, as the device sent it.
type Report struct {
	// Actual is actual.value; nil when the entry carries no actual.
	Actual *string
	// Expected is expected.value as sent. ApplyReport ignores it: expected is
	// written only by the cloud (SPEC §6). It is kept so a handler can count it.
	Expected *string
	// Type is metadata.type as sent. It is a hint only: the DeviceModel decides
	// a property's type, and mappers send anything here ("int", "INT", "Updated").
	Type string
	// Optional is used only when the report creates the property.
	Optional *bool
}

// Get is a decoded twin/get or membership/get request: {event_id}.
type Get struct {
	EventID   string
	Timestamp int64
}

// StateUpdate is a decoded $hw/events/device/{id}/state/update.
type StateUpdate struct {
	EventID   string
	Timestamp int64
	State     string // one of the State constants, lower case
}

// Device states accepted on state/update (SPEC §6).
const (
	StateOnline    = "online"
	StateOffline   = "offline"
	StateOK        = "ok"
	StateUnknown   = "unknown"
	StateUnhealthy = "unhealthy"
)

// The JSON shapes read from devices. Fields this package ignores (metadata
// timestamps, versions, attributes) are deliberately not declared, so a mapper
// that fills them oddly is not rejected for a field nobody reads.
type (
	inHeader struct {
		EventID   string `json:"event_id"`
		Timestamp int64  `json:"timestamp"`
	}
	// No embedding: encoding/json would name an embedded struct in the
	// field path of a type error ("inHeader.timestamp"), and that path is
	// the reason a device reads.
	inUpdate struct {
		EventID   string                     `json:"event_id"`
		Timestamp int64                      `json:"timestamp"`
		Twin      map[string]json.RawMessage `json:"twin"`
	}
	inEntry struct {
		Expected *inValue    `json:"expected"`
		Actual   *inValue    `json:"actual"`
		Optional *bool       `json:"optional"`
		Metadata *inTypeMeta `json:"metadata"`
	}
	inValue struct {
		Value *string `json:"value"`
	}
	inTypeMeta struct {
		Type string `json:"type"`
	}
	inState struct {
		EventID   string  `json:"event_id"`
		Timestamp int64   `json:"timestamp"`
		State     *string `json:"state"`
	}
)

// DecodeUpdate decodes and validates a twin update. Every rule is checked
// before anything is returned as valid: size, JSON syntax and types, event_id
// length, presence of twin, property count, each name against the key pattern,
// each entry being an object or null, actual carrying a value, and each value's
// length. Errors are *Error with code 400 and a reason naming the property or
// field; names are checked in sorted order so the reason is deterministic.
//
// On error the returned Update carries the event_id when it could be read
// (and is within its limit), so the error result can echo it. DecodeUpdate
// never panics.
func DecodeUpdate(b []byte, lim Limits) (Update, error) {
	lim = lim.withDefaults()
	if u, ok := decodeUpdateFast(b, lim); ok {
		return u, nil
	}
	return decodeUpdateJSON(b, lim)
}

// decodeUpdateJSON is DecodeUpdate with encoding/json, for every input decodeUpdateFast leaves.
func decodeUpdateJSON(b []byte, lim Limits) (Update, error) {
	var in inUpdate
	err := decodeObject(b, lim, "", &in)
	if idErr := checkEventID(in.EventID, lim); idErr != nil {
		// Never echo an oversize id; report the first problem found.
		return Update{}, cmp.Or(err, idErr)
	}
	// encoding/json keeps decoding past a type error, so the event_id is
	// usually known even when the rest is wrong.
	u := Update{EventID: in.EventID, Timestamp: in.Timestamp}
	if err != nil {
		return u, err
	}
	if in.Twin == nil {
		return u, badRequest(ErrMalformed, "twin is required: want an object of properties")
	}
	if n := len(in.Twin); n > lim.MaxProperties {
		return u, badRequest(ErrTooMany, "update names %d properties, more than the limit of %d", n, lim.MaxProperties)
	}
	names := slices.Sorted(maps.Keys(in.Twin))
	twin := make(map[string]*Report, len(in.Twin))
	for _, name := range names {
		if err := checkKey(name); err != nil {
			return u, err
		}
		r, err := decodeReport(name, in.Twin[name], lim)
		if err != nil {
			return u, err
		}
		twin[name] = r
	}
	u.Twin = twin
	return u, nil
}

func decodeReport(name string, raw json.RawMessage, lim Limits) (*Report, error) {
	// encoding/json stores a value's bytes without the whitespace around it.
	if string(raw) == "null" {
		return nil, nil
	}
	prefix := "twin " + quote(name)
	var e inEntry
	if err := decodeObject(raw, lim, prefix, &e); err != nil {
		return nil, err
	}
	r := &Report{Optional: e.Optional}
	if e.Metadata != nil {
		r.Type = e.Metadata.Type
	}
	if e.Actual != nil {
		if e.Actual.Value == nil {
			return nil, badRequest(ErrMalformed, "%s: actual.value is required: want a string", prefix)
		}
		if err := checkLen(prefix+": actual.value", *e.Actual.Value, lim.MaxValueLen); err != nil {
			return nil, err
		}
		r.Actual = e.Actual.Value
	}
	if e.Expected != nil && e.Expected.Value != nil {
		if err := checkLen(prefix+": expected.value", *e.Expected.Value, lim.MaxValueLen); err != nil {
			return nil, err
		}
		r.Expected = e.Expected.Value
	}
	return r, nil
}

// DecodeGet decodes a twin/get request ({event_id}). Errors are *Error, code
// 400; on error the returned Get carries the event_id when it could be read.
func DecodeGet(b []byte, lim Limits) (Get, error) {
	lim = lim.withDefaults()
	var in inHeader
	err := decodeObject(b, lim, "", &in)
	if idErr := checkEventID(in.EventID, lim); idErr != nil {
		return Get{}, cmp.Or(err, idErr)
	}
	return Get(in), err
}

// DecodeMembershipGet decodes a membership/get request ({event_id}); the shape
// and rules are those of DecodeGet.
func DecodeMembershipGet(b []byte, lim Limits) (Get, error) {
	return DecodeGet(b, lim)
}

// DecodeStateUpdate decodes a state update and normalises the state to lower
// case. A missing state or one outside online, offline, ok, unknown, unhealthy
// is ErrState; other errors are as for DecodeUpdate. Errors are *Error, code 400.
// On error the returned StateUpdate carries the event_id when it could be read.
func DecodeStateUpdate(b []byte, lim Limits) (StateUpdate, error) {
	lim = lim.withDefaults()
	var in inState
	err := decodeObject(b, lim, "", &in)
	if idErr := checkEventID(in.EventID, lim); idErr != nil {
		return StateUpdate{}, cmp.Or(err, idErr)
	}
	s := StateUpdate{EventID: in.EventID, Timestamp: in.Timestamp}
	if err != nil {
		return s, err
	}
	if in.State == nil {
		return s, badRequest(ErrState, "state is required: want one of online, offline, ok, unknown, unhealthy")
	}
	st := strings.ToLower(*in.State)
	switch st {
	case StateOnline, StateOffline, StateOK, StateUnknown, StateUnhealthy:
	default:
		return s, badRequest(ErrState, "state %s is invalid: want one of online, offline, ok, unknown, unhealthy", quote(*in.State))
	}
	s.State = st
	return s, nil
}

func checkEventID(id string, lim Limits) error {
	return checkLen("event_id", id, lim.MaxEventIDLen)
}

// decodeObject unmarshals a JSON object into v, turning every failure into a
// 400 *Error whose reason starts with prefix (empty for the payload itself).
func decodeObject(b []byte, lim Limits, prefix string, v any) error {
	what := "payload"
	if prefix != "" {
		what = prefix
	}
	// Checked before any parsing, so an oversize payload costs nothing more.
	if len(b) > lim.MaxPayload {
		return badRequest(ErrTooLarge, "%s is %d bytes, more than the limit of %d", what, len(b), lim.MaxPayload)
	}
	// json.Unmarshal accepts null (and leaves v zero) and reports non-objects
	// with Go type names; checking the first byte gives one clear reason for all.
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	if len(trimmed) == 0 {
		return badRequest(ErrMalformed, "%s is empty: want a JSON object", what)
	}
	if trimmed[0] != '{' {
		if !json.Valid(b) {
			return syntaxError(what, b)
		}
		return badRequest(ErrMalformed, "%s must be a JSON object, not %s", what, jsonKind(trimmed[0]))
	}
	err := json.Unmarshal(b, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = what
		} else if prefix != "" {
			field = prefix + ": " + field
		}
		return badRequest(ErrMalformed, "%s must be %s, not %s", field, jsonkind.Of(te.Type), valueKind(te.Value))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return badRequest(ErrMalformed, "%s is not valid JSON: %v (at byte %d)", what, se, se.Offset)
	}
	return badRequest(ErrMalformed, "%s is not valid JSON: %v", what, err)
}

func syntaxError(what string, b []byte) error {
	var v any
	err := json.Unmarshal(b, &v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return badRequest(ErrMalformed, "%s is not valid JSON: %v (at byte %d)", what, se, se.Offset)
	}
	return badRequest(ErrMalformed, "%s is not valid JSON", what)
}

// jsonKind names the JSON kind that starts with c.
func jsonKind(c byte) string {
	switch {
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	default:
		return "a number"
	}
}

// valueKind turns json.UnmarshalTypeError.Value ("number 1.5", "bool", …)
// into words a mapper author reads.
func valueKind(v string) string {
	switch {
	case strings.HasPrefix(v, "number"):
		return "a number"
	case v == "bool":
		return "a boolean"
	case v == "string":
		return "a string"
	case v == "array":
		return "an array"
	case v == "object":
		return "an object"
	}
	return v
}
