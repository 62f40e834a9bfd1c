package twin

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

const now int64 = 1700000000000

// model is the DeviceModel of the tests, in the model's own upper case.
var model = map[string]string{
	"temp":    "INT",
	"humid":   "FLOAT",
	"precise": "DOUBLE",
	"on":      "BOOLEAN",
	"label":   "STRING",
	"blob":    "BYTES",
	"count":   "integer",
	"video":   "STREAM",
}

func report(pairs ...any) Update {
	u := Update{EventID: "e", Twin: map[string]*Report{}}
	for i := 0; i < len(pairs); i += 2 {
		name := pairs[i].(string)
		switch v := pairs[i+1].(type) {
		case nil:
			u.Twin[name] = nil
		case string:
			u.Twin[name] = &Report{Actual: sp(v)}
		case *Report:
			u.Twin[name] = v
		}
	}
	return u
}

func mustReport(t *testing.T, cur Twin, u Update, at int64) (Twin, []Change) {
	t.Helper()
	next, changed, err := ApplyReport(cur, u, model, at)
	if err != nil {
		t.Fatalf("ApplyReport: %v", err)
	}
	return next, changed
}

func desired(cloud uint64, pairs ...string) Desired {
	d := Desired{Version: Version{Cloud: cloud}, Props: map[string]DesiredValue{}}
	for i := 0; i < len(pairs); i += 2 {
		d.Props[pairs[i]] = DesiredValue{Value: pairs[i+1], Type: model[pairs[i]]}
	}
	return d
}

func mustDesired(t *testing.T, cur Twin, d Desired, at int64) (Twin, []Change) {
	t.Helper()
	next, changed, err := ApplyDesired(cur, d, at)
	if err != nil {
		t.Fatalf("ApplyDesired: %v", err)
	}
	return next, changed
}

// deepCopy copies a twin including its Values, so a test can detect any write
// through shared pointers as well as through the map.
func deepCopy(t Twin) Twin {
	c := Twin{DesiredVersion: t.DesiredVersion}
	if t.Props != nil {
		c.Props = make(map[string]Property, len(t.Props))
		for k, p := range t.Props {
			if p.Expected != nil {
				v := *p.Expected
				p.Expected = &v
			}
			if p.Actual != nil {
				v := *p.Actual
				p.Actual = &v
			}
			c.Props[k] = p
		}
	}
	return c
}

func TestApplyReportSetsActualAndBumpsEdgeVersion(t *testing.T) {
	var cur Twin
	next, changed := mustReport(t, cur, report("temp", "19"), now)
	p := next.Props["temp"]
	want := Property{Actual: &Value{"19", now}, Optional: true, Type: TypeInt, ActualVersion: Version{Edge: 1}}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("got %+v, want %+v", p, want)
	}
	if len(changed) != 1 || changed[0].Name != "temp" || changed[0].Last != nil || !reflect.DeepEqual(*changed[0].Current, want) {
		t.Fatalf("changed = %+v", changed)
	}
	if cur.Props != nil {
		t.Fatal("input twin modified")
	}

	next2, changed := mustReport(t, next, report("temp", "20"), now+5)
	if v := next2.Props["temp"]; v.ActualVersion.Edge != 2 || v.Actual.Value != "20" || v.Actual.Timestamp != now+5 {
		t.Fatalf("second report: %+v", v)
	}
	if changed[0].Last.Actual.Value != "19" {
		t.Fatalf("last = %+v", changed[0].Last)
	}
	if next.Props["temp"].Actual.Value != "19" {
		t.Fatal("previous twin modified")
	}
}

func TestApplyReportEqualValueIsNoChange(t *testing.T) {
	cur, _ := mustReport(t, Twin{}, report("temp", "19"), now)
	next, changed := mustReport(t, cur, report("temp", "19"), now+1000)
	if len(changed) != 0 {
		t.Fatalf("changed = %+v", changed)
	}
	if !reflect.DeepEqual(next, cur) {
		t.Fatalf("twin changed: %+v", next)
	}
	// The result still echoes what the device sent.
	if got := string(EncodeResult(report("temp", "19"), next, now+1000)); !strings.Contains(got, `"temp":{"actual":{"value":"19"`) {
		t.Fatalf("echo: %s", got)
	}
}

func TestApplyReportTimestampNeverGoesBack(t *testing.T) {
	cur, _ := mustReport(t, Twin{}, report("temp", "19"), now)
	next, _ := mustReport(t, cur, report("temp", "20"), now-60000) // edge clock stepped back
	if ts := next.Props["temp"].Actual.Timestamp; ts != now+1 {
		t.Fatalf("timestamp %d, want %d", ts, now+1)
	}
}

func TestApplyReportIgnoresExpectedAndDeviceType(t *testing.T) {
	cur, _ := mustDesired(t, Twin{}, desired(3, "temp", "20"), now)
	u := report("temp", &Report{Actual: sp("19"), Expected: sp("99"), Type: "Updated"})
	next, _ := mustReport(t, cur, u, now+1)
	p := next.Props["temp"]
	if p.Expected.Value != "20" || p.ExpectedVersion != (Version{Cloud: 3}) || p.Type != TypeInt {
		t.Fatalf("expected or type touched by a device: %+v", p)
	}
	// An entry with only an expected is accepted and changes nothing.
	next2, changed := mustReport(t, next, report("temp", &Report{Expected: sp("1")}), now+2)
	if len(changed) != 0 || !reflect.DeepEqual(next2, next) {
		t.Fatalf("expected-only entry changed the twin: %+v", changed)
	}
}

func TestApplyReportTypes(t *testing.T) {
	good := [][2]string{
		{"temp", "-42"}, {"temp", "+7"}, {"count", "9223372036854775807"},
		{"humid", "3.5"}, {"humid", "-1e-3"}, {"humid", "NaN"}, {"precise", "2.718281828459045"},
		{"on", "true"}, {"on", "false"},
		{"label", ""}, {"label", "any thing ☀"}, {"blob", "AAEC/w=="}, {"blob", "deadbeef"}, {"video", "rtsp://x"},
	}
	for _, g := range good {
		if _, _, err := ApplyReport(Twin{}, report(g[0], g[1]), model, now); err != nil {
			t.Errorf("%s=%q: %v", g[0], g[1], err)
		}
	}
	bad := []struct{ name, value, reason string }{
		{"temp", "abc", `twin "temp": value "abc" is not a valid int`},
		{"temp", "1.5", `is not a valid int`},
		{"temp", " 1", `is not a valid int`},
		{"count", "9223372036854775808", `twin "count": value "9223372036854775808" is not a valid int`},
		{"humid", "warm", `twin "humid": value "warm" is not a valid float`},
		{"precise", "1e400", `twin "precise": value "1e400" is not a valid double`},
		{"on", "yes", `twin "on": value "yes" is not a valid boolean`},
		{"on", "True", `is not a valid boolean`},
		{"on", "1", `is not a valid boolean`},
	}
	for _, b := range bad {
		cur, _ := mustReport(t, Twin{}, report("label", "keep"), now)
		before := deepCopy(cur)
		next, changed, err := ApplyReport(cur, report(b.name, b.value), model, now+1)
		if !errors.Is(err, ErrType) || CodeOf(err) != CodeBadRequest || !strings.Contains(err.Error(), b.reason) {
			t.Errorf("%s=%q: err %v, want ErrType with %q", b.name, b.value, err, b.reason)
			continue
		}
		if changed != nil || !reflect.DeepEqual(cur, before) || !reflect.DeepEqual(next, before) {
			t.Errorf("%s=%q: twin changed on error", b.name, b.value)
		}
	}
}

func TestApplyReportUnknownModelType(t *testing.T) {
	_, _, err := ApplyReport(Twin{}, report("x", "1"), map[string]string{"x": "DECIMAL"}, now)
	if !errors.Is(err, ErrModelType) || CodeOf(err) != CodeInternal || !strings.Contains(err.Error(), `twin "x": device model type "DECIMAL" is not supported`) {
		t.Fatalf("got %v", err)
	}
}

func TestApplyReportUnknownProperty(t *testing.T) {
	cur, _ := mustReport(t, Twin{}, report("temp", "19"), now)
	before := deepCopy(cur)
	_, _, err := ApplyReport(cur, report("temp", "20", "voltage", "230"), model, now+1)
	if !errors.Is(err, ErrUnknownProperty) || CodeOf(err) != CodeBadRequest || !strings.Contains(err.Error(), `twin "voltage" is not a property of the device model`) {
		t.Fatalf("got %v", err)
	}
	if !reflect.DeepEqual(cur, before) {
		t.Fatal("twin changed on error")
	}
	// A property already in the twin but gone from the model keeps its stored type.
	next, _, err := ApplyReport(cur, report("temp", "21"), map[string]string{}, now+2)
	if err != nil || next.Props["temp"].Actual.Value != "21" {
		t.Fatalf("got %v, %+v", err, next.Props["temp"])
	}
	if _, _, err := ApplyReport(cur, report("temp", "x"), nil, now+2); !errors.Is(err, ErrType) {
		t.Fatalf("stored type not checked: %v", err)
	}
}

func TestApplyReportAllOrNothing(t *testing.T) {
	cur, _ := mustReport(t, Twin{}, report("temp", "19", "label", "a"), now)
	before := deepCopy(cur)
	// "label" and "on" are fine and come first or last in order; "temp" is not.
	next, changed, err := ApplyReport(cur, report("label", "b", "on", "true", "temp", "hot"), model, now+1)
	if err == nil {
		t.Fatal("no error")
	}
	if changed != nil || !reflect.DeepEqual(next, before) || !reflect.DeepEqual(cur, before) {
		t.Fatalf("partial apply: next %+v", next)
	}
}

func TestApplyReportNullDeletes(t *testing.T) {
	cur, _ := mustReport(t, Twin{}, report("temp", "19", "label", "x"), now)
	next, changed := mustReport(t, cur, report("temp", nil), now+1)
	if _, ok := next.Props["temp"]; ok {
		t.Fatalf("temp not deleted: %+v", next.Props)
	}
	if next.Props["label"].Actual.Value != "x" {
		t.Fatal("absent key touched")
	}
	if len(changed) != 1 || changed[0].Current != nil || changed[0].Last.Actual.Value != "19" {
		t.Fatalf("changed = %+v", changed)
	}
	if _, ok := cur.Props["temp"]; !ok {
		t.Fatal("input twin modified")
	}
	// Deleting again (a redelivery) succeeds and changes nothing.
	again, changed := mustReport(t, next, report("temp", nil), now+2)
	if len(changed) != 0 || !reflect.DeepEqual(again, next) {
		t.Fatalf("second delete: %+v", changed)
	}
	// So does deleting a name that was never there, even outside the model.
	if _, changed := mustReport(t, next, report("never", nil), now+3); len(changed) != 0 {
		t.Fatalf("delete of absent: %+v", changed)
	}
}

func TestApplyReportNullKeepsCloudExpected(t *testing.T) {
	// A property the device created (optional) that later got a desired value:
	// null deletes the device's side only.
	cur, _ := mustReport(t, Twin{}, report("label", "x"), now)
	cur.Props["label"] = func() Property { p := cur.Props["label"]; p.Expected = &Value{"y", now}; return p }()
	next, changed := mustReport(t, cur, report("label", nil), now+1)
	p, ok := next.Props["label"]
	if !ok || p.Actual != nil || p.Expected.Value != "y" || p.ActualVersion.Edge != 2 {
		t.Fatalf("got %+v (ok=%v)", p, ok)
	}
	if len(changed) != 1 || changed[0].Current == nil {
		t.Fatalf("changed = %+v", changed)
	}
}

func TestApplyReportCannotDeleteCloudProperty(t *testing.T) {
	cur, _ := mustDesired(t, Twin{}, desired(3, "temp", "20"), now)
	cur, _ = mustReport(t, cur, report("temp", "19"), now+1)
	before := deepCopy(cur)
	_, _, err := ApplyReport(cur, report("temp", nil), model, now+2)
	if !errors.Is(err, ErrNotOptional) || CodeOf(err) != CodeBadRequest ||
		!strings.Contains(err.Error(), `twin "temp" is declared by the cloud and cannot be deleted`) {
		t.Fatalf("got %v", err)
	}
	if !reflect.DeepEqual(cur, before) {
		t.Fatal("twin changed")
	}
}

func TestApplyReportOptionalOnCreateOnly(t *testing.T) {
	cur, _ := mustReport(t, Twin{}, report("label", &Report{Actual: sp("a"), Optional: bp(false)}), now)
	if cur.Props["label"].Optional {
		t.Fatal("optional:false not honoured on create")
	}
	next, _ := mustReport(t, cur, report("label", &Report{Actual: sp("b"), Optional: bp(true)}), now+1)
	if next.Props["label"].Optional {
		t.Fatal("a device made a property optional after creation")
	}
}

func TestApplyReportRejectsBadKey(t *testing.T) {
	_, _, err := ApplyReport(Twin{}, report("a b", "1"), map[string]string{"a b": "STRING"}, now)
	if !errors.Is(err, ErrKey) {
		t.Fatalf("got %v", err)
	}
}

func TestApplyDesired(t *testing.T) {
	next, changed := mustDesired(t, Twin{}, desired(3, "temp", "20", "on", "true"), now)
	want := Property{Expected: &Value{"20", now}, Type: TypeInt, ExpectedVersion: Version{Cloud: 3}}
	if !reflect.DeepEqual(next.Props["temp"], want) {
		t.Fatalf("got %+v, want %+v", next.Props["temp"], want)
	}
	if next.DesiredVersion != (Version{Cloud: 3}) || len(changed) != 2 || changed[0].Name != "on" || changed[1].Name != "temp" {
		t.Fatalf("version %+v, changed %+v", next.DesiredVersion, changed)
	}

	// The same spec again (a redelivery) changes nothing.
	again, changed := mustDesired(t, next, desired(3, "temp", "20", "on", "true"), now+1)
	if len(changed) != 0 || !reflect.DeepEqual(again, next) {
		t.Fatalf("redelivery changed: %+v", changed)
	}

	// A newer spec with a timestamp from the cloud.
	d := desired(5, "temp", "22", "on", "true")
	d.Props["temp"] = DesiredValue{Value: "22", Type: "int", Timestamp: now - 7}
	newer, changed := mustDesired(t, next, d, now+2)
	if p := newer.Props["temp"]; p.Expected.Value != "22" || p.Expected.Timestamp != now-7 || p.ExpectedVersion.Cloud != 5 {
		t.Fatalf("newer: %+v", p)
	}
	if len(changed) != 1 || changed[0].Last.Expected.Value != "20" {
		t.Fatalf("changed = %+v", changed)
	}
	// Unchanged properties still move to the new version.
	if v := newer.Props["on"].ExpectedVersion; v.Cloud != 5 {
		t.Fatalf("on version %+v", v)
	}
}

func TestApplyDesiredOlderNeverWins(t *testing.T) {
	cur, _ := mustDesired(t, Twin{}, desired(7, "temp", "20"), now)
	cur, _ = mustReport(t, cur, report("temp", "19"), now+1)
	before := deepCopy(cur)
	for _, v := range []Version{{Cloud: 6}, {Cloud: 6, Edge: 9}, {Cloud: 0}} {
		d := desired(0, "temp", "5")
		d.Version = v
		next, changed, err := ApplyDesired(cur, d, now+2)
		if !errors.Is(err, ErrStale) || CodeOf(err) != CodeConflict {
			t.Fatalf("version %+v: err %v, want ErrStale", v, err)
		}
		if changed != nil || !reflect.DeepEqual(next, before) || !reflect.DeepEqual(cur, before) {
			t.Fatalf("version %+v: twin changed", v)
		}
	}
	// A stored edge version higher than the carried one also refuses (KubeEdge's rule).
	withEdge := cur.Clone()
	p := withEdge.Props["temp"]
	p.ExpectedVersion.Edge = 2
	withEdge.Props["temp"] = p
	if _, _, err := ApplyDesired(withEdge, desired(8, "temp", "5"), now); !errors.Is(err, ErrStale) {
		t.Fatalf("edge version ignored: %v", err)
	}
}

func TestApplyDesiredRemoval(t *testing.T) {
	cur, _ := mustDesired(t, Twin{}, desired(3, "temp", "20", "label", "x"), now)
	cur, _ = mustReport(t, cur, report("temp", "19"), now+1)

	// v4 removes both: temp keeps its actual, label disappears.
	next, changed := mustDesired(t, cur, desired(4), now+2)
	if p, ok := next.Props["temp"]; !ok || p.Expected != nil || p.Actual.Value != "19" || p.ExpectedVersion.Cloud != 4 {
		t.Fatalf("temp = %+v", p)
	}
	if _, ok := next.Props["label"]; ok {
		t.Fatal("label not removed")
	}
	if len(changed) != 2 || changed[0].Name != "label" || changed[0].Current != nil || changed[1].Name != "temp" {
		t.Fatalf("changed = %+v", changed)
	}

	// The v3 spec redelivered late must not bring label back.
	if _, _, err := ApplyDesired(next, desired(3, "temp", "20", "label", "x"), now+3); !errors.Is(err, ErrStale) {
		t.Fatalf("older spec after removal: %v", err)
	}

	// An empty desired value is no desired value (v1beta1 sends "" for unset).
	cur2, _ := mustDesired(t, Twin{}, desired(3, "label", "x"), now)
	next2, _ := mustDesired(t, cur2, desired(4, "label", ""), now+1)
	if _, ok := next2.Props["label"]; ok {
		t.Fatal(`desired "" kept an expected`)
	}

	// Device-only properties are not the cloud's to remove.
	cur3, _ := mustReport(t, Twin{}, report("humid", "40.5"), now)
	next3, changed := mustDesired(t, cur3, desired(9), now+1)
	if len(changed) != 0 || !reflect.DeepEqual(next3.Props, cur3.Props) {
		t.Fatalf("device-only property touched: %+v", changed)
	}
}

func TestApplyDesiredAllOrNothing(t *testing.T) {
	cur, _ := mustDesired(t, Twin{}, desired(3, "temp", "20"), now)
	before := deepCopy(cur)
	cases := []struct {
		d        Desired
		sentinel error
		reason   string
	}{
		{desired(4, "temp", "21", "on", "maybe"), ErrType, `twin "on": desired value "maybe" is not a valid boolean`},
		{Desired{Version: Version{Cloud: 4}, Props: map[string]DesiredValue{"a b": {Value: "1"}}}, ErrKey, `property name "a b" is invalid`},
		{Desired{Version: Version{Cloud: 4}, Props: map[string]DesiredValue{"x": {Value: "1", Type: "COMPLEX"}}}, ErrModelType, `device model type "COMPLEX"`},
	}
	for _, c := range cases {
		next, changed, err := ApplyDesired(cur, c.d, now+1)
		if !errors.Is(err, c.sentinel) || !strings.Contains(err.Error(), c.reason) {
			t.Fatalf("err %v, want %v with %q", err, c.sentinel, c.reason)
		}
		if changed != nil || !reflect.DeepEqual(next, before) || !reflect.DeepEqual(cur, before) {
			t.Fatal("twin changed on error")
		}
	}
}

func TestDeltaAfterDesiredAndReport(t *testing.T) {
	cur, _ := mustDesired(t, Twin{}, desired(3, "temp", "20", "on", "true"), now)
	if d := checkedDelta(t, cur); !reflect.DeepEqual(d, map[string]string{"temp": "20", "on": "true"}) {
		t.Fatalf("delta with no actual = %v", d)
	}
	cur, _ = mustReport(t, cur, report("temp", "19", "on", "true", "label", "x"), now+1)
	if d := checkedDelta(t, cur); !reflect.DeepEqual(d, map[string]string{"temp": "20"}) {
		t.Fatalf("delta after report = %v", d)
	}
	cur, _ = mustReport(t, cur, report("temp", "20"), now+2)
	if d := checkedDelta(t, cur); len(d) != 0 {
		t.Fatalf("delta after convergence = %v", d)
	}
	if _, ok := EncodeDelta("d", cur, now); ok {
		t.Fatal("EncodeDelta says there is something to send")
	}
	cur, _ = mustDesired(t, cur, desired(4, "temp", "25", "on", "true"), now+3)
	if d := checkedDelta(t, cur); !reflect.DeepEqual(d, map[string]string{"temp": "25"}) {
		t.Fatalf("delta after new desired = %v", d)
	}
}

// checkedDelta is Delta, checking that HasDelta agrees with it.
func checkedDelta(t *testing.T, cur Twin) map[string]string {
	t.Helper()
	d := Delta(cur)
	if HasDelta(cur) != (len(d) > 0) {
		t.Fatalf("HasDelta = %v with delta %v", HasDelta(cur), d)
	}
	return d
}

func TestApplyState(t *testing.T) {
	s := ApplyState(DeviceState{}, StateUpdate{State: StateOffline}, now)
	if s != (DeviceState{State: StateOffline}) {
		t.Fatalf("offline first: %+v", s)
	}
	s = ApplyState(s, StateUpdate{State: StateOnline}, now)
	if s != (DeviceState{State: StateOnline, LastOnline: "2023-11-14T22:13:20Z"}) {
		t.Fatalf("online: %+v", s)
	}
	s = ApplyState(s, StateUpdate{State: StateUnhealthy}, now+3600_000)
	if s != (DeviceState{State: StateUnhealthy, LastOnline: "2023-11-14T22:13:20Z"}) {
		t.Fatalf("unhealthy keeps last online: %+v", s)
	}
	s = ApplyState(s, StateUpdate{State: StateOK}, now+3600_000)
	if s.LastOnline != "2023-11-14T23:13:20Z" {
		t.Fatalf("ok: %+v", s)
	}
}

func TestCheckValueAndNormalizeType(t *testing.T) {
	for in, want := range map[string]string{
		"INT": TypeInt, "Integer": TypeInt, "float": TypeFloat, "DOUBLE": TypeDouble, "": TypeString,
		"STRING": TypeString, "boolean": TypeBoolean, "BYTES": TypeBytes, "stream": TypeStream,
	} {
		if got, err := NormalizeType(in); err != nil || got != want {
			t.Errorf("NormalizeType(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"deleted", "Updated", "object", "int64"} {
		if _, err := NormalizeType(bad); !errors.Is(err, ErrModelType) {
			t.Errorf("NormalizeType(%q): %v", bad, err)
		}
	}
	if err := CheckValue("DOUBLE", "1.25"); err != nil {
		t.Error(err)
	}
	if err := CheckValue("BOOLEAN", "yes"); !errors.Is(err, ErrType) || err.Error() != `value "yes" is not a valid boolean` {
		t.Errorf("got %v", err)
	}
}

func TestCodeOf(t *testing.T) {
	if CodeOf(nil) != 0 || CodeOf(errors.New("disk")) != CodeInternal {
		t.Fatal("CodeOf of nil or a foreign error")
	}
	_, err := DecodeUpdate([]byte(`x`), Limits{})
	wrapped := errors.Join(errors.New("handling"), err)
	if CodeOf(wrapped) != CodeBadRequest || !errors.Is(wrapped, ErrMalformed) {
		t.Fatalf("wrapped: %d", CodeOf(wrapped))
	}
}

// TestReportAfterDeleteStampedAfterIt: a value reported after its property's actual was deleted
// is stamped after the deleted one, as after a stored one. Timestamps run ahead of the clock in a
// burst (T, T+1, T+2 within one millisecond); before, the value after the delete was stamped
// with the clock (T+1), older than the deleted T+2, and where the cloud had not seen the delete
// (the outbox replaced it with the newer snapshot) its newest-wins merge kept the old value.
func TestReportAfterDeleteStampedAfterIt(t *testing.T) {
	const at = 1_000_000
	var tw Twin
	for _, v := range []string{"1", "2", "3"} {
		tw, _ = mustReport(t, tw, report("temp", v), at)
	}
	delivered := tw.Props["temp"].Actual // what the cloud shows: 3 at T+2
	tw, _ = mustReport(t, tw, report("temp", nil), at)
	tw, _ = mustReport(t, tw, report("temp", "4"), at+1)
	got := tw.Props["temp"].Actual
	if got.Timestamp <= delivered.Timestamp {
		t.Fatalf("4 stamped %d after 3 at %d was deleted; want a later stamp", got.Timestamp, delivered.Timestamp)
	}
	stored := []StatusTwin{{PropertyName: "temp", Reported: &StatusValue{Value: delivered.Value, Metadata: map[string]string{"timestamp": strconv.FormatInt(delivered.Timestamp, 10)}}}}
	snapshot := []StatusTwin{{PropertyName: "temp", Reported: &StatusValue{Value: "4", Metadata: map[string]string{"timestamp": strconv.FormatInt(got.Timestamp, 10)}}}}
	if merged := MergeSnapshot(stored, snapshot); len(merged) != 1 || merged[0].Reported.Value != "4" {
		t.Fatalf("the cloud's merge of the newer snapshot: %+v, want 4", merged)
	}
	if len(tw.ActualFloors) != 0 {
		t.Fatalf("floors kept after the property was reported again: %v", tw.ActualFloors)
	}
}
