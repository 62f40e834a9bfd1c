package protocol

import (
	"errors"
	"fmt"
)

// Version is the protocol version this package speaks. A peer announcing another version gets
// an Error with CodeUnsupportedVersion.
const Version = 1

// Type identifies a message in a frame.
type Type uint8

// Message types. Values are part of the wire format: never renumber, only add.
const (
	TypeHello      Type = 1  // edge → cloud, first message of a session
	TypeWelcome    Type = 2  // cloud → edge, answer to Hello
	TypeUpsert     Type = 3  // cloud → edge, an object in the node's view
	TypeDelete     Type = 4  // cloud → edge, a key that left the node's view
	TypeProgress   Type = 5  // cloud → edge, the view is complete through a revision
	TypeResetBegin Type = 6  // cloud → edge, a full view follows; keys not in it are to be removed
	TypeResetEnd   Type = 7  // cloud → edge, end of the full view
	TypeAck        Type = 8  // edge → cloud, cumulative ack of data messages
	TypeReport     Type = 9  // edge → cloud, one outbox entry
	TypeReportAck  Type = 10 // cloud → edge, cumulative ack of reports
	TypeError      Type = 11 // either way, followed by a close
	TypeRenew      Type = 12 // edge → cloud, a CSR for a fresh certificate
	TypeRenewed    Type = 13 // cloud → edge, the fresh certificate
	TypeRequest    Type = 14 // edge → cloud, an API write forwarded by the metaserver
	TypeResponse   Type = 15 // cloud → edge, its answer
)

func (t Type) String() string {
	switch t {
	case TypeHello:
		return "Hello"
	case TypeWelcome:
		return "Welcome"
	case TypeUpsert:
		return "Upsert"
	case TypeDelete:
		return "Delete"
	case TypeProgress:
		return "Progress"
	case TypeResetBegin:
		return "ResetBegin"
	case TypeResetEnd:
		return "ResetEnd"
	case TypeAck:
		return "Ack"
	case TypeReport:
		return "Report"
	case TypeReportAck:
		return "ReportAck"
	case TypeError:
		return "Error"
	case TypeRenew:
		return "Renew"
	case TypeRenewed:
		return "Renewed"
	case TypeRequest:
		return "Request"
	case TypeResponse:
		return "Response"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Message is one protocol message. The concrete types below are the only implementations.
type Message interface {
	Type() Type
	appendBody(b []byte) []byte
	decodeBody(d *decoder)
}

// Key names one object: its group-qualified resource ("pods", "devices.devices.kubeedge.io"),
// its namespace (empty for cluster-scoped kinds) and its name.
type Key struct {
	Resource  string
	Namespace string
	Name      string
}

func (k Key) String() string {
	if k.Namespace == "" {
		return k.Resource + "/" + k.Name
	}
	return k.Resource + "/" + k.Namespace + "/" + k.Name
}

// Mode says how the cloud will bring a node's view up to date after Hello.
type Mode uint8

const (
	// ModeIncremental: only keys that changed after the edge's cursor follow.
	ModeIncremental Mode = 1
	// ModeReset: the cursor is unknown to the cloud (compacted, from another cluster, or ahead of
	// it); a ResetBegin … ResetEnd with the whole view follows.
	ModeReset Mode = 2
)

// ReportKind says what an upstream report carries.
type ReportKind uint8

const (
	ReportNodeStatus  ReportKind = 1 // payload: the node's status as JSON (nodeInfo, addresses, ...)
	ReportTwin        ReportKind = 2 // payload: a device's reported twins; Subject is namespace/name
	ReportDeviceState ReportKind = 3 // payload: a device's state; Subject is namespace/name
	ReportUpload      ReportKind = 4 // payload: opaque; Subject is the MQTT topic it came from
)

// Hello opens a session. The node's identity is its certificate; Node here is only checked
// against it, so a frame claiming another node's name is refused (CodeIdentityMismatch).
type Hello struct {
	Version   uint32
	Node      string
	ClusterID string // the cluster the cursor belongs to; empty before the first sync
	Cursor    uint64 // revision through which the stored view is complete; 0 before the first sync
	Agent     string // the agent's build version, for logs
}

// Welcome answers Hello.
type Welcome struct {
	Version     uint32
	ClusterID   string
	Head        uint64 // the cloud's revision when the session started
	Mode        Mode
	HeartbeatMS uint32 // how often the edge should ping; the cloud drops a node silent for two intervals
}

// Upsert puts an object into the node's view. Rev is the revision the content is valid at; the
// edge ignores it when it stores a newer revision for the key. Object is Kubernetes JSON.
type Upsert struct {
	Seq    uint64
	Rev    uint64
	Key    Key
	Object []byte
}

// Delete removes a key from the node's view, under the same version rule as Upsert.
type Delete struct {
	Seq uint64
	Rev uint64
	Key Key
}

// Progress says that every change through revision Through has been sent before it.
type Progress struct {
	Seq     uint64
	Through uint64
}

// ResetBegin starts a full view: every key the edge holds that is not upserted before ResetEnd
// is to be deleted.
type ResetBegin struct {
	Seq uint64
}

// ResetEnd ends a full view, complete through revision Through.
type ResetEnd struct {
	Seq     uint64
	Through uint64
}

// Ack acknowledges every data message (Upsert, Delete, Progress, ResetBegin, ResetEnd) with a
// sequence number up to and including Seq, once the edge store has committed them.
type Ack struct {
	Seq uint64
}

// Report carries one outbox entry upward. Seq numbers are the outbox's own and only grow.
// Subject and Payload are bounded (MaxReportSubject, MaxReportPayload; see CheckReport).
type Report struct {
	Seq     uint64
	Kind    ReportKind
	Subject string
	Time    int64 // Unix milliseconds when the edge recorded it
	Payload []byte
}

// Bounds of a Report that every hub accepts. An edge refuses to queue a report beyond them: it
// could never be delivered, and every report queued after it would wait behind it for good.
const (
	MaxReportSubject = 2 * maxShort // bytes: a namespace/name device id, an MQTT upload topic
	MaxReportPayload = 1 << 20      // bytes
)

// MaxReportBytesInFlight bounds the payload bytes of the reports an edge has written and the hub
// has not acknowledged yet (one report may take it past, so that any report can be sent). A hub
// queues at least twice that per node before it refuses more.
const MaxReportBytesInFlight = 32 << 20

// ErrReportTooLarge is returned (wrapped) by CheckReport.
var ErrReportTooLarge = errors.New("protocol: report beyond the bounds a hub accepts")

// CheckReport says whether a report with this subject and payload length is within the bounds
// every hub accepts.
func CheckReport(subject string, payloadLen int) error {
	switch {
	case len(subject) > MaxReportSubject:
		return fmt.Errorf("%w: subject of %d bytes, at most %d", ErrReportTooLarge, len(subject), MaxReportSubject)
	case payloadLen > MaxReportPayload:
		return fmt.Errorf("%w: payload of %d bytes, at most %d", ErrReportTooLarge, payloadLen, MaxReportPayload)
	}
	return nil
}

// ReportAck acknowledges every report up to and including Seq, once the cloud has stored them.
type ReportAck struct {
	Seq uint64
}

// Error tells the peer why the session ends. The sender closes the connection after it.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Renew asks for a fresh client certificate; CSR is PEM.
type Renew struct {
	CSR []byte
}

// Renewed carries the fresh certificate (PEM), or an empty one and a Message if refused.
type Renewed struct {
	Certificate []byte
	Message     string
}

// Request is a Kubernetes-style API request a client made to the edge metaserver, forwarded to
// the cloud. The cloud decides what the node may change; the edge only relays.
type Request struct {
	ID          uint64 // chosen by the edge, echoed in the Response
	Method      string
	Path        string // path and query, as the client sent them
	ContentType string
	Body        []byte
}

// Response answers a Request: an HTTP status and a body (an object or a metav1.Status).
type Response struct {
	ID          uint64
	Code        uint16
	ContentType string
	Body        []byte
}

func (*Hello) Type() Type      { return TypeHello }
func (*Welcome) Type() Type    { return TypeWelcome }
func (*Upsert) Type() Type     { return TypeUpsert }
func (*Delete) Type() Type     { return TypeDelete }
func (*Progress) Type() Type   { return TypeProgress }
func (*ResetBegin) Type() Type { return TypeResetBegin }
func (*ResetEnd) Type() Type   { return TypeResetEnd }
func (*Ack) Type() Type        { return TypeAck }
func (*Report) Type() Type     { return TypeReport }
func (*ReportAck) Type() Type  { return TypeReportAck }
func (*Error) Type() Type      { return TypeError }
func (*Renew) Type() Type      { return TypeRenew }
func (*Renewed) Type() Type    { return TypeRenewed }
func (*Request) Type() Type    { return TypeRequest }
func (*Response) Type() Type   { return TypeResponse }

// SeqOf returns the sequence number of a data message (the ones Ack counts) and whether m is one.
func SeqOf(m Message) (uint64, bool) {
	switch m := m.(type) {
	case *Upsert:
		return m.Seq, true
	case *Delete:
		return m.Seq, true
	case *Progress:
		return m.Seq, true
	case *ResetBegin:
		return m.Seq, true
	case *ResetEnd:
		return m.Seq, true
	}
	return 0, false
}
