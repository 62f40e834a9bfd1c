package twin

import (
	"maps"
	"math"
	"slices"
	"strconv"
)

// StatusTwin is one element of Device.status.twins[] as the cloud stores it.
// Metadata values are strings because the CRD declares metadata as a map of
// strings (so a timestamp is "1700000000000", not a number).
type StatusTwin struct {
	PropertyName    string       `json:"propertyName"`
	Reported        *StatusValue `json:"reported,omitempty"`
	ObservedDesired *StatusValue `json:"observedDesired,omitempty"`
}

// StatusValue is the reported or observedDesired side of a StatusTwin.
type StatusValue struct {
	Value    string            `json:"value"`
	Metadata map[string]string `json:"metadata,omitempty"` // "timestamp" (Unix ms, decimal), "type"
}

// Metadata keys of a StatusValue.
const (
	MetaTimestamp = "timestamp"
	MetaType      = "type"
)

// Reported returns the twin as the cloud stores it in Device.status.twins[],
// sorted by property name so equal twins encode to equal bytes: actual becomes
// reported, and expected becomes observedDesired (the desired value the edge
// holds), each with its timestamp and type.
func Reported(t Twin) []StatusTwin {
	out := make([]StatusTwin, 0, len(t.Props))
	for _, name := range slices.Sorted(maps.Keys(t.Props)) {
		p := t.Props[name]
		st := StatusTwin{PropertyName: name}
		if p.Actual != nil {
			st.Reported = statusValue(p.Actual, p.Type)
		}
		if p.Expected != nil {
			st.ObservedDesired = statusValue(p.Expected, p.Type)
		}
		if st.Reported == nil && st.ObservedDesired == nil {
			continue
		}
		out = append(out, st)
	}
	return out
}

func statusValue(v *Value, typ string) *StatusValue {
	return &StatusValue{
		Value:    v.Value,
		Metadata: map[string]string{MetaTimestamp: strconv.FormatInt(v.Timestamp, 10), MetaType: typ},
	}
}

// MergeStatus merges twins reported by an edge (incoming) into what the cloud
// stores (stored) and returns the result sorted by property name. Per property
// and per side (reported, observedDesired) the value with the newer timestamp
// wins, so a redelivered older report never overwrites a newer one; on equal
// timestamps incoming wins, as the outbox delivers a node's reports in order.
// A missing or unparsable timestamp counts as older than any valid one.
// Properties absent from incoming, and sides incoming leaves out, are kept: a
// report may carry only the properties that changed. The consequence is that
// a deleted actual is not removed from status by a merge; the caller replaces
// the list when it knows a report is a full snapshot. Inputs are not modified
// and the result shares no maps with them.
func MergeStatus(stored, incoming []StatusTwin) []StatusTwin {
	m := make(map[string]StatusTwin, len(stored)+len(incoming))
	for _, list := range [][]StatusTwin{stored, incoming} {
		for _, st := range list {
			cur := m[st.PropertyName]
			cur.PropertyName = st.PropertyName
			cur.Reported = newer(cur.Reported, st.Reported)
			cur.ObservedDesired = newer(cur.ObservedDesired, st.ObservedDesired)
			m[st.PropertyName] = cur
		}
	}
	out := make([]StatusTwin, 0, len(m))
	for _, name := range slices.Sorted(maps.Keys(m)) {
		st := m[name]
		st.Reported = copyStatusValue(st.Reported)
		st.ObservedDesired = copyStatusValue(st.ObservedDesired)
		out = append(out, st)
	}
	return out
}

// newer returns b unless a is strictly newer; either may be nil.
func newer(a, b *StatusValue) *StatusValue {
	switch {
	case b == nil:
		return a
	case a == nil:
		return b
	case statusTime(a) > statusTime(b):
		return a
	}
	return b
}

func statusTime(v *StatusValue) int64 {
	ts, err := strconv.ParseInt(v.Metadata[MetaTimestamp], 10, 64)
	if err != nil {
		return math.MinInt64
	}
	return ts
}

func copyStatusValue(v *StatusValue) *StatusValue {
	if v == nil {
		return nil
	}
	return &StatusValue{Value: v.Value, Metadata: maps.Clone(v.Metadata)}
}
