package twin

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"testing"

	"sigs.k8s.io/yaml"
)

func sv(value string, ts int64) *StatusValue {
	return &StatusValue{Value: value, Metadata: map[string]string{MetaTimestamp: strconv.FormatInt(ts, 10), MetaType: TypeInt}}
}

func TestReported(t *testing.T) {
	cur, _ := mustDesired(t, Twin{}, desired(3, "temp", "20", "label", "x"), now)
	cur, _ = mustReport(t, cur, report("temp", "19", "humid", "40.5"), now+1)
	got := Reported(cur)
	want := []StatusTwin{
		{PropertyName: "humid", Reported: &StatusValue{"40.5", map[string]string{"timestamp": "1700000000001", "type": "float"}}},
		{PropertyName: "label", ObservedDesired: &StatusValue{"x", map[string]string{"timestamp": "1700000000000", "type": "string"}}},
		{PropertyName: "temp",
			Reported:        &StatusValue{"19", map[string]string{"timestamp": "1700000000001", "type": "int"}},
			ObservedDesired: &StatusValue{"20", map[string]string{"timestamp": "1700000000000", "type": "int"}}},
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		t.Fatalf("got %s", g)
	}
	if r := Reported(Twin{}); r == nil || len(r) != 0 {
		t.Fatalf("empty twin: %#v (want an empty, non-nil list)", r)
	}
}

func TestMergeStatusNewerWins(t *testing.T) {
	stored := []StatusTwin{
		{PropertyName: "temp", Reported: sv("21", 200), ObservedDesired: sv("20", 100)},
		{PropertyName: "only-stored", Reported: sv("a", 1)},
	}
	incoming := []StatusTwin{
		// An older report redelivered: its reported loses, its newer observedDesired wins.
		{PropertyName: "temp", Reported: sv("19", 150), ObservedDesired: sv("25", 300)},
		{PropertyName: "new", Reported: sv("b", 5)},
	}
	storedCopy := cloneStatus(stored)
	incomingCopy := cloneStatus(incoming)

	got := MergeStatus(stored, incoming)
	want := []StatusTwin{
		{PropertyName: "new", Reported: sv("b", 5)},
		{PropertyName: "only-stored", Reported: sv("a", 1)},
		{PropertyName: "temp", Reported: sv("21", 200), ObservedDesired: sv("25", 300)},
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		t.Fatalf("got %s", g)
	}
	if !reflect.DeepEqual(stored, storedCopy) || !reflect.DeepEqual(incoming, incomingCopy) {
		t.Fatal("inputs modified")
	}
	got[2].Reported.Metadata[MetaType] = "changed"
	if stored[0].Reported.Metadata[MetaType] != TypeInt {
		t.Fatal("result shares a metadata map with stored")
	}
}

func TestMergeStatusTiesAndBadTimestamps(t *testing.T) {
	noTS := &StatusValue{Value: "manual"}
	badTS := &StatusValue{Value: "bad", Metadata: map[string]string{MetaTimestamp: "yesterday"}}
	cases := []struct {
		name             string
		stored, incoming *StatusValue
		want             *StatusValue
	}{
		{"equal timestamps: incoming wins", sv("old", 100), sv("new", 100), sv("new", 100)},
		{"stored without timestamp loses", noTS, sv("v", 1), sv("v", 1)},
		{"incoming without timestamp loses", sv("v", 1), noTS, sv("v", 1)},
		{"unparsable timestamp loses", sv("v", 0), badTS, sv("v", 0)},
		{"negative is still a timestamp", noTS, sv("v", -5), sv("v", -5)},
		{"incoming leaves the side out", sv("keep", 1), nil, sv("keep", 1)},
		{"nothing stored", nil, sv("v", 1), sv("v", 1)},
	}
	for _, c := range cases {
		got := MergeStatus(
			[]StatusTwin{{PropertyName: "p", Reported: c.stored}},
			[]StatusTwin{{PropertyName: "p", Reported: c.incoming}},
		)
		if len(got) != 1 || !reflect.DeepEqual(got[0].Reported, c.want) {
			t.Errorf("%s: got %+v", c.name, got[0].Reported)
		}
	}
}

// TestMergeStatusOutOfOrderDelivery plays the edge's reports to the cloud in
// every order: the merge always ends at the newest state.
func TestMergeStatusOutOfOrderDelivery(t *testing.T) {
	cur, _ := mustDesired(t, Twin{}, desired(1, "temp", "20"), now)
	var reports [][]StatusTwin
	for i, v := range []string{"17", "18", "19", "20"} {
		cur, _ = mustReport(t, cur, report("temp", v, "label", "l"+v), now+int64(i)) // clock barely moves
		reports = append(reports, Reported(cur))
	}
	final := Reported(cur)
	for _, order := range [][]int{{0, 1, 2, 3}, {3, 2, 1, 0}, {1, 3, 0, 2}, {3, 3, 0, 0, 2}} {
		var status []StatusTwin
		for _, i := range order {
			status = MergeStatus(status, reports[i])
		}
		if !reflect.DeepEqual(status, final) {
			g, _ := json.Marshal(status)
			t.Errorf("order %v: %s", order, g)
		}
	}
}

func cloneStatus(in []StatusTwin) []StatusTwin {
	b, _ := json.Marshal(in)
	var out []StatusTwin
	_ = json.Unmarshal(b, &out)
	return out
}

// TestReportedMatchesCRD checks Reported's JSON against the OpenAPI schema of
// status.twins in KubeEdge's DeviceStatus v1beta1 CRD, the shape SPEC §4 puts
// in Device.status.twins: every field must be declared (a structural schema
// prunes the rest) and of the declared type, e.g. metadata values are strings.
func TestReportedMatchesCRD(t *testing.T) {
	dir := filepath.Join("..", "..", "shared", "testdata", "kubeedge-crds")
	raw, err := os.ReadFile(filepath.Join(dir, "devices_v1beta1_devicestatus.yaml"))
	if err != nil {
		t.Skipf("KubeEdge CRDs not available: %v", err)
	}
	twins := crdSchema(t, raw, "v1beta1", "status", "twins")

	cur, _ := mustDesired(t, Twin{}, desired(3, "temp", "20", "label", "x"), now)
	cur, _ = mustReport(t, cur, report("temp", "19", "on", "true"), now+1)
	doc := toJSONValue(t, Reported(cur))
	if err := validate(twins, doc, "status.twins"); err != nil {
		t.Fatal(err)
	}
	merged := toJSONValue(t, MergeStatus(Reported(cur), Reported(cur)))
	if err := validate(twins, merged, "status.twins"); err != nil {
		t.Fatal(err)
	}

	// The schema check itself catches a wrong shape.
	bad := []any{map[string]any{"propertyName": "t", "reported": map[string]any{"value": "1", "metadata": map[string]any{"timestamp": 1.0}}}}
	if err := validate(twins, bad, "status.twins"); err == nil {
		t.Fatal("a numeric metadata timestamp passed the schema check")
	}

	// Device v1beta1 keeps unknown status fields, so twins can live in Device.status.
	raw, err = os.ReadFile(filepath.Join(dir, "devices_v1beta1_device.yaml"))
	if err != nil {
		t.Skipf("KubeEdge CRDs not available: %v", err)
	}
	status := crdSchema(t, raw, "v1beta1", "status")
	if status["x-kubernetes-preserve-unknown-fields"] != true {
		t.Fatal("Device v1beta1 status would prune twins")
	}
}

func toJSONValue(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// crdSchema returns the schema at spec.versions[name=version].schema.openAPIV3Schema.properties.<path...>.
func crdSchema(t *testing.T, raw []byte, version string, path ...string) map[string]any {
	t.Helper()
	var crd map[string]any
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	versions, _ := crd["spec"].(map[string]any)["versions"].([]any)
	for _, v := range versions {
		v := v.(map[string]any)
		if v["name"] != version {
			continue
		}
		s := v["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)
		for _, p := range path {
			s = s["properties"].(map[string]any)[p].(map[string]any)
		}
		return s
	}
	t.Fatalf("no version %s in CRD", version)
	return nil
}

// validate checks v against the subset of OpenAPI v3 that CRD schemas use for
// these fields: type, properties, additionalProperties, items, required, and
// pruning of undeclared fields.
func validate(s map[string]any, v any, at string) error {
	switch s["type"] {
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want object, got %T", at, v)
		}
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if _, ok := obj[r.(string)]; !ok {
					return fmt.Errorf("%s: missing required %s", at, r)
				}
			}
		}
		props, _ := s["properties"].(map[string]any)
		addl, _ := s["additionalProperties"].(map[string]any)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch {
			case props[k] != nil:
				if err := validate(props[k].(map[string]any), obj[k], at+"."+k); err != nil {
					return err
				}
			case addl != nil:
				if err := validate(addl, obj[k], at+"."+k); err != nil {
					return err
				}
			case s["x-kubernetes-preserve-unknown-fields"] == true:
			default:
				return fmt.Errorf("%s.%s: not in the schema, would be pruned", at, k)
			}
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: want array, got %T", at, v)
		}
		for i, e := range arr {
			if err := validate(s["items"].(map[string]any), e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case "string":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%s: want string, got %T", at, v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: want boolean, got %T", at, v)
		}
	case "integer":
		if f, ok := v.(float64); !ok || f != float64(int64(f)) {
			return fmt.Errorf("%s: want integer, got %v", at, v)
		}
	}
	return nil
}
