package twin

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeReports feeds arbitrary payloads to the decoders the cloud runs on device reports
// (an edge's outbox is a network input). They never panic, and what they accept merges into a
// stored status without breaking its invariants: sorted by name, each name once, keys valid.
func FuzzDecodeReports(f *testing.F) {
	f.Add([]byte(`{"twins":[{"propertyName":"temperature","reported":{"value":"21","metadata":{"timestamp":"1700000000000","type":"int"}}}]}`))
	f.Add([]byte(`{"twins":[]}`))
	f.Add([]byte(`{"twins":[],"uid":"6b40b96b-c754-4a9e-920d-9c19a6efce0d"}`))
	f.Add([]byte(`{"state":"online","lastOnlineTime":"2026-11-26T18:00:00Z"}`))
	f.Add([]byte(`{"twins":[{"propertyName":"a"},{"propertyName":"a"}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		DecodeStateReport(b)
		r, err := DecodeTwinReport(b)
		if err != nil {
			return
		}
		stored := []StatusTwin{{PropertyName: "zeta"}, {PropertyName: "alpha"}}
		merged := MergeSnapshot(stored, r.Twins)
		seen := map[string]bool{}
		for i, st := range merged {
			if !ValidKey(st.PropertyName) || seen[st.PropertyName] {
				t.Fatalf("merged status has a bad or repeated name: %+v", merged)
			}
			seen[st.PropertyName] = true
			if i > 0 && merged[i-1].PropertyName > st.PropertyName {
				t.Fatalf("merged status is not sorted: %+v", merged)
			}
		}
		if _, err := json.Marshal(merged); err != nil {
			t.Fatal(err)
		}
	})
}
