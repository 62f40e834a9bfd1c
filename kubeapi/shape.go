package kubeapi

import (
	"bytes"
	"encoding/binary"
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
				return tooComplex()
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

// tooComplex refuses a body of more than MaxJSONContainers objects and arrays, in any
// encoding.
func tooComplex() error {
	return apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the body holds more than %d objects and arrays", MaxJSONContainers))
}

// checkProtobufShape bounds a protobuf body before it is decoded, as CheckJSONShape does a
// JSON one: a 2.8 MB Pod of 1.4 million empty containers (`12 00` repeated) took 3.5 GB to
// decode. It counts the length-delimited fields that are empty or read as messages
// themselves, at any depth down to MaxJSONDepth: every embedded message is one of them
// (strings that happen to read as messages count too, which only errs towards refusing).
func checkProtobufShape(b []byte) error {
	count := 0
	// walk says whether b reads as a sequence of protobuf fields, counting as it goes.
	var walk func(b []byte, depth int) bool
	walk = func(b []byte, depth int) bool {
		for i := 0; i < len(b); {
			if count > MaxJSONContainers {
				return false
			}
			tag, n := binary.Uvarint(b[i:])
			if n <= 0 || tag>>3 == 0 {
				return false
			}
			i += n
			switch tag & 7 {
			case 0:
				if _, n = binary.Uvarint(b[i:]); n <= 0 {
					return false
				}
				i += n
			case 1:
				i += 8
			case 5:
				i += 4
			case 2:
				l, n := binary.Uvarint(b[i:])
				if n <= 0 || l > uint64(len(b)-i-n) {
					return false
				}
				payload := b[i+n : i+n+int(l)]
				i += n + int(l)
				if len(payload) == 0 || (depth < MaxJSONDepth && walk(payload, depth+1)) {
					count++
				}
			default:
				return false
			}
			if i > len(b) {
				return false
			}
		}
		return true
	}
	walk(bytes.TrimPrefix(b, []byte("k8s\x00")), 0)
	if count > MaxJSONContainers {
		return tooComplex()
	}
	return nil
}

// checkYAMLShape bounds a YAML body before it is converted, over-counting what may become an
// object or array: flow brackets, sequence items ("- ") and keys whose value follows on the
// next lines (a line ending in ':').
func checkYAMLShape(b []byte) error {
	count := 0
	for line := range bytes.Lines(b) {
		t := bytes.TrimSpace(line)
		if bytes.HasPrefix(t, []byte("- ")) || bytes.Equal(t, []byte("-")) || bytes.HasSuffix(t, []byte(":")) {
			count++
		}
		count += bytes.Count(t, []byte("{")) + bytes.Count(t, []byte("["))
		if count > MaxJSONContainers {
			return tooComplex()
		}
	}
	return nil
}
