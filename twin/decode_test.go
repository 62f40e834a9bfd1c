package twin

import (
	"errors"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func sp(s string) *string { return &s }
func bp(b bool) *bool     { return &b }

// TestDecodeUpdateGolden: payloads as KubeEdge mappers and KubeEdge's own
// tooling send them, and the Update each decodes to.
func TestDecodeUpdateGolden(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Update
	}{
		{
			name: "mappers-go CreateMessageTwinUpdate",
			in:   `{"event_id":"","timestamp":1700000000000,"twin":{"temperature":{"actual":{"value":"19","metadata":{}},"metadata":{"type":"int"}}}}`,
			want: Update{Timestamp: 1700000000000, Twin: map[string]*Report{
				"temperature": {Actual: sp("19"), Type: "int"},
			}},
		},
		{
			name: "full property with expected, versions and metadata timestamps",
			in: `{"event_id":"e1","timestamp":1,"twin":{"t":{"expected":{"value":"20","metadata":{"timestamp":1700000000000}},` +
				`"actual":{"value":"19","metadata":{"timestamp":1700000000001}},"optional":true,"metadata":{"type":"int"},` +
				`"expected_version":{"cloud":3,"edge":0},"actual_version":{"cloud":0,"edge":7}}}}`,
			want: Update{EventID: "e1", Timestamp: 1, Twin: map[string]*Report{
				"t": {Actual: sp("19"), Expected: sp("20"), Type: "int", Optional: bp(true)},
			}},
		},
		{
			name: "null deletes, other keys untouched",
			in:   ` {"event_id":"e2", "twin":{"a": null ,"b":{"actual":{"value":"x"}}}} `,
			want: Update{EventID: "e2", Twin: map[string]*Report{"a": nil, "b": {Actual: sp("x")}}},
		},
		{
			name: "KubeEdge docs example with metadata type Updated",
			in:   `{"event_id":"","timestamp":0,"twin":{"temperature-status":{"actual":{"value":"on"},"metadata":{"type":"Updated"}}}}`,
			want: Update{Twin: map[string]*Report{"temperature-status": {Actual: sp("on"), Type: "Updated"}}},
		},
		{
			name: "empty twin is a valid no-op",
			in:   `{"event_id":"e3","twin":{}}`,
			want: Update{EventID: "e3", Twin: map[string]*Report{}},
		},
		{
			name: "every key character, empty value, unicode value, unknown fields",
			in:   `{"twin":{"aZ09-_.,:/@#":{"actual":{"value":""}},"u":{"actual":{"value":"température ☀"}}},"extra":[1,2]}`,
			want: Update{Twin: map[string]*Report{
				"aZ09-_.,:/@#": {Actual: sp("")},
				"u":            {Actual: sp("température ☀")},
			}},
		},
		{
			name: "expected without value is ignored, not an error",
			in:   `{"twin":{"a":{"expected":{"metadata":{"timestamp":5}}}}}`,
			want: Update{Twin: map[string]*Report{"a": {}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeUpdate([]byte(tt.in), DefaultLimits())
			if err != nil {
				t.Fatalf("DecodeUpdate: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %s\nwant %s", dumpUpdate(got), dumpUpdate(tt.want))
			}
		})
	}
}

func dumpUpdate(u Update) string {
	var b strings.Builder
	b.WriteString("{id=" + u.EventID + " twin={")
	for k, r := range u.Twin {
		if r == nil {
			b.WriteString(k + ":null ")
			continue
		}
		b.WriteString(k + ":{")
		if r.Actual != nil {
			b.WriteString("actual=" + *r.Actual + " ")
		}
		if r.Expected != nil {
			b.WriteString("expected=" + *r.Expected + " ")
		}
		if r.Optional != nil {
			b.WriteString("optional ")
		}
		b.WriteString("type=" + r.Type + "} ")
	}
	return b.String() + "}}"
}

// goName matches Go identifiers of this package's decoding types or of Go
// itself, which must never reach a device's reason field.
var goName = regexp.MustCompile(`\bin[A-Z]|Go (struct|value)|map\[|\*?twin\.`)

type errCase struct {
	name     string
	in       string
	sentinel error
	reason   string // substring of the reason
}

func checkErr(t *testing.T, err error, c errCase) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", c.sentinel)
	}
	if !errors.Is(err, c.sentinel) {
		t.Fatalf("error %q is not %v", err, c.sentinel)
	}
	if code := CodeOf(err); code != CodeBadRequest {
		t.Fatalf("code %d, want 400", code)
	}
	if !strings.Contains(err.Error(), c.reason) {
		t.Fatalf("reason %q does not contain %q", err, c.reason)
	}
	if goName.MatchString(err.Error()) {
		t.Fatalf("reason %q leaks Go names", err)
	}
}

func TestDecodeUpdateErrors(t *testing.T) {
	long := strings.Repeat("x", 513)
	tests := []errCase{
		{"not JSON", `hello`, ErrMalformed, "payload is not valid JSON"},
		{"truncated", `{"twin":{"a":`, ErrMalformed, "payload is not valid JSON: unexpected end of JSON input"},
		{"trailing garbage", `{"twin":{}} x`, ErrMalformed, "payload is not valid JSON"},
		{"empty", ``, ErrMalformed, "payload is empty"},
		{"null body", `null`, ErrMalformed, "payload must be a JSON object, not null"},
		{"array body", `[]`, ErrMalformed, "payload must be a JSON object, not an array"},
		{"string body", `"twin"`, ErrMalformed, "payload must be a JSON object, not a string"},
		{"missing twin", `{"event_id":"e"}`, ErrMalformed, "twin is required"},
		{"null twin", `{"twin":null}`, ErrMalformed, "twin is required"},
		{"twin is an array", `{"twin":[]}`, ErrMalformed, "twin must be an object, not an array"},
		{"entry is an array", `{"twin":{"a":[]}}`, ErrMalformed, `twin "a" must be a JSON object, not an array`},
		{"entry is a string", `{"twin":{"a":"19"}}`, ErrMalformed, `twin "a" must be a JSON object, not a string`},
		{"actual is a number", `{"twin":{"a":{"actual":5}}}`, ErrMalformed, `twin "a": actual must be an object, not a number`},
		{"value is a number", `{"twin":{"a":{"actual":{"value":5}}}}`, ErrMalformed, `twin "a": actual.value must be a string, not a number`},
		{"optional is a string", `{"twin":{"a":{"optional":"yes","actual":{"value":"1"}}}}`, ErrMalformed, `twin "a": optional must be a boolean, not a string`},
		{"type is a number", `{"twin":{"a":{"metadata":{"type":5}}}}`, ErrMalformed, `twin "a": metadata.type must be a string, not a number`},
		{"actual without value", `{"twin":{"a":{"actual":{}}}}`, ErrMalformed, `twin "a": actual.value is required`},
		{"actual value null", `{"twin":{"a":{"actual":{"value":null}}}}`, ErrMalformed, `twin "a": actual.value is required`},
		{"event_id is a number", `{"event_id":1,"twin":{}}`, ErrMalformed, "event_id must be a string, not a number"},
		{"timestamp is a string", `{"timestamp":"1","twin":{}}`, ErrMalformed, "timestamp must be an integer, not a string"},
		{"timestamp is fractional", `{"timestamp":1.5,"twin":{}}`, ErrMalformed, "timestamp must be an integer, not a number"},
		{"key with a space", `{"twin":{"a b":{"actual":{"value":"1"}}}}`, ErrKey, `property name "a b" is invalid`},
		{"empty key", `{"twin":{"":{"actual":{"value":"1"}}}}`, ErrKey, `property name "" is invalid`},
		{"key too long", `{"twin":{"` + strings.Repeat("k", 129) + `":null}}`, ErrKey, "is invalid: want 1-128 characters"},
		{"key with unicode", `{"twin":{"té":null}}`, ErrKey, `property name "té" is invalid`},
		{"value of 513 characters", `{"twin":{"a":{"actual":{"value":"` + long + `"}}}}`, ErrValueTooLong,
			`twin "a": actual.value is 513 characters, more than the limit of 512`},
		{"value of 513 two-byte characters", `{"twin":{"a":{"actual":{"value":"` + strings.Repeat("é", 513) + `"}}}}`, ErrValueTooLong,
			"is 513 characters"},
		{"expected of 513 characters", `{"twin":{"a":{"expected":{"value":"` + long + `"}}}}`, ErrValueTooLong,
			`twin "a": expected.value is 513 characters`},
		{"event_id too long", `{"event_id":"` + strings.Repeat("e", 257) + `","twin":{}}`, ErrValueTooLong,
			"event_id is 257 characters, more than the limit of 256"},
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeUpdate([]byte(c.in), Limits{})
			checkErr(t, err, c)
		})
	}
}

func TestDecodeUpdateLimits(t *testing.T) {
	t.Run("512 two-byte characters fit", func(t *testing.T) {
		in := `{"twin":{"a":{"actual":{"value":"` + strings.Repeat("é", 512) + `"}}}}`
		if _, err := DecodeUpdate([]byte(in), Limits{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("configured value length", func(t *testing.T) {
		in := `{"twin":{"a":{"actual":{"value":"12345"}}}}`
		_, err := DecodeUpdate([]byte(in), Limits{MaxValueLen: 4})
		checkErr(t, err, errCase{sentinel: ErrValueTooLong, reason: "is 5 characters, more than the limit of 4"})
		if _, err := DecodeUpdate([]byte(in), Limits{MaxValueLen: 5}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("payload size is checked before parsing", func(t *testing.T) {
		in := `{"twin":{}}` + strings.Repeat(" ", 100) // valid JSON, but long
		_, err := DecodeUpdate([]byte(in), Limits{MaxPayload: 64})
		checkErr(t, err, errCase{sentinel: ErrTooLarge, reason: "payload is 111 bytes, more than the limit of 64"})
		big := make([]byte, DefaultMaxPayload+1) // not even JSON: size wins
		_, err = DecodeUpdate(big, Limits{})
		checkErr(t, err, errCase{sentinel: ErrTooLarge, reason: "more than the limit of 262144"})
	})
	t.Run("property count", func(t *testing.T) {
		var b strings.Builder
		b.WriteString(`{"twin":{`)
		for i := range 257 {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(`"p` + strconv.Itoa(i) + `":null`)
		}
		b.WriteString(`}}`)
		_, err := DecodeUpdate([]byte(b.String()), Limits{})
		checkErr(t, err, errCase{sentinel: ErrTooMany, reason: "update names 257 properties, more than the limit of 256"})
		if _, err := DecodeUpdate([]byte(b.String()), Limits{MaxProperties: 257}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("first bad key in sorted order is reported", func(t *testing.T) {
		_, err := DecodeUpdate([]byte(`{"twin":{"z z":null,"b b":null,"a":null}}`), Limits{})
		checkErr(t, err, errCase{sentinel: ErrKey, reason: `"b b"`})
	})
	t.Run("event_id survives an error", func(t *testing.T) {
		for _, in := range []string{
			`{"event_id":"e9","twin":{"a":{"actual":5}}}`,
			`{"event_id":"e9","twin":[]}`,
			`{"twin":[],"event_id":"e9"}`,
			`{"event_id":"e9","timestamp":"now","twin":{}}`,
		} {
			u, err := DecodeUpdate([]byte(in), Limits{})
			if err == nil || u.EventID != "e9" {
				t.Errorf("%s: got %q, %v; want the event_id with an error", in, u.EventID, err)
			}
		}
		u, err := DecodeUpdate([]byte(`{"event_id":"`+strings.Repeat("e", 300)+`","twin":[]}`), Limits{})
		if err == nil || u.EventID != "" || !errors.Is(err, ErrMalformed) {
			t.Errorf("oversize id echoed or error lost: %q, %v", u.EventID, err)
		}
	})
	t.Run("long bad key is cut in the reason", func(t *testing.T) {
		_, err := DecodeUpdate([]byte(`{"twin":{"`+strings.Repeat("é", 10000)+`":null}}`), Limits{})
		if err == nil || len(err.Error()) > 300 {
			t.Fatalf("reason of %d bytes: %v", len(err.Error()), err)
		}
	})
}

func TestDecodeStateUpdate(t *testing.T) {
	good := []struct {
		in   string
		want StateUpdate
	}{
		// mappers-go CreateMessageState: no event_id, attributes null.
		{`{"event_id":"","timestamp":1700000000000,"state":"online","attributes":null}`, StateUpdate{Timestamp: 1700000000000, State: StateOnline}},
		{`{"event_id":"s1","state":"OK"}`, StateUpdate{EventID: "s1", State: StateOK}},
		{`{"state":"Offline"}`, StateUpdate{State: StateOffline}},
		{`{"state":"UNKNOWN"}`, StateUpdate{State: StateUnknown}},
		{`{"state":"unhealthy"}`, StateUpdate{State: StateUnhealthy}},
	}
	for _, g := range good {
		got, err := DecodeStateUpdate([]byte(g.in), Limits{})
		if err != nil {
			t.Fatalf("%s: %v", g.in, err)
		}
		if got != g.want {
			t.Fatalf("%s: got %+v, want %+v", g.in, got, g.want)
		}
	}
	bad := []errCase{
		{"unknown state", `{"event_id":"s","state":"sleeping"}`, ErrState, `state "sleeping" is invalid: want one of online, offline, ok, unknown, unhealthy`},
		{"mappers-go DISCONNECTED", `{"state":"DISCONNECTED"}`, ErrState, `state "DISCONNECTED" is invalid`},
		{"empty state", `{"state":""}`, ErrState, `state "" is invalid`},
		{"missing state", `{"event_id":"s"}`, ErrState, "state is required"},
		{"state is a number", `{"state":1}`, ErrMalformed, "state must be a string, not a number"},
		{"not JSON", `{state:online}`, ErrMalformed, "payload is not valid JSON"},
		{"null", `null`, ErrMalformed, "payload must be a JSON object"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeStateUpdate([]byte(c.in), Limits{})
			checkErr(t, err, c)
		})
	}
	if s, _ := DecodeStateUpdate([]byte(`{"event_id":"keep","state":"nope"}`), Limits{}); s.EventID != "keep" {
		t.Fatalf("event_id lost on error: %+v", s)
	}
}

func TestDecodeGet(t *testing.T) {
	for _, dec := range []func([]byte, Limits) (Get, error){DecodeGet, DecodeMembershipGet} {
		g, err := dec([]byte(`{"event_id":"g1"}`), Limits{})
		if err != nil || g != (Get{EventID: "g1"}) {
			t.Fatalf("got %+v, %v", g, err)
		}
		g, err = dec([]byte(`{}`), Limits{})
		if err != nil || g != (Get{}) {
			t.Fatalf("empty object: got %+v, %v", g, err)
		}
		for _, c := range []errCase{
			{"array", `[]`, ErrMalformed, "payload must be a JSON object, not an array"},
			{"event_id number", `{"event_id":7}`, ErrMalformed, "event_id must be a string, not a number"},
			{"not JSON", `{`, ErrMalformed, "payload is not valid JSON"},
		} {
			_, err := dec([]byte(c.in), Limits{})
			checkErr(t, err, c)
		}
	}
}

// TestValidKey checks the byte loop against the pattern as KubeEdge writes it.
func TestValidKey(t *testing.T) {
	re := regexp.MustCompile(`^[a-zA-Z0-9-_.,:/@#]{1,128}$`)
	cases := []string{"", "a", "A-Z_0.9,:/@#", "a b", "a\n", "é", "a+b", "a=b", "a$", "a\x00",
		strings.Repeat("k", 128), strings.Repeat("k", 129), "[", "]", "\\", "^", "`"}
	for c := range 256 {
		cases = append(cases, "x"+string(rune(c)))
	}
	for _, k := range cases {
		if got, want := ValidKey(k), re.MatchString(k); got != want {
			t.Errorf("ValidKey(%q) = %v, regexp says %v", k, got, want)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Limits{}).Validate(); err != nil {
		t.Fatal(err)
	}
	err := Limits{MaxValueLen: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "maxValueLen") {
		t.Fatalf("got %v", err)
	}
}
