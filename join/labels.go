package join

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tetherhub/tether/pki"
)

// groupLabel is set by the cloud on NodeGroup members (SPEC §7); a node may not claim it.
const groupLabel = "apps.kubeedge.io/belonging-to"

// ValidateLabels returns nil if every key and value is a valid Kubernetes label: a key is an
// optional DNS-1123 subdomain prefix and '/', then a name of at most 63 characters of
// alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric; a value is empty or a
// name of the same form. The key apps.kubeedge.io/belonging-to is refused: NodeGroups own it.
// Keys are checked in sorted order so the error is the same for the same input.
func ValidateLabels(labels map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if err := validLabelKey(k); err != nil {
			return fmt.Errorf("label key %q: %v", clip(k), err)
		}
		if k == groupLabel {
			return fmt.Errorf("label key %q is managed by NodeGroups and cannot be set by a node", k)
		}
		if v := labels[k]; v != "" {
			if err := validLabelName(v); err != nil {
				return fmt.Errorf("label %q value %q: %v", clip(k), clip(v), err)
			}
		}
	}
	return nil
}

func validLabelKey(k string) error {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name = k
	} else if err := pki.ValidNodeName(prefix); err != nil {
		// A label prefix has exactly a node name's rules (DNS-1123 subdomain).
		return fmt.Errorf("the prefix must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')")
	}
	if name == "" {
		return fmt.Errorf("the name part is empty")
	}
	return validLabelName(name)
}

func validLabelName(s string) error {
	if len(s) > 63 {
		return fmt.Errorf("%d characters, at most 63 allowed", len(s))
	}
	alnum := func(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }
	if !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return fmt.Errorf("must start and end with a letter or digit")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("only letters, digits, '-', '_' and '.' are allowed")
		}
	}
	return nil
}

// clip shortens untrusted text before it goes into a message that is logged and sent back.
func clip(s string) string {
	const maxLen = 64
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + "…"
}
