package jsonkind

import (
	"encoding/json"
	"errors"
	"testing"
)

// TestOfNamesWhatJSONWanted: the words for the type each JSON mistake needed.
func TestOfNamesWhatJSONWanted(t *testing.T) {
	var target struct {
		Obj  struct{}       `json:"obj"`
		Map  map[string]int `json:"map"`
		List []string       `json:"list"`
		Raw  []byte         `json:"raw"`
		Str  *string        `json:"str"`
		Flag bool           `json:"flag"`
		N    int32          `json:"n"`
		F    float64        `json:"f"`
	}
	for field, want := range map[string]string{
		"obj": "an object", "map": "an object", "list": "an array", "raw": "a base64-encoded string",
		"str": "a string", "flag": "a boolean", "n": "an integer", "f": "a number",
	} {
		err := json.Unmarshal([]byte(`{"`+field+`":[true]}`), &target)
		if field == "list" || field == "raw" {
			err = json.Unmarshal([]byte(`{"`+field+`":{}}`), &target)
		}
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) {
			t.Fatalf("%s: %v, want an UnmarshalTypeError", field, err)
		}
		if got := Of(te.Type); got != want {
			t.Errorf("%s: Of = %q, want %q", field, got, want)
		}
	}
	if got := Of(nil); got != "a different type" {
		t.Errorf("Of(nil) = %q", got)
	}
}
