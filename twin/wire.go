package twin

// The wire types below mirror KubeEdge's MQTT payloads field for field (names,
// order, omitempty), so the bytes tether sends are the bytes a KubeEdge mapper
// was written against. The encoders build them from the state types; they are
// exported so that clients (the simulator, tests) can decode what the edge sends.

// Header starts every message: the event it belongs to and when it was sent
// (Unix milliseconds).
type Header struct {
	EventID   string `json:"event_id"`
	Timestamp int64  `json:"timestamp"`
}

// Entry is one twin property in a payload:
//
//	{"expected": {"value": "20", "metadata": {"timestamp": 1700000000000}},
//	 "actual": {"value": "19", "metadata": {"timestamp": 1700000000001}},
//	 "optional": true, "metadata": {"type": "int"},
//	 "expected_version": {"cloud": 3, "edge": 0}, "actual_version": {"cloud": 0, "edge": 7}}
//
// Messages to devices never carry the version fields.
type Entry struct {
	Expected        *EntryValue   `json:"expected,omitempty"`
	Actual          *EntryValue   `json:"actual,omitempty"`
	Optional        *bool         `json:"optional,omitempty"`
	Metadata        *TypeMetadata `json:"metadata,omitempty"`
	ExpectedVersion *Version      `json:"expected_version,omitempty"`
	ActualVersion   *Version      `json:"actual_version,omitempty"`
}

// EntryValue is one side (expected or actual) of an Entry. Values are always
// strings, whatever the property type.
type EntryValue struct {
	Value    *string        `json:"value,omitempty"`
	Metadata *ValueMetadata `json:"metadata,omitempty"`
}

// TypeMetadata is an Entry's metadata: the property type.
type TypeMetadata struct {
	Type string `json:"type,omitempty"`
}

// ValueMetadata is an EntryValue's metadata: when the value was set (Unix ms).
type ValueMetadata struct {
	Timestamp int64 `json:"timestamp,omitempty"`
}

// Attr is a device attribute in membership messages.
type Attr struct {
	Value    string        `json:"value"`
	Optional *bool         `json:"optional,omitempty"`
	Metadata *TypeMetadata `json:"metadata,omitempty"`
}

// ResultMsg is $hw/events/device/{id}/twin/update/result on success, and
// twin/get/result.
type ResultMsg struct {
	Header
	Twin map[string]*Entry `json:"twin"`
}

// ErrorMsg is an error result, on twin/update/result or twin/get/result.
type ErrorMsg struct {
	Header
	Code   int    `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// DeltaMsg is $hw/events/device/{id}/twin/update/delta.
type DeltaMsg struct {
	Header
	Twin  map[string]*Entry `json:"twin"`
	Delta map[string]string `json:"delta"`
}

// DocumentMsg is $hw/events/device/{id}/twin/update/document.
type DocumentMsg struct {
	Header
	Twin map[string]Doc `json:"twin"`
}

// Doc is one property of a DocumentMsg; a side is null when the property did
// not exist before (Last) or no longer exists (Current).
type Doc struct {
	Last    *Entry `json:"last"`
	Current *Entry `json:"current"`
}

// StateResultMsg is $hw/events/device/{id}/state/update/result.
type StateResultMsg struct {
	Header
	Device StateResultDevice `json:"device"`
}

// StateResultDevice is the device in a StateResultMsg. SPEC §6 names the time
// lastOnlineTime (KubeEdge's edge writes last_online here; mappers do not read
// this topic, so the SPEC name is used).
type StateResultDevice struct {
	Name           string `json:"name"`
	State          string `json:"state"`
	LastOnlineTime string `json:"lastOnlineTime,omitempty"`
}

// MembershipMsg is $hw/events/node/{node}/membership/get/result.
type MembershipMsg struct {
	Header
	Devices []MemberMsg `json:"devices"`
}

// MembershipUpdatedMsg is $hw/events/node/{node}/membership/updated.
type MembershipUpdatedMsg struct {
	Header
	Added   []MemberMsg `json:"added_devices"`
	Removed []MemberMsg `json:"removed_devices"`
}

// MemberMsg is one device in membership messages; ID is namespace/name.
type MemberMsg struct {
	ID          string            `json:"id,omitempty"`
	Name        string            `json:"name,omitempty"`
	Description string            `json:"description,omitempty"`
	State       string            `json:"state,omitempty"`
	LastOnline  string            `json:"last_online,omitempty"`
	Attributes  map[string]Attr   `json:"attributes,omitempty"`
	Twin        map[string]*Entry `json:"twin,omitempty"`
}
