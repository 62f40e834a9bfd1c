package twin

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the encoders")

// checkGolden compares got with testdata/name.golden byte for byte.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestEncodeGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got  %s\n want %s", name, got, want)
	}
	if !json.Valid(got) {
		t.Errorf("%s: not valid JSON", name)
	}
}

// goldenTwin builds a twin through the rules: the cloud wants temp=20 and
// on=true, the device reports temp=19, on=true and a label with characters
// that encoding/json escapes.
func goldenTwin(t *testing.T) (Twin, Update, Twin, []Change) {
	t.Helper()
	cur, _ := mustDesired(t, Twin{}, desired(3, "temp", "20", "on", "true"), now)
	cur, _ = mustReport(t, cur, report("on", "true", "blob", "AAEC/w=="), now+1)
	upd := report(
		"temp", &Report{Actual: sp("19"), Type: "int"},
		"label", `hello <&> "☀"`,
		"blob", nil,
		"ghost", nil, // never existed: accepted and echoed as null
		"on", &Report{Expected: sp("false")}, // ignored expected: not echoed
	)
	upd.EventID = "3f1c9e2a-update"
	next, changed := mustReport(t, cur, upd, now+2)
	return cur, upd, next, changed
}

func TestEncodeGolden(t *testing.T) {
	_, upd, next, changed := goldenTwin(t)
	seq := make([]byte, 16*8)
	for i := range seq {
		seq[i] = byte(i)
	}
	ids := NewEventID(bytes.NewReader(seq)) // distinct, fixed ids

	checkGolden(t, "update_result", EncodeResult(upd, next, now+3))

	_, err := DecodeUpdate([]byte(`{"event_id":"e-bad","twin":{"temp":{"actual":5}}}`), Limits{})
	checkGolden(t, "update_error", EncodeError("e-bad", CodeOf(err), err.Error(), now+3))

	delta, ok := EncodeDelta(ids(), next, now+3)
	if !ok {
		t.Fatal("no delta")
	}
	checkGolden(t, "delta", delta)
	checkGolden(t, "document", EncodeDocument(upd.EventID, changed, now+3))
	checkGolden(t, "get_result", EncodeGetResult("g-1", next, now+3))
	checkGolden(t, "get_result_empty", EncodeGetResult("g-2", Twin{}, now+3))

	online := ApplyState(DeviceState{}, StateUpdate{State: StateOnline}, now)
	checkGolden(t, "state_result", EncodeStateResult(ids(), "thermo-1", online, now+3))
	checkGolden(t, "state_result_never_online", EncodeStateResult(ids(), "thermo-2", DeviceState{State: StateOffline}, now+3))

	members := []Member{
		{Namespace: "default", Name: "thermo-1", Description: "hall", State: online,
			Attributes: map[string]Attr{"vendor": {Value: "acme", Optional: bp(false), Metadata: &TypeMetadata{Type: "string"}}},
			Twin:       next},
		{Namespace: "plant", Name: "pump-7"},
	}
	checkGolden(t, "membership_get_result", EncodeMembershipGetResult(ids(), members, now+3))
	checkGolden(t, "membership_get_result_empty", EncodeMembershipGetResult(ids(), nil, now+3))
	checkGolden(t, "membership_updated", EncodeMembershipUpdated(ids(), members[:1], members[1:], now+3))

	// What devices send, for the simulator.
	checkGolden(t, "update", EncodeUpdate(upd))
	checkGolden(t, "state_update", EncodeStateUpdate(StateUpdate{EventID: "s-1", Timestamp: now, State: StateOnline}))
	checkGolden(t, "get", EncodeGet(Get{EventID: "g-1", Timestamp: now}))

	status, err := json.Marshal(Reported(next))
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "status_twins", status)
}

// TestEncodersOmitVersions: nothing sent to a device carries version fields.
func TestEncodersOmitVersions(t *testing.T) {
	_, upd, next, changed := goldenTwin(t)
	delta, _ := EncodeDelta("d", next, now)
	m := Member{Namespace: "n", Name: "d", Twin: next}
	for name, b := range map[string][]byte{
		"result":     EncodeResult(upd, next, now),
		"delta":      delta,
		"document":   EncodeDocument("e", changed, now),
		"get":        EncodeGetResult("g", next, now),
		"membership": EncodeMembershipUpdated("m", []Member{m}, []Member{m}, now),
	} {
		if bytes.Contains(b, []byte("_version")) {
			t.Errorf("%s carries versions: %s", name, b)
		}
	}
}

// TestEntryShape: a property in its full form is the KubeEdge shape of the
// brief, field for field.
func TestEntryShape(t *testing.T) {
	p := Property{
		Expected: &Value{"20", 1700000000000}, Actual: &Value{"19", 1700000000001},
		Optional: true, Type: TypeInt,
		ExpectedVersion: Version{Cloud: 3}, ActualVersion: Version{Edge: 7},
	}
	got, err := json.Marshal(p.Entry())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"expected":{"value":"20","metadata":{"timestamp":1700000000000}},` +
		`"actual":{"value":"19","metadata":{"timestamp":1700000000001}},` +
		`"optional":true,"metadata":{"type":"int"},` +
		`"expected_version":{"cloud":3,"edge":0},"actual_version":{"cloud":0,"edge":7}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// And it decodes back into the wire type unchanged.
	var e Entry
	if err := json.Unmarshal(got, &e); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(&e)
	if string(again) != want {
		t.Fatalf("round trip: %s", again)
	}
}

func TestDocumentNulls(t *testing.T) {
	_, _, _, changed := goldenTwin(t)
	doc := Document(changed)
	if d := doc["label"]; d.Last != nil || d.Current == nil {
		t.Fatalf("new property: %+v", d)
	}
	if d := doc["blob"]; d.Last == nil || d.Current != nil {
		t.Fatalf("deleted property: %+v", d)
	}
	if _, ok := doc["ghost"]; ok {
		t.Fatal("a no-op delete is in the document")
	}
	b := EncodeDocument("e", changed, now)
	if !bytes.Contains(b, []byte(`"blob":{"last":{`)) || !bytes.Contains(b, []byte(`"current":null}`)) ||
		!bytes.Contains(b, []byte(`"label":{"last":null,"current":{`)) {
		t.Fatalf("document: %s", b)
	}
}

func TestNewEventID(t *testing.T) {
	gen := NewEventID(bytes.NewReader(make([]byte, 20)))
	if id := gen(); id != "00000000-0000-4000-8000-000000000000" {
		t.Fatalf("id %q", id)
	}
	if id := gen(); id != "" {
		t.Fatalf("id from an exhausted reader: %q", id)
	}
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	gen = NewEventID(bytes.NewReader(bytes.Repeat([]byte{0xff, 0x13, 0x7a}, 32)))
	for range 3 {
		if id := gen(); !uuid.MatchString(id) {
			t.Fatalf("not a v4 uuid: %q", id)
		}
	}
}
