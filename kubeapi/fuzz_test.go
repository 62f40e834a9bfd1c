package kubeapi

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeBody: whatever a client sends as a create or update body, DecodeBody returns one
// JSON object or an error Status, and never panics.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []struct{ ct, body string }{
		{"application/json", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}`},
		{"application/yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n"},
		{"application/yaml", "a: &x [*x]"},
		{"application/json", `null`},
		{"", `[1,2]`},
		{"application/yaml", "---\na: 1\n---\nb: 2\n"},
	} {
		f.Add(s.ct, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		out, err := DecodeBody(ct, body)
		if err != nil {
			if statusOf(err).Code == 0 || statusOf(err).Code >= 500 {
				t.Fatalf("error without a client Status: %v", err)
			}
			return
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil || m == nil {
			t.Fatalf("accepted %q as %q, which is not one JSON object: %v", body, out, err)
		}
	})
}
