package twin

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// A reader of the plain shape of a twin update, the one mappers send on every poll:
//
//	{"event_id":"…","timestamp":…,"twin":{"temp":{"actual":{"value":"…"},"metadata":{"type":"int"}}}}
//
// without reflection, with three allocations. It accepts exactly what DecodeUpdate accepts and
// returns the same Update for it, for a subset of inputs: anything else — an escape in a string,
// a key that matches a field only ignoring case, a key named twice, a null or a number where a
// string goes, a deep or odd value in a field nobody reads, anything DecodeUpdate would refuse —
// makes it give up (ok false) and DecodeUpdate decodes with encoding/json, which also produces
// every error and its reason. FuzzDecodeUpdateFast checks the two agree.
//
// On a loaded edge encoding/json was a tenth of the agent's CPU and an eighth of its garbage.

// fastReader reads b; s is b as a string, so that every string the Update holds is a substring
// of one copy of the payload.
type fastReader struct {
	b []byte
	s string
	i int
}

// fastEntry is one property as read, before the Update is built.
type fastEntry struct {
	name             string
	null             bool // the property is null: delete it
	actual, expected string
	hasAct, hasExp   bool
	optional, hasOpt bool
	typ              string
}

// fastReport holds a Report and the values it points to, so one allocation serves a property.
type fastReport struct {
	r                Report
	actual, expected string
	optional         bool
}

const fastMaxDepth = 16 // deeper ignored values are left to encoding/json

func decodeUpdateFast(b []byte, lim Limits) (Update, bool) {
	if len(b) > lim.MaxPayload {
		return Update{}, false
	}
	r := fastReader{b: b, s: string(b)}
	var u Update
	var entries []fastEntry
	var seenID, seenTS, seenTwin bool
	r.ws()
	if !r.byte('{') {
		return Update{}, false
	}
	ok := r.members(func(key string) bool {
		switch key {
		case "event_id":
			if seenID {
				return false
			}
			seenID = true
			var ok bool
			u.EventID, ok = r.str()
			return ok
		case "timestamp":
			if seenTS {
				return false
			}
			seenTS = true
			var ok bool
			u.Timestamp, ok = r.int64()
			return ok
		case "twin":
			if seenTwin {
				return false
			}
			seenTwin = true
			var ok bool
			entries, ok = r.entries(lim)
			return ok
		}
		return !foldsTo(key, "event_id", "timestamp", "twin") && r.skip(0)
	})
	if !ok || !seenTwin {
		return Update{}, false
	}
	r.ws()
	if r.i != len(r.b) || checkEventID(u.EventID, lim) != nil || len(entries) > lim.MaxProperties {
		return Update{}, false
	}
	reports := make([]fastReport, len(entries))
	u.Twin = make(map[string]*Report, len(entries))
	for i, e := range entries {
		if _, dup := u.Twin[e.name]; dup || !ValidKey(e.name) {
			return Update{}, false
		}
		if e.null {
			u.Twin[e.name] = nil
			continue
		}
		if (e.hasAct && checkLen("", e.actual, lim.MaxValueLen) != nil) ||
			(e.hasExp && checkLen("", e.expected, lim.MaxValueLen) != nil) {
			return Update{}, false
		}
		fr := &reports[i]
		fr.actual, fr.expected, fr.optional = e.actual, e.expected, e.optional
		fr.r.Type = e.typ
		if e.hasAct {
			fr.r.Actual = &fr.actual
		}
		if e.hasExp {
			fr.r.Expected = &fr.expected
		}
		if e.hasOpt {
			fr.r.Optional = &fr.optional
		}
		u.Twin[e.name] = &fr.r
	}
	return u, true
}

// entries reads the twin object.
func (r *fastReader) entries(lim Limits) ([]fastEntry, bool) {
	r.ws()
	if !r.byte('{') {
		return nil, false
	}
	var out []fastEntry
	ok := r.members(func(name string) bool {
		if len(out) == lim.MaxProperties {
			return false
		}
		e := fastEntry{name: name}
		if r.lit("null") {
			e.null = true
		} else if !r.entry(&e) {
			return false
		}
		out = append(out, e)
		return true
	})
	return out, ok
}

// entry reads one property's object.
func (r *fastReader) entry(e *fastEntry) bool {
	if !r.byte('{') {
		return false
	}
	var seenAct, seenExp, seenOpt, seenMeta bool
	return r.members(func(key string) bool {
		switch key {
		case "actual":
			if seenAct {
				return false
			}
			seenAct, e.hasAct = true, true
			var ok bool
			e.actual, ok = r.valueObject()
			return ok
		case "expected":
			if seenExp {
				return false
			}
			seenExp, e.hasExp = true, true
			var ok bool
			e.expected, ok = r.valueObject()
			return ok
		case "optional":
			if seenOpt {
				return false
			}
			seenOpt, e.hasOpt = true, true
			switch {
			case r.lit("true"):
				e.optional = true
				return true
			case r.lit("false"):
				return true
			}
			return false
		case "metadata":
			if seenMeta || !r.byte('{') {
				return false
			}
			seenMeta = true
			seenType := false
			return r.members(func(key string) bool {
				if key == "type" {
					if seenType {
						return false
					}
					seenType = true
					var ok bool
					e.typ, ok = r.str()
					return ok
				}
				return !foldsTo(key, "type") && r.skip(1)
			})
		}
		return !foldsTo(key, "actual", "expected", "optional", "metadata") && r.skip(0)
	})
}

// valueObject reads {"value": "…", …}, which must carry a string value.
func (r *fastReader) valueObject() (string, bool) {
	if !r.byte('{') {
		return "", false
	}
	var v string
	seen := false
	ok := r.members(func(key string) bool {
		if key == "value" {
			if seen {
				return false
			}
			seen = true
			var ok bool
			v, ok = r.str()
			return ok
		}
		return !foldsTo(key, "value") && r.skip(1)
	})
	return v, ok && seen
}

// members reads the members of an object whose '{' was read, through its '}', calling member
// with each key once the reader is at the value.
func (r *fastReader) members(member func(key string) bool) bool {
	r.ws()
	if r.byte('}') {
		return true
	}
	for {
		r.ws()
		key, ok := r.str()
		if !ok {
			return false
		}
		r.ws()
		if !r.byte(':') {
			return false
		}
		r.ws()
		if !member(key) {
			return false
		}
		r.ws()
		if r.byte('}') {
			return true
		}
		if !r.byte(',') {
			return false
		}
	}
}

// skip reads and checks one value nobody reads.
func (r *fastReader) skip(depth int) bool {
	if depth > fastMaxDepth || r.i == len(r.b) {
		return false
	}
	switch c := r.b[r.i]; {
	case c == '"':
		_, ok := r.str()
		return ok
	case c == '{':
		r.i++
		return r.members(func(string) bool { return r.skip(depth + 1) })
	case c == '[':
		r.i++
		r.ws()
		if r.byte(']') {
			return true
		}
		for {
			r.ws()
			if !r.skip(depth + 1) {
				return false
			}
			r.ws()
			if r.byte(']') {
				return true
			}
			if !r.byte(',') {
				return false
			}
		}
	case c == 't':
		return r.lit("true")
	case c == 'f':
		return r.lit("false")
	case c == 'n':
		return r.lit("null")
	}
	_, ok := r.number()
	return ok
}

// str reads a string without escapes or control characters; its bytes are valid UTF-8.
func (r *fastReader) str() (string, bool) {
	if !r.byte('"') {
		return "", false
	}
	start, ascii := r.i, true
	for ; r.i < len(r.b); r.i++ {
		switch c := r.b[r.i]; {
		case c == '"':
			s := r.s[start:r.i]
			r.i++
			return s, ascii || utf8.ValidString(s)
		case c == '\\' || c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// int64 reads an integer as encoding/json decodes one into an int64: no fraction, no exponent.
func (r *fastReader) int64() (int64, bool) {
	lit, ok := r.number()
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(lit, 10, 64)
	return n, err == nil
}

// number reads a JSON number.
func (r *fastReader) number() (string, bool) {
	start := r.i
	r.byte('-')
	switch {
	case r.byte('0'):
	case r.digit19():
		r.digits()
	default:
		return "", false
	}
	if r.byte('.') {
		if !r.digits() {
			return "", false
		}
	}
	if r.byte('e') || r.byte('E') {
		if !r.byte('+') {
			r.byte('-')
		}
		if !r.digits() {
			return "", false
		}
	}
	return r.s[start:r.i], true
}

func (r *fastReader) digit19() bool {
	if r.i < len(r.b) && '1' <= r.b[r.i] && r.b[r.i] <= '9' {
		r.i++
		return true
	}
	return false
}

// digits reads one or more digits.
func (r *fastReader) digits() bool {
	start := r.i
	for r.i < len(r.b) && '0' <= r.b[r.i] && r.b[r.i] <= '9' {
		r.i++
	}
	return r.i > start
}

func (r *fastReader) byte(c byte) bool {
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

func (r *fastReader) lit(s string) bool {
	if strings.HasPrefix(r.s[r.i:], s) {
		r.i += len(s)
		return true
	}
	return false
}

func (r *fastReader) ws() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// foldsTo reports whether key is one of names ignoring case, as encoding/json matches keys to
// fields: such a key is a field to encoding/json and is left to it.
func foldsTo(key string, names ...string) bool {
	for _, n := range names {
		if strings.EqualFold(key, n) {
			return true
		}
	}
	return false
}
