package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Bounds a decoder enforces on fields, whatever room the frame has. They are far above what a
// valid message needs and exist so that a hostile length is refused before it is used.
const (
	maxName     = 253      // node names, namespaces, object names (DNS-1123 subdomain)
	maxResource = 128      // group-qualified resource
	maxShort    = 256      // cluster IDs, agent strings, report subjects
	maxText     = 4096     // error messages
	maxPEM      = 64 << 10 // CSRs and certificates
)

// ErrMalformed is returned (wrapped) by Decode when a frame is truncated, has trailing bytes in
// a message body, names an unknown type, or has a field beyond its bound.
var ErrMalformed = errors.New("protocol: malformed frame")

// Append encodes msgs onto b, one after the other, and returns the extended slice. Appending to
// a buffer that is reused is how a writer packs several messages into one frame.
func Append(b []byte, msgs ...Message) []byte {
	for _, m := range msgs {
		b = append(b, byte(m.Type()))
		// The body length is written after the body is known: reserve the largest uvarint
		// a body can need, then move the body down if the length was shorter.
		start := len(b)
		var pad [binary.MaxVarintLen64]byte
		b = append(b, pad[:]...)
		bodyStart := len(b)
		b = m.appendBody(b)
		bodyLen := len(b) - bodyStart
		n := binary.PutUvarint(b[start:], uint64(bodyLen))
		if n < binary.MaxVarintLen64 {
			copy(b[start+n:], b[bodyStart:])
			b = b[:start+n+bodyLen]
		}
	}
	return b
}

// Encode returns a new frame holding msgs.
func Encode(msgs ...Message) []byte { return Append(nil, msgs...) }

// MaxFrameMessages bounds the messages in one frame. Each decoded message costs far more memory
// than its few bytes on the wire (an Ack is 3 bytes), so the count is bounded as well as the
// frame's size. Senders' windows (cloudhub's Window, edgehub's ReportWindow) stay well below it.
const MaxFrameMessages = 65536

// Decode parses every message in frame. Byte slices in the result (objects, payloads) alias
// frame; copy them if frame is reused. Any malformation fails the whole frame with an error
// wrapping ErrMalformed: a peer that sends one bad message is not to be trusted with the rest.
func Decode(frame []byte) ([]Message, error) {
	var out []Message
	d := decoder{b: frame}
	for d.off < len(d.b) && d.err == nil {
		if len(out) == MaxFrameMessages {
			d.fail("more than %d messages in one frame", MaxFrameMessages)
			break
		}
		t := Type(d.byte())
		n := d.uvarint()
		if d.err != nil {
			break
		}
		if n > uint64(len(d.b)-d.off) {
			d.fail("message body of %d bytes overruns the frame", n)
			break
		}
		body := decoder{b: d.b[d.off : d.off+int(n)]}
		d.off += int(n)
		m := newMessage(t)
		if m == nil {
			d.fail("unknown message type %d", uint8(t))
			break
		}
		m.decodeBody(&body)
		if body.err == nil && body.off != len(body.b) {
			body.fail("%d trailing bytes in %s", len(body.b)-body.off, t)
		}
		if body.err != nil {
			d.err = body.err
			break
		}
		out = append(out, m)
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty frame", ErrMalformed)
	}
	return out, nil
}

func newMessage(t Type) Message {
	switch t {
	case TypeHello:
		return &Hello{}
	case TypeWelcome:
		return &Welcome{}
	case TypeUpsert:
		return &Upsert{}
	case TypeDelete:
		return &Delete{}
	case TypeProgress:
		return &Progress{}
	case TypeResetBegin:
		return &ResetBegin{}
	case TypeResetEnd:
		return &ResetEnd{}
	case TypeAck:
		return &Ack{}
	case TypeReport:
		return &Report{}
	case TypeReportAck:
		return &ReportAck{}
	case TypeError:
		return &Error{}
	case TypeRenew:
		return &Renew{}
	case TypeRenewed:
		return &Renewed{}
	case TypeRequest:
		return &Request{}
	case TypeResponse:
		return &Response{}
	}
	return nil
}

// decoder reads fields from one body; the first failure sticks and later reads return zeroes.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail("truncated")
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) uint32() uint32 {
	v := d.uvarint()
	if v > 1<<32-1 {
		d.fail("value %d does not fit 32 bits", v)
		return 0
	}
	return uint32(v)
}

func (d *decoder) int64() int64 {
	v := d.uvarint()
	return int64(v>>1) ^ -int64(v&1) // zig-zag
}

func (d *decoder) bytes(limit int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) {
		d.fail("field of %d bytes exceeds its bound of %d", n, limit)
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail("field of %d bytes overruns the message", n)
		return nil
	}
	v := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return v
}

func (d *decoder) string(limit int) string { return string(d.bytes(limit)) }

func (d *decoder) key() Key {
	return Key{Resource: d.string(maxResource), Namespace: d.string(maxName), Name: d.string(maxName)}
}

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendInt64(b []byte, v int64) []byte {
	return binary.AppendUvarint(b, uint64(v<<1)^uint64(v>>63))
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendKey(b []byte, k Key) []byte {
	b = appendString(b, k.Resource)
	b = appendString(b, k.Namespace)
	return appendString(b, k.Name)
}

func (m *Hello) appendBody(b []byte) []byte {
	b = appendUvarint(b, uint64(m.Version))
	b = appendString(b, m.Node)
	b = appendString(b, m.ClusterID)
	b = appendUvarint(b, m.Cursor)
	return appendString(b, m.Agent)
}

func (m *Hello) decodeBody(d *decoder) {
	m.Version = d.uint32()
	m.Node = d.string(maxName)
	m.ClusterID = d.string(maxShort)
	m.Cursor = d.uvarint()
	m.Agent = d.string(maxShort)
}

func (m *Welcome) appendBody(b []byte) []byte {
	b = appendUvarint(b, uint64(m.Version))
	b = appendString(b, m.ClusterID)
	b = appendUvarint(b, m.Head)
	b = append(b, byte(m.Mode))
	return appendUvarint(b, uint64(m.HeartbeatMS))
}

func (m *Welcome) decodeBody(d *decoder) {
	m.Version = d.uint32()
	m.ClusterID = d.string(maxShort)
	m.Head = d.uvarint()
	m.Mode = Mode(d.byte())
	if d.err == nil && m.Mode != ModeIncremental && m.Mode != ModeReset {
		d.fail("unknown mode %d", m.Mode)
	}
	m.HeartbeatMS = d.uint32()
}

func (m *Upsert) appendBody(b []byte) []byte {
	b = appendUvarint(b, m.Seq)
	b = appendUvarint(b, m.Rev)
	b = appendKey(b, m.Key)
	return appendBytes(b, m.Object)
}

func (m *Upsert) decodeBody(d *decoder) {
	m.Seq = d.uvarint()
	m.Rev = d.uvarint()
	m.Key = d.key()
	m.Object = d.bytes(len(d.b))
}

func (m *Delete) appendBody(b []byte) []byte {
	b = appendUvarint(b, m.Seq)
	b = appendUvarint(b, m.Rev)
	return appendKey(b, m.Key)
}

func (m *Delete) decodeBody(d *decoder) {
	m.Seq = d.uvarint()
	m.Rev = d.uvarint()
	m.Key = d.key()
}

func (m *Progress) appendBody(b []byte) []byte {
	b = appendUvarint(b, m.Seq)
	return appendUvarint(b, m.Through)
}

func (m *Progress) decodeBody(d *decoder) {
	m.Seq = d.uvarint()
	m.Through = d.uvarint()
}

func (m *ResetBegin) appendBody(b []byte) []byte { return appendUvarint(b, m.Seq) }
func (m *ResetBegin) decodeBody(d *decoder)      { m.Seq = d.uvarint() }

func (m *ResetEnd) appendBody(b []byte) []byte {
	b = appendUvarint(b, m.Seq)
	return appendUvarint(b, m.Through)
}

func (m *ResetEnd) decodeBody(d *decoder) {
	m.Seq = d.uvarint()
	m.Through = d.uvarint()
}

func (m *Ack) appendBody(b []byte) []byte { return appendUvarint(b, m.Seq) }
func (m *Ack) decodeBody(d *decoder)      { m.Seq = d.uvarint() }

func (m *Report) appendBody(b []byte) []byte {
	b = appendUvarint(b, m.Seq)
	b = append(b, byte(m.Kind))
	b = appendString(b, m.Subject)
	b = appendInt64(b, m.Time)
	return appendBytes(b, m.Payload)
}

func (m *Report) decodeBody(d *decoder) {
	m.Seq = d.uvarint()
	m.Kind = ReportKind(d.byte())
	m.Subject = d.string(MaxReportSubject)
	m.Time = d.int64()
	m.Payload = d.bytes(MaxReportPayload)
}

func (m *ReportAck) appendBody(b []byte) []byte { return appendUvarint(b, m.Seq) }
func (m *ReportAck) decodeBody(d *decoder)      { m.Seq = d.uvarint() }

func (m *Error) appendBody(b []byte) []byte {
	b = appendUvarint(b, uint64(m.Code))
	return appendString(b, m.Message)
}

func (m *Error) decodeBody(d *decoder) {
	c := d.uvarint()
	if c > 1<<16-1 {
		d.fail("error code %d out of range", c)
	}
	m.Code = Code(c)
	m.Message = d.string(maxText)
}

func (m *Renew) appendBody(b []byte) []byte { return appendBytes(b, m.CSR) }
func (m *Renew) decodeBody(d *decoder)      { m.CSR = d.bytes(maxPEM) }

func (m *Renewed) appendBody(b []byte) []byte {
	b = appendBytes(b, m.Certificate)
	return appendString(b, m.Message)
}

func (m *Renewed) decodeBody(d *decoder) {
	m.Certificate = d.bytes(maxPEM)
	m.Message = d.string(maxText)
}

func (m *Request) appendBody(b []byte) []byte {
	b = appendUvarint(b, m.ID)
	b = appendString(b, m.Method)
	b = appendString(b, m.Path)
	b = appendString(b, m.ContentType)
	return appendBytes(b, m.Body)
}

func (m *Request) decodeBody(d *decoder) {
	m.ID = d.uvarint()
	m.Method = d.string(16)
	m.Path = d.string(maxText)
	m.ContentType = d.string(maxShort)
	m.Body = d.bytes(len(d.b))
}

func (m *Response) appendBody(b []byte) []byte {
	b = appendUvarint(b, m.ID)
	b = appendUvarint(b, uint64(m.Code))
	b = appendString(b, m.ContentType)
	return appendBytes(b, m.Body)
}

func (m *Response) decodeBody(d *decoder) {
	m.ID = d.uvarint()
	c := d.uvarint()
	if c > 999 {
		d.fail("status code %d out of range", c)
	}
	m.Code = uint16(c)
	m.ContentType = d.string(maxShort)
	m.Body = d.bytes(len(d.b))
}
