package kubeapi

import (
	"strings"
	"testing"
)

func TestBadQuantity(t *testing.T) {
	for s, bad := range map[string]bool{
		"1e-999999999": true, "9E+1001": true, "1e0000000000000000000005": false, "1e1000": false,
		"4": false, "250m": false, "1.5Gi": false, "-2e3": false, "e-999999999": false, "v1e-999999999": false,
		strings.Repeat("1", 1001): true, "0." + strings.Repeat("0", 998): false, "1e": false, "1e-": false, "1e-5x": false,
	} {
		if got := BadQuantity(s) != nil; got != bad {
			t.Errorf("BadQuantity(%.40q) = %v, want %v", s, BadQuantity(s), bad)
		}
	}
}

// TestHugeQuantityScan: the scan of a raw body finds every value BadQuantity refuses, so that
// only such bodies are decoded a second time.
func TestHugeQuantityScan(t *testing.T) {
	for _, v := range []string{"1e-999999999", "9E+1001", strings.Repeat("1", 1001), "2.5e10000"} {
		body := `{"status":{"capacity":{"cpu":"` + v + `"}}}`
		if BadQuantity(v) == nil || !mayHoldHugeQuantity([]byte(body)) {
			t.Errorf("%.20q: refused %v, found by the scan %v; want both", v, BadQuantity(v) != nil, mayHoldHugeQuantity([]byte(body)))
		}
	}
	ordinary := `{"metadata":{"name":"n","uid":"1e3f5a"},"status":{"capacity":{"cpu":"4","memory":"8Gi","pods":"110"},"allocatable":{"cpu":"3500m"}}}`
	if mayHoldHugeQuantity([]byte(ordinary)) {
		t.Errorf("an ordinary Node is decoded twice")
	}
}
