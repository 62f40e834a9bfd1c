package twin

import (
	"slices"
	"strconv"
)

// Encoders straight from the state types for the messages of every update: the result, the
// document and the report. They write the bytes the wire-type appenders write for the wire
// values the state converts to (toEntry, Reported), without building those values: no maps,
// no per-property allocations. TestEncodersFromState checks them against that route.

// sortedKeys appends m's keys to dst and sorts them, as encoding/json orders a map's keys. A
// caller passing a small array's slice keeps the common case off the heap.
func sortedKeys[V any](dst []string, m map[string]V) []string {
	for k := range m {
		dst = append(dst, k)
	}
	slices.Sort(dst)
	return dst
}

// appendPropertyEntry appends toEntry(p, false), leaving out expected unless withExpected.
func appendPropertyEntry(b []byte, p Property, withExpected bool) []byte {
	b = append(b, '{')
	if withExpected && p.Expected != nil {
		b = append(b, `"expected":`...)
		b = appendValueEntry(b, p.Expected)
		b = append(b, ',')
	}
	if p.Actual != nil {
		b = append(b, `"actual":`...)
		b = appendValueEntry(b, p.Actual)
		b = append(b, ',')
	}
	b = append(b, `"optional":`...)
	b = strconv.AppendBool(b, p.Optional)
	if p.Type == "" {
		return append(b, `,"metadata":{}}`...)
	}
	b = append(b, `,"metadata":{"type":`...)
	b = appendString(b, p.Type)
	return append(b, "}}"...)
}

// appendValueEntry appends entryValue(v).
func appendValueEntry(b []byte, v *Value) []byte {
	b = append(b, `{"value":`...)
	b = appendString(b, v.Value)
	b = append(b, `,"metadata":{`...)
	if v.Timestamp != 0 {
		b = append(b, `"timestamp":`...)
		b = strconv.AppendInt(b, v.Timestamp, 10)
	}
	return append(b, "}}"...)
}

// appendResult appends the success result of upd applied to t (see EncodeResult).
func appendResult(b []byte, upd Update, t Twin, now int64) []byte {
	b = appendHeader(b, Header{upd.EventID, now})
	b = append(b, `,"twin":{`...)
	var buf [8]string
	first := true
	for _, name := range sortedKeys(buf[:0], upd.Twin) {
		r := upd.Twin[name]
		var p Property
		switch {
		case r == nil:
		case r.Actual != nil:
			var ok bool
			if p, ok = t.Props[name]; !ok || p.Actual == nil {
				continue
			}
		default:
			continue // it carried only an ignored expected
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendKey(b, name)
		if r == nil {
			b = append(b, "null"...)
		} else {
			b = appendPropertyEntry(b, p, false)
		}
	}
	return append(b, "}}"...)
}

// appendDocument appends the document of changes, which hold each name once, sorted.
func appendDocument(b []byte, eventID string, changes []Change, now int64) []byte {
	b = appendHeader(b, Header{eventID, now})
	b = append(b, `,"twin":{`...)
	for i, c := range changes {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendKey(b, c.Name)
		b = append(b, `{"last":`...)
		b = appendPropertyOrNull(b, c.Last)
		b = append(b, `,"current":`...)
		b = appendPropertyOrNull(b, c.Current)
		b = append(b, '}')
	}
	return append(b, "}}"...)
}

func appendPropertyOrNull(b []byte, p *Property) []byte {
	if p == nil {
		return append(b, "null"...)
	}
	return appendPropertyEntry(b, *p, true)
}

// appendReportOf appends the TwinReport of t (Reported(t)).
func appendReportOf(b []byte, t Twin) []byte {
	b = append(b, `{"twins":[`...)
	var buf [8]string
	first := true
	for _, name := range sortedKeys(buf[:0], t.Props) {
		p := t.Props[name]
		if p.Actual == nil && p.Expected == nil {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, `{"propertyName":`...)
		b = appendString(b, name)
		if p.Actual != nil {
			b = append(b, `,"reported":`...)
			b = appendStatusOf(b, p.Actual, p.Type)
		}
		if p.Expected != nil {
			b = append(b, `,"observedDesired":`...)
			b = appendStatusOf(b, p.Expected, p.Type)
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// appendStatusOf appends statusValue(v, typ).
func appendStatusOf(b []byte, v *Value, typ string) []byte {
	b = append(b, `{"value":`...)
	b = appendString(b, v.Value)
	b = append(b, `,"metadata":{"timestamp":"`...)
	b = strconv.AppendInt(b, v.Timestamp, 10)
	b = append(b, `","type":`...)
	b = appendString(b, typ)
	return append(b, "}}"...)
}

// changesSorted reports whether changes name each property once, in sorted order, as the
// Apply functions return them.
func changesSorted(changes []Change) bool {
	for i := 1; i < len(changes); i++ {
		if changes[i-1].Name >= changes[i].Name {
			return false
		}
	}
	return true
}
