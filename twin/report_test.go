package twin

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestTwinReportRoundTrip(t *testing.T) {
	cur, _ := mustDesired(t, Twin{}, desired(3, "temp", "20"), now)
	cur, _ = mustReport(t, cur, report("temp", "19", "humid", "40.5"), now+1)
	b := EncodeTwinReport(cur, "")
	got, err := DecodeTwinReport(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Twins, Reported(cur)) {
		t.Fatalf("round trip: %s", b)
	}
	const want = `{"twins":[{"propertyName":"humid","reported":{"value":"40.5","metadata":{"timestamp":"1700000000001","type":"float"}}},` +
		`{"propertyName":"temp","reported":{"value":"19","metadata":{"timestamp":"1700000000001","type":"int"}},"observedDesired":{"value":"20","metadata":{"timestamp":"1700000000000","type":"int"}}}]}`
	if string(b) != want {
		t.Fatalf("encoded\n%s\nwant\n%s", b, want)
	}
	// An empty twin is an empty list, not null: it says "nothing", which is a snapshot too.
	if b := EncodeTwinReport(Twin{}, ""); string(b) != `{"twins":[]}` {
		t.Fatalf("empty twin: %s", b)
	}
	// The uid of the Device it is about rides along when the edge knows it.
	const uid = "6b40b96b-c754-4a9e-920d-9c19a6efce0d"
	if b := EncodeTwinReport(Twin{}, uid); string(b) != `{"twins":[],"uid":"`+uid+`"}` {
		t.Fatalf("empty twin with a uid: %s", b)
	}
	if got, err := DecodeTwinReport(EncodeTwinReport(cur, uid)); err != nil || got.UID != uid || !reflect.DeepEqual(got.Twins, Reported(cur)) {
		t.Fatalf("round trip with a uid: %+v, %v", got, err)
	}
}

func TestDecodeReportsRefuse(t *testing.T) {
	for _, in := range []string{
		``, `null`, `[]`, `{}`, `{"twins":null}`, `{"twins":{}}`,
		`{"twins":[{"propertyName":"bad key"}]}`,
		`{"twins":[{"propertyName":"a"},{"propertyName":"a"}]}`,
		`{"twins":[{"propertyName":"a","reported":{"value":1}}]}`,
		`{"twins":[],"uid":"` + strings.Repeat("u", 129) + `"}`, `{"twins":[],"uid":7}`,
	} {
		if _, err := DecodeTwinReport([]byte(in)); !errors.Is(err, ErrReport) {
			t.Errorf("DecodeTwinReport(%s) = %v, want ErrReport", in, err)
		}
	}
	for _, in := range []string{``, `[]`, `{"state":"dancing"}`, `{"state":1}`, `{"state":"ok","uid":"` + strings.Repeat("u", 129) + `"}`} {
		if _, err := DecodeStateReport([]byte(in)); !errors.Is(err, ErrReport) {
			t.Errorf("DecodeStateReport(%s) = %v, want ErrReport", in, err)
		}
	}
	s := DeviceState{State: StateOnline, LastOnline: FormatTime(now)}
	got, err := DecodeStateReport(EncodeStateReport(s, "u-1"))
	if err != nil || got != (StateReport{DeviceState: s, UID: "u-1"}) {
		t.Fatalf("state round trip: %+v, %v", got, err)
	}
}

func TestMergeSnapshot(t *testing.T) {
	stored := []StatusTwin{
		{PropertyName: "temp", Reported: sv("21", 200), ObservedDesired: sv("20", 100)},
		{PropertyName: "gone", Reported: sv("a", 1)},
		{PropertyName: "actual-deleted", Reported: sv("x", 5), ObservedDesired: sv("y", 5)},
	}
	snapshot := []StatusTwin{
		// Redelivered older value: loses to the stored newer one.
		{PropertyName: "temp", Reported: sv("19", 150), ObservedDesired: sv("25", 300)},
		{PropertyName: "actual-deleted", ObservedDesired: sv("y", 5)},
		{PropertyName: "new", Reported: sv("b", 5)},
	}
	got := MergeSnapshot(stored, snapshot)
	want := []StatusTwin{
		{PropertyName: "actual-deleted", ObservedDesired: sv("y", 5)},
		{PropertyName: "new", Reported: sv("b", 5)},
		{PropertyName: "temp", Reported: sv("21", 200), ObservedDesired: sv("25", 300)},
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		t.Fatalf("got %s", g)
	}
	if !StatusEqual(got, want) || StatusEqual(got, stored) || StatusEqual(got, got[:2]) {
		t.Fatal("StatusEqual")
	}
	if got := MergeSnapshot(stored, []StatusTwin{}); len(got) != 0 {
		t.Fatalf("empty snapshot keeps %v", got)
	}
}
