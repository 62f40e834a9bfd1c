package twin

import (
	"encoding/json"
	"fmt"
	"maps"
)

// The payloads of the device reports an edge sends up through its outbox
// (protocol.ReportTwin and protocol.ReportDeviceState, Subject namespace/name).
// Both are snapshots, not diffs: the newest report of a device says everything
// the cloud should hold, so the edge may replace an unsent report with a newer
// one (the latest value per property wins) and the cloud needs no memory of
// what came before.

// TwinReport is the payload of a protocol.ReportTwin: the device's whole twin
// in the form of Device.status.twins (see Reported), and the uid of the Device
// it is about.
type TwinReport struct {
	Twins []StatusTwin `json:"twins"`
	// UID is the metadata.uid of the Device the edge served when it made the
	// report ("" if it did not know it): a report still queued when the Device
	// was deleted and made again under its name is about the old one, and the
	// cloud drops it rather than show it on the new one.
	UID string `json:"uid,omitempty"`
}

// StateReport is the payload of a protocol.ReportDeviceState: status.state and
// status.lastOnlineTime, and the uid of the Device (as in TwinReport).
type StateReport struct {
	DeviceState
	UID string `json:"uid,omitempty"`
}

// maxUID bounds a report's uid: Kubernetes' are 36 characters.
const maxUID = 128

// EncodeTwinReport encodes the report of twin t, about the Device of uid.
func EncodeTwinReport(t Twin, uid string) []byte {
	b := appendReportOf(make([]byte, 0, 256), t)
	if uid == "" {
		return b
	}
	b = append(b[:len(b)-1], `,"uid":`...)
	b = appendString(b, uid)
	return append(b, '}')
}

// EncodeStateReport encodes the report of device state s, about the Device of
// uid.
func EncodeStateReport(s DeviceState, uid string) []byte {
	return mustMarshal(StateReport{DeviceState: s, UID: uid})
}

// ErrReport is returned by DecodeTwinReport and DecodeStateReport when a
// report payload is not what an edge sends: not a JSON object, a property
// named twice or outside the key pattern, a state outside the known ones.
// The cloud drops such a report (it can never be applied) instead of
// retrying it.
var ErrReport = fmt.Errorf("twin: malformed device report")

// DecodeTwinReport decodes and checks a TwinReport. The cloud reads what an
// edge sends, so names are checked against the key pattern and each named at
// most once; values are not re-checked against types (the edge did that, and
// the cloud has no model at hand that the edge did not have).
func DecodeTwinReport(b []byte) (TwinReport, error) {
	var r TwinReport
	if err := json.Unmarshal(b, &r); err != nil {
		return TwinReport{}, fmt.Errorf("%w: %v", ErrReport, err)
	}
	if r.Twins == nil {
		return TwinReport{}, fmt.Errorf("%w: twins is required", ErrReport)
	}
	seen := make(map[string]bool, len(r.Twins))
	for _, st := range r.Twins {
		if !ValidKey(st.PropertyName) {
			return TwinReport{}, fmt.Errorf("%w: property name %s is invalid", ErrReport, quote(st.PropertyName))
		}
		if seen[st.PropertyName] {
			return TwinReport{}, fmt.Errorf("%w: property %s is named twice", ErrReport, quote(st.PropertyName))
		}
		seen[st.PropertyName] = true
	}
	if len(r.UID) > maxUID {
		return TwinReport{}, fmt.Errorf("%w: uid of %d bytes, at most %d", ErrReport, len(r.UID), maxUID)
	}
	return r, nil
}

// DecodeStateReport decodes and checks a StateReport. An empty state is
// allowed (a device that never reported one); any other must be one of the
// State constants.
func DecodeStateReport(b []byte) (StateReport, error) {
	var s StateReport
	if err := json.Unmarshal(b, &s); err != nil {
		return StateReport{}, fmt.Errorf("%w: %v", ErrReport, err)
	}
	switch s.State {
	case "", StateOnline, StateOffline, StateOK, StateUnknown, StateUnhealthy:
	default:
		return StateReport{}, fmt.Errorf("%w: state %s is invalid", ErrReport, quote(s.State))
	}
	if len(s.UID) > maxUID {
		return StateReport{}, fmt.Errorf("%w: uid of %d bytes, at most %d", ErrReport, len(s.UID), maxUID)
	}
	return s, nil
}

// MergeSnapshot applies a TwinReport (a full snapshot of one device's twins)
// to what the cloud stores, and returns the new list, sorted by property name.
//
// Per property, the newer reported value wins as in MergeStatus, so a report
// redelivered after a newer one cannot move it back; observedDesired is taken
// from the snapshot, as its timestamp need not grow with the Device's revision
// (see the comment inside). Unlike MergeStatus,
// a property or side the snapshot does not hold is removed: the snapshot is
// everything the edge holds, so an absent actual was deleted by the device.
// A redelivered older snapshot can therefore bring a deleted property back for
// as long as it takes the newer snapshot to arrive again; the edge's outbox
// resends in order, so the newest snapshot is always applied last.
func MergeSnapshot(stored, snapshot []StatusTwin) []StatusTwin {
	merged := MergeStatus(stored, snapshot)
	in := make(map[string]StatusTwin, len(snapshot))
	for _, st := range snapshot {
		in[st.PropertyName] = st
	}
	out := make([]StatusTwin, 0, len(in))
	for _, st := range merged {
		s, ok := in[st.PropertyName]
		if !ok {
			continue
		}
		if s.Reported == nil {
			st.Reported = nil
		}
		if s.ObservedDesired == nil {
			st.ObservedDesired = nil
		} else {
			// The desired side is ordered by the Device's revision at the edge, and its
			// timestamp is the manifest's (it need not grow with the revision): the snapshot's
			// value is the newest. The cloud applies a node's reports in order, so a resent
			// older snapshot is followed by the newer ones again.
			st.ObservedDesired = copyStatusValue(s.ObservedDesired)
		}
		if st.Reported == nil && st.ObservedDesired == nil {
			continue
		}
		out = append(out, st)
	}
	return out
}

// StatusEqual reports whether two status.twins lists hold the same values and
// metadata, in any order, so the cloud can skip a write that changes nothing.
func StatusEqual(a, b []StatusTwin) bool {
	if len(a) != len(b) {
		return false
	}
	byName := make(map[string]StatusTwin, len(a))
	for _, st := range a {
		byName[st.PropertyName] = st
	}
	for _, st := range b {
		o, ok := byName[st.PropertyName]
		if !ok || !valueEqual(o.Reported, st.Reported) || !valueEqual(o.ObservedDesired, st.ObservedDesired) {
			return false
		}
	}
	return len(byName) == len(b)
}

func valueEqual(a, b *StatusValue) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Value == b.Value && maps.Equal(a.Metadata, b.Metadata)
}
