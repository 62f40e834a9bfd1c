package protocol

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// FuzzDecode feeds arbitrary frames to Decode. It must never panic, and whatever it accepts must
// survive a re-encode unchanged: one meaning per byte string, so a frame cannot be read two ways.
func FuzzDecode(f *testing.F) {
	for _, g := range golden {
		raw, _ := hex.DecodeString(g.hex)
		f.Add(raw)
	}
	var all []Message
	for _, g := range golden {
		all = append(all, g.msg)
	}
	f.Add(Encode(all...))
	f.Fuzz(func(t *testing.T, frame []byte) {
		msgs, err := Decode(frame)
		if err != nil {
			return
		}
		again := Encode(msgs...)
		msgs2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		if !bytes.Equal(Encode(msgs2...), again) {
			t.Fatalf("encoding is not stable")
		}
	})
}
