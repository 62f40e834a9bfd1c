package kubeapi

import (
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Bounds on a JSON body's shape, beyond its size: a 3 MiB body of a million empty objects
// (`"containers":[{},{},…]`) decodes into a million typed structs several times over, which
// took a cloud 1.5 GB and 15 s for one request in a review, and an edge as much. No object the
// API serves comes near either bound.
const (
	// MaxJSONContainers is how many JSON objects and arrays one body may hold.
	MaxJSONContainers = 50_000
	// MaxJSONDepth is how deeply they may nest.
	MaxJSONDepth = 100
)

// CheckJSONShape refuses a JSON document with more than MaxJSONContainers objects and arrays
// or nested deeper than MaxJSONDepth, with a 413, before anything decodes it. It reads the
// bytes once and allocates nothing; what is not valid JSON is left to the decoder to refuse.
func CheckJSONShape(b []byte) error {
	containers, depth := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			containers++
			depth++
			if containers > MaxJSONContainers {
				return apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the body holds more than %d JSON objects and arrays", MaxJSONContainers))
			}
			if depth > MaxJSONDepth {
				return apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the body nests JSON objects and arrays more than %d deep", MaxJSONDepth))
			}
		case '}', ']':
			depth--
		}
	}
	return nil
}
