package twin

import (
	"encoding/json"
	"fmt"
	"io"
)

// The encoders are pure: event ids and times come in as arguments. A result
// answers a request and reuses its event_id, as KubeEdge does; an unsolicited
// message (delta, state result, membership) takes a fresh id from the caller's
// generator (see NewEventID). Output is deterministic: encoding/json sorts map
// keys and struct fields keep KubeEdge's order.

// EncodeResult encodes the success result of an update applied with
// ApplyReport, echoing the accepted properties from the new twin t: a deleted
// property as null, a reported one as its actual, optional and type (no
// expected, no versions, like KubeEdge's echo). Entries that only carried an
// ignored expected are not echoed. The event_id is the update's.
func EncodeResult(upd Update, t Twin, now int64) []byte {
	return appendResult(make([]byte, 0, 256), upd, t, now)
}

// EncodeError encodes an error result {event_id, timestamp, code, reason}. For
// an error from this package: EncodeError(id, CodeOf(err), err.Error(), now).
func EncodeError(eventID string, code int, reason string, now int64) []byte {
	return mustMarshal(ErrorMsg{Header: Header{eventID, now}, Code: code, Reason: reason})
}

// EncodeDelta encodes twin/update/delta for t. As in KubeEdge, twin lists the
// properties that have an expected value and delta those whose expected differs
// from actual. ok is false when delta is empty: then there is nothing to send.
func EncodeDelta(eventID string, t Twin, now int64) (payload []byte, ok bool) {
	delta := Delta(t)
	if len(delta) == 0 {
		return nil, false
	}
	tw := make(map[string]*Entry)
	for name, p := range t.Props {
		if p.Expected != nil {
			tw[name] = toEntry(p, false)
		}
	}
	return mustMarshal(DeltaMsg{Header: Header{eventID, now}, Twin: tw, Delta: delta}), true
}

// Document returns the twin field of twin/update/document for changes: per
// changed property its state before and after, null where absent, without
// versions.
func Document(changes []Change) map[string]Doc {
	doc := make(map[string]Doc, len(changes))
	for _, c := range changes {
		var d Doc
		if c.Last != nil {
			d.Last = toEntry(*c.Last, false)
		}
		if c.Current != nil {
			d.Current = toEntry(*c.Current, false)
		}
		doc[c.Name] = d
	}
	return doc
}

// EncodeDocument encodes twin/update/document for changes. KubeEdge uses the
// event_id of the update that caused the changes.
func EncodeDocument(eventID string, changes []Change, now int64) []byte {
	if changesSorted(changes) {
		return appendDocument(make([]byte, 0, 512), eventID, changes, now)
	}
	return appendDocumentMsg(nil, DocumentMsg{Header: Header{eventID, now}, Twin: Document(changes)})
}

// EncodeGetResult encodes twin/get/result: every property of t, without versions.
func EncodeGetResult(eventID string, t Twin, now int64) []byte {
	tw := make(map[string]*Entry, len(t.Props))
	for name, p := range t.Props {
		tw[name] = toEntry(p, false)
	}
	return appendResultMsg(nil, ResultMsg{Header: Header{eventID, now}, Twin: tw})
}

// EncodeStateResult encodes state/update/result for the device called name
// (its name, not namespace/name, as in KubeEdge).
func EncodeStateResult(eventID, name string, s DeviceState, now int64) []byte {
	return mustMarshal(StateResultMsg{
		Header: Header{eventID, now},
		Device: StateResultDevice{Name: name, State: s.State, LastOnlineTime: s.LastOnline},
	})
}

// Member is a device as membership messages describe it.
type Member struct {
	Namespace   string
	Name        string
	Description string
	State       DeviceState
	Attributes  map[string]Attr
	Twin        Twin
}

// ID returns the device id used in topics and membership: namespace/name.
func (m Member) ID() string { return m.Namespace + "/" + m.Name }

func (m Member) msg(withTwin bool) MemberMsg {
	mm := MemberMsg{
		ID:          m.ID(),
		Name:        m.Name,
		Description: m.Description,
		State:       m.State.State,
		LastOnline:  m.State.LastOnline,
		Attributes:  m.Attributes,
	}
	if withTwin && len(m.Twin.Props) > 0 {
		mm.Twin = make(map[string]*Entry, len(m.Twin.Props))
		for name, p := range m.Twin.Props {
			mm.Twin[name] = toEntry(p, false)
		}
	}
	return mm
}

// EncodeMembershipGetResult encodes membership/get/result: the node's devices
// in the given order, without twins (as KubeEdge). An empty list is [], not null.
func EncodeMembershipGetResult(eventID string, members []Member, now int64) []byte {
	devs := make([]MemberMsg, 0, len(members))
	for _, m := range members {
		devs = append(devs, m.msg(false))
	}
	return mustMarshal(MembershipMsg{Header: Header{eventID, now}, Devices: devs})
}

// EncodeMembershipUpdated encodes membership/updated: devices added to and
// removed from the node, each with its twin (without versions).
func EncodeMembershipUpdated(eventID string, added, removed []Member, now int64) []byte {
	msg := MembershipUpdatedMsg{
		Header:  Header{eventID, now},
		Added:   make([]MemberMsg, 0, len(added)),
		Removed: make([]MemberMsg, 0, len(removed)),
	}
	for _, m := range added {
		msg.Added = append(msg.Added, m.msg(true))
	}
	for _, m := range removed {
		msg.Removed = append(msg.Removed, m.msg(true))
	}
	return mustMarshal(msg)
}

// The device → edge encoders below write what a KubeEdge mapper sends. The edge
// never sends them; the simulator and tests do, and the fuzz tests use them to
// check that decoding is stable.

type (
	outUpdate struct {
		Header
		Twin map[string]*outEntry `json:"twin"`
	}
	outEntry struct {
		Expected *outValue     `json:"expected,omitempty"`
		Actual   *outValue     `json:"actual,omitempty"`
		Optional *bool         `json:"optional,omitempty"`
		Metadata *TypeMetadata `json:"metadata,omitempty"`
	}
	outValue struct {
		Value string `json:"value"`
	}
	outState struct {
		Header
		State string `json:"state"`
	}
)

// EncodeUpdate encodes a twin update as a mapper sends it.
func EncodeUpdate(u Update) []byte {
	tw := make(map[string]*outEntry, len(u.Twin))
	for name, r := range u.Twin {
		if r == nil {
			tw[name] = nil
			continue
		}
		e := &outEntry{Optional: r.Optional}
		if r.Actual != nil {
			e.Actual = &outValue{*r.Actual}
		}
		if r.Expected != nil {
			e.Expected = &outValue{*r.Expected}
		}
		if r.Type != "" {
			e.Metadata = &TypeMetadata{Type: r.Type}
		}
		tw[name] = e
	}
	return mustMarshal(outUpdate{Header: Header{u.EventID, u.Timestamp}, Twin: tw})
}

// EncodeGet encodes a twin/get or membership/get request.
func EncodeGet(g Get) []byte {
	return mustMarshal(Header(g))
}

// EncodeStateUpdate encodes a state update as a mapper sends it.
func EncodeStateUpdate(s StateUpdate) []byte {
	return mustMarshal(outState{Header: Header{s.EventID, s.Timestamp}, State: s.State})
}

// Entry returns p in its full payload form, versions included; the encoders
// for devices use the same form without versions.
func (p Property) Entry() *Entry { return toEntry(p, true) }

// toEntry converts a property to its payload form.
func toEntry(p Property, withVersions bool) *Entry {
	e := &Entry{Metadata: &TypeMetadata{Type: p.Type}}
	opt := p.Optional
	e.Optional = &opt
	if p.Expected != nil {
		e.Expected = entryValue(p.Expected)
	}
	if p.Actual != nil {
		e.Actual = entryValue(p.Actual)
	}
	if withVersions {
		ev, av := p.ExpectedVersion, p.ActualVersion
		e.ExpectedVersion, e.ActualVersion = &ev, &av
	}
	return e
}

func entryValue(v *Value) *EntryValue {
	s := v.Value
	return &EntryValue{Value: &s, Metadata: &ValueMetadata{Timestamp: v.Timestamp}}
}

// mustMarshal marshals the package's own message types. They hold only
// strings, integers, booleans, maps with string keys and slices, for which
// encoding/json cannot fail, so an error here is a bug in this package.
func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("twin: encoding %T: %v", v, err))
	}
	return b
}

// NewEventID returns a generator of event ids: random (version 4) UUIDs read
// from r, the form KubeEdge uses. Pass crypto/rand.Reader in production and a
// fixed reader in tests, so no randomness is hidden in the encoders. The
// generator is as safe for concurrent use as r (crypto/rand.Reader is). If r
// fails it returns "", which mappers accept (they send "" themselves).
func NewEventID(r io.Reader) func() string {
	return func() string {
		var b [16]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return ""
		}
		b[6] = b[6]&0x0f | 0x40 // version 4
		b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
		return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	}
}
