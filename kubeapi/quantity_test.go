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
