package twin

import (
	"strconv"
	"strings"
)

// Canonical property types. They are the lower-case names KubeEdge's edge uses
// in a twin's metadata.type, so mappers that read the type keep working;
// NormalizeType maps the DeviceModel's upper-case enum onto them.
const (
	TypeInt     = "int"
	TypeFloat   = "float"
	TypeDouble  = "double"
	TypeString  = "string"
	TypeBoolean = "boolean"
	TypeBytes   = "bytes"
	TypeStream  = "stream"
)

// NormalizeType maps a DeviceModel property type (INT, INTEGER, FLOAT, DOUBLE,
// STRING, BOOLEAN, BYTES, STREAM, in any case) to its canonical name. An empty
// type is STRING, as in KubeEdge, because a model without a type still has
// string-valued twins. Any other name is ErrModelType.
func NormalizeType(t string) (string, error) {
	switch strings.ToLower(t) {
	case "", TypeString:
		return TypeString, nil
	case TypeInt, "integer":
		return TypeInt, nil
	case TypeFloat:
		return TypeFloat, nil
	case TypeDouble:
		return TypeDouble, nil
	case TypeBoolean:
		return TypeBoolean, nil
	case TypeBytes:
		return TypeBytes, nil
	case TypeStream:
		return TypeStream, nil
	}
	return "", newError(CodeInternal, ErrModelType, "device model type %s is not supported", quote(t))
}

// CheckValue reports whether value is a valid value of the DeviceModel type typ
// (any case; see NormalizeType). What each type accepts, and why:
//
//   - INT: a base-10 int64 (strconv.ParseInt), what mappers print with FormatInt.
//   - FLOAT, DOUBLE: anything strconv.ParseFloat accepts at 64 bits, NaN and Inf
//     included, since a sensor may report them; FLOAT is not narrowed to 32 bits
//     because mappers format float32 readings through float64 and scale them.
//   - BOOLEAN: exactly "true" or "false". Not "yes", "1" or "True": the delta
//     compares strings, so an actual "True" would never settle a desired "true".
//   - STRING, STREAM: anything.
//   - BYTES: anything. Mappers send the bytes as an opaque string (raw text, hex
//     or base64 depending on the mapper), and KubeEdge's own value pattern even
//     forbids '+' and '=', so requiring base64 would reject what mappers send.
//
// The error is ErrType (code 400) or ErrModelType (code 500).
func CheckValue(typ, value string) error {
	nt, err := NormalizeType(typ)
	if err != nil {
		return err
	}
	if !validValue(nt, value) {
		return badRequest(ErrType, "value %s is not a valid %s", quote(value), nt)
	}
	return nil
}

// validValue checks value against a canonical type.
func validValue(nt, value string) bool {
	switch nt {
	case TypeInt:
		_, err := strconv.ParseInt(value, 10, 64)
		return err == nil
	case TypeFloat, TypeDouble:
		_, err := strconv.ParseFloat(value, 64)
		return err == nil
	case TypeBoolean:
		return value == "true" || value == "false"
	}
	return true
}
