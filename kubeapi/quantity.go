package kubeapi

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Quantities (resource.Quantity: a Node's capacity, a container's limits) are parsed when a Node
// or Pod is decoded into its Kubernetes type, and apimachinery's parser builds 10^scale as a
// big integer: "1e-999999999" takes minutes of CPU and hundreds of MiB, and a node may write it
// into its own Node's status. Such strings are refused before the decode: no real quantity has
// an exponent or a string of digits anywhere near these bounds.
const (
	maxQuantityExponent = 1000 // |n| in "…e<n>"
	maxQuantityDigits   = 1000 // digits before an exponent or suffix
)

// CheckQuantities refuses a Node or Pod (obj decoded with json.Decoder.UseNumber) holding, under
// spec or status, a string or number that would be an unreasonable quantity (see
// maxQuantityExponent). Other kinds hold no quantities. Call it before decoding such an object
// into its Kubernetes type.
func CheckQuantities(kind string, obj map[string]any) error {
	if kind != "Node" && kind != "Pod" {
		return nil
	}
	for _, part := range []string{"spec", "status"} {
		if err := walkStrings(obj[part], part, BadQuantity); err != nil {
			return err
		}
	}
	return nil
}

// walkStrings calls check on every string and number in v (as json.Decoder.UseNumber decodes it), with
// its path.
func walkStrings(v any, path string, check func(string) error) error {
	switch v := v.(type) {
	case string:
		if err := check(v); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	case json.Number: // a quantity may be written as a JSON number too
		if err := check(string(v)); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	case map[string]any:
		for k, e := range v {
			if err := walkStrings(e, path+"."+k, check); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range v {
			if err := walkStrings(e, path+"["+strconv.Itoa(i)+"]", check); err != nil {
				return err
			}
		}
	}
	return nil
}

// BadQuantity says why s, read as a quantity, is beyond reason; nil if it is not, or is not
// a number at all.
func BadQuantity(s string) error {
	num := strings.TrimLeft(s, "+-")
	digits := len(num) - len(strings.TrimLeft(num, "0123456789."))
	if digits == 0 {
		return nil
	}
	if digits > maxQuantityDigits {
		return fmt.Errorf("a number of %d digits", digits)
	}
	rest := num[digits:]
	if len(rest) < 2 || (rest[0] != 'e' && rest[0] != 'E') {
		return nil
	}
	exp := strings.TrimLeft(rest[1:], "+-")
	if exp == "" || strings.Trim(exp, "0123456789") != "" {
		return nil
	}
	if exp = strings.TrimLeft(exp, "0"); len(exp) > len(strconv.Itoa(maxQuantityExponent)) {
		return fmt.Errorf("an exponent of %d digits", len(exp))
	}
	if n, _ := strconv.Atoi(exp); n > maxQuantityExponent {
		return fmt.Errorf("an exponent of %d, beyond %d", n, maxQuantityExponent)
	}
	return nil
}

// mayHoldHugeQuantity is a scan of raw JSON that finds every string or number BadQuantity could
// refuse (a run of more than maxQuantityDigits digits, or an exponent of four digits or more)
// and few others, so that an ordinary body is not decoded a second time to look.
func mayHoldHugeQuantity(body []byte) bool {
	run := 0 // digits and dots in a row
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c >= '0' && c <= '9' || c == '.':
			if run++; run > maxQuantityDigits {
				return true
			}
		case (c == 'e' || c == 'E') && run > 0:
			j := i + 1
			if j < len(body) && (body[j] == '+' || body[j] == '-') {
				j++
			}
			k := j
			for k < len(body) && body[k] >= '0' && body[k] <= '9' {
				k++
			}
			if k-j >= len(strconv.Itoa(maxQuantityExponent)) {
				return true
			}
			run = 0
		default:
			run = 0
		}
	}
	return false
}
