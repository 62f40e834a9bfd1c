package twin

import (
	"fmt"
	"unicode/utf8"
)

// Defaults for Limits (SPEC §10). The key pattern is fixed: it is part of the
// KubeEdge topic contract, not a tunable.
const (
	DefaultMaxPayload    = 256 << 10 // the MQTT packet limit; one twin payload may use all of it
	DefaultMaxValueLen   = 512       // characters, KubeEdge's limit
	DefaultMaxProperties = 256       // per update
	DefaultMaxEventIDLen = 256       // characters; event_id is echoed back, so it is bounded too

	maxKeyLen = 128
)

// Limits bounds what a decoder accepts from a device. A zero field means its
// default, so Limits{} is usable; DefaultLimits spells the defaults out.
type Limits struct {
	MaxPayload    int // bytes of one payload
	MaxValueLen   int // characters (Unicode code points) of one value
	MaxProperties int // properties named in one twin update
	MaxEventIDLen int // characters of event_id
}

// DefaultLimits returns the limits of SPEC §10.
func DefaultLimits() Limits {
	return Limits{
		MaxPayload:    DefaultMaxPayload,
		MaxValueLen:   DefaultMaxValueLen,
		MaxProperties: DefaultMaxProperties,
		MaxEventIDLen: DefaultMaxEventIDLen,
	}
}

// Validate reports a negative limit, naming the field as a config key would.
func (l Limits) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{
		{"maxPayload", l.MaxPayload},
		{"maxValueLen", l.MaxValueLen},
		{"maxProperties", l.MaxProperties},
		{"maxEventIDLen", l.MaxEventIDLen},
	} {
		if f.v < 0 {
			return fmt.Errorf("twin limits: %s must not be negative, got %d", f.name, f.v)
		}
	}
	return nil
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxPayload <= 0 {
		l.MaxPayload = d.MaxPayload
	}
	if l.MaxValueLen <= 0 {
		l.MaxValueLen = d.MaxValueLen
	}
	if l.MaxProperties <= 0 {
		l.MaxProperties = d.MaxProperties
	}
	if l.MaxEventIDLen <= 0 {
		l.MaxEventIDLen = d.MaxEventIDLen
	}
	return l
}

// ValidKey reports whether name matches ^[a-zA-Z0-9-_.,:/@#]{1,128}$, the
// KubeEdge twin key pattern. A byte loop instead of a regexp: it is on the
// per-message path and the set is ASCII, so bytes and characters coincide.
func ValidKey(name string) bool {
	if len(name) == 0 || len(name) > maxKeyLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '_', c == '.', c == ',', c == ':', c == '/', c == '@', c == '#':
		default:
			return false
		}
	}
	return true
}

func checkKey(name string) error {
	if !ValidKey(name) {
		return badRequest(ErrKey,
			"property name %s is invalid: want 1-128 characters from a-z A-Z 0-9 - _ . , : / @ #", quote(name))
	}
	return nil
}

// checkLen bounds a device string in characters, as SPEC §10 states the limit;
// what names the field in the reason.
func checkLen(what, s string, limit int) error {
	// Cheap exit first: a string no longer in bytes than the limit cannot be longer in characters.
	if len(s) <= limit {
		return nil
	}
	if n := utf8.RuneCountInString(s); n > limit {
		return badRequest(ErrValueTooLong, "%s is %d characters, more than the limit of %d", what, n, limit)
	}
	return nil
}
