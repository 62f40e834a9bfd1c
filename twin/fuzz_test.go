package twin

import (
	"errors"
	"reflect"
	"testing"
)

// The seed corpus lives in testdata/fuzz/<FuzzName>/ (go test runs it as
// ordinary tests); the f.Add seeds below cover the golden payloads.

// fuzzLimits leaves room for re-encoding: encoding/json escapes <, > and &
// as six bytes each, so a payload that fits the limit may not fit once
// re-encoded, and that is not a decoding instability.
func fuzzLimits(n int) Limits {
	l := DefaultLimits()
	l.MaxPayload = max(l.MaxPayload, 8*n)
	return l
}

func FuzzDecodeUpdate(f *testing.F) {
	for _, s := range []string{
		`{"event_id":"","timestamp":1700000000000,"twin":{"temperature":{"actual":{"value":"19","metadata":{}},"metadata":{"type":"int"}}}}`,
		`{"event_id":"e","twin":{"temp":null,"on":{"actual":{"value":"true"},"expected":{"value":"false"},"optional":false}}}`,
		`{"twin":{"a":{"actual":5}}}`,
		`{"twin":[]}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	types := map[string]string{"temp": "INT", "on": "BOOLEAN", "label": "STRING", "humid": "DOUBLE", "a": "BYTES"}
	base, _, err := ApplyDesired(Twin{}, Desired{Version: Version{Cloud: 2}, Props: map[string]DesiredValue{
		"temp": {Value: "20", Type: "INT"}, "on": {Value: "true", Type: "BOOLEAN"},
	}}, now)
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := DecodeUpdate(b, DefaultLimits())
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeBadRequest || e.Reason == "" || e.Err == nil {
				t.Fatalf("error %#v is not a 400 *Error with a reason", err)
			}
			return
		}
		// Stable: what decodes, re-encodes to something that decodes the same.
		b2 := EncodeUpdate(u)
		u2, err := DecodeUpdate(b2, fuzzLimits(len(b2)))
		if err != nil {
			t.Fatalf("re-decode of %s: %v", b2, err)
		}
		if !reflect.DeepEqual(u, u2) {
			t.Fatalf("unstable:\n first  %s\n second %s", dumpUpdate(u), dumpUpdate(u2))
		}
		// The rules hold on anything that decodes: all or nothing, and every
		// stored actual is valid for its type.
		before := deepCopy(base)
		next, changed, err := ApplyReport(base, u, types, now)
		if !reflect.DeepEqual(base, before) {
			t.Fatal("ApplyReport modified its input")
		}
		if err != nil {
			if changed != nil || !reflect.DeepEqual(next, before) {
				t.Fatal("ApplyReport changed the twin on error")
			}
			return
		}
		for name, p := range next.Props {
			if !ValidKey(name) {
				t.Fatalf("stored invalid key %q", name)
			}
			if p.Actual != nil && !validValue(p.Type, p.Actual.Value) {
				t.Fatalf("stored %q=%q, not a %s", name, p.Actual.Value, p.Type)
			}
		}
		_ = EncodeResult(u, next, now)
		_ = EncodeDocument(u.EventID, changed, now)
	})
}

func FuzzDecodeStateUpdate(f *testing.F) {
	for _, s := range []string{
		`{"event_id":"","timestamp":1700000000000,"state":"online","attributes":null}`,
		`{"state":"OK"}`,
		`{"state":"sleeping"}`,
		`{"state":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeStateUpdate(b, DefaultLimits())
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeBadRequest || e.Reason == "" {
				t.Fatalf("error %#v is not a 400 *Error with a reason", err)
			}
			return
		}
		switch s.State {
		case StateOnline, StateOffline, StateOK, StateUnknown, StateUnhealthy:
		default:
			t.Fatalf("state %q accepted", s.State)
		}
		b2 := EncodeStateUpdate(s)
		s2, err := DecodeStateUpdate(b2, fuzzLimits(len(b2)))
		if err != nil {
			t.Fatalf("re-decode of %s: %v", b2, err)
		}
		if s != s2 {
			t.Fatalf("unstable: %+v then %+v", s, s2)
		}
		st := ApplyState(DeviceState{}, s, now)
		_ = EncodeStateResult(s.EventID, "d", st, now)
	})
}

// FuzzDecodeUpdateFast checks that the fast reader, wherever it does not give up, returns
// exactly what encoding/json's path returns, and that it does not give up on the plain shape.
func FuzzDecodeUpdateFast(f *testing.F) {
	for _, s := range []string{
		`{"event_id":"1","timestamp":1700000000000,"twin":{"temperature":{"actual":{"value":"42"}}}}`,
		` { "event_id" : "e" , "twin" : { "temp" : null , "on" : { "actual" : { "value" : "true" , "metadata" : { "timestamp" : 1 } } , "expected" : { "value" : "false" } , "optional" : false , "metadata" : { "type" : "boolean" } } } } `,
		`{"twin":{},"x":[1,-2.5e+3,true,false,null,{"a":[]}],"timestamp":-0}`,
		`{"Twin":{"a":{"actual":{"value":"1"}}}}`,
		`{"twin":{"a":{"actual":{"value":"1"}},"a":null}}`,
		`{"twin":{"a":{"Actual":{"value":"1"}}}}`,
		`{"twin":{"a":{"actual":{"value":"\u00e9"}}}}`,
		`{"twin":{"é":{"actual":{"value":"é"}}}}`,
		`{"twin":{"a":{"actual":{"value":"1","value":"2"}}}}`,
		`{"twin":{"a":{"actual":{}}}}`,
		`{"event_id":null,"twin":{}}`,
		`{"timestamp":1.0,"twin":{}}`,
		`{"timestamp":99999999999999999999,"twin":{}}`,
		`{"twin":{"a b":{"actual":{"value":"1"}}}}`,
		`{"twin":{}} x`,
		`{"twin":{"a":{"optional":true,"expected":{"metadata":{}}}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		lim := DefaultLimits()
		lim.MaxProperties, lim.MaxValueLen, lim.MaxEventIDLen = 4, 8, 8 // reach the limits too
		fast, ok := decodeUpdateFast(b, lim)
		slow, err := decodeUpdateJSON(b, lim)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("fast reader accepted what encoding/json refuses (%v): %s", err, b)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("fast reader disagrees on %s:\n fast %s\n json %s", b, dumpUpdate(fast), dumpUpdate(slow))
		}
	})
}

// TestDecodeUpdateFastTakesThePlainShape keeps the fast reader in use: a plain update from a
// mapper must not fall back to encoding/json.
func TestDecodeUpdateFastTakesThePlainShape(t *testing.T) {
	for _, s := range []string{
		`{"event_id":"1","timestamp":1700000000000,"twin":{"temperature":{"actual":{"value":"42"}}}}`,
		`{"event_id":"","timestamp":1700000000000,"twin":{"temperature":{"actual":{"value":"19","metadata":{"timestamp":1700000000000}},"metadata":{"type":"int"}},"gone":null}}`,
	} {
		if _, ok := decodeUpdateFast([]byte(s), DefaultLimits()); !ok {
			t.Errorf("fell back on %s", s)
		}
	}
}
