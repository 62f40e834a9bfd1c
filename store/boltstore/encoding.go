package boltstore

import (
	"encoding/binary"

	"github.com/tetherhub/tether/store"
)

// A kv record is uvarint(createRev) uvarint(modRev) value. A log entry is
// type, uvarint(len(key)) key, uvarint(createRev), uvarint(len(value)) value,
// then a 0/1 byte saying whether a previous version follows as
// uvarint(createRev) uvarint(modRev) uvarint(len(value)) value.
// Values returned by the decoders are copies: bbolt memory is only valid inside a transaction.

func encodeRecord(kv store.KV) []byte {
	b := make([]byte, 0, len(kv.Value)+2*binary.MaxVarintLen64)
	b = binary.AppendUvarint(b, uint64(kv.CreateRev))
	b = binary.AppendUvarint(b, uint64(kv.ModRev))
	return append(b, kv.Value...)
}

func decodeRecord(key string, b []byte) store.KV {
	kv, n := decodeRevs(key, b)
	kv.Value = append([]byte(nil), b[n:]...)
	return kv
}

// decodeMeta is decodeRecord without the value.
func decodeMeta(key string, b []byte) store.KV {
	kv, _ := decodeRevs(key, b)
	return kv
}

// decodeRevs reads a record's revisions; n is where its value starts.
func decodeRevs(key string, b []byte) (kv store.KV, n int) {
	cr, n1 := binary.Uvarint(b)
	mr, n2 := binary.Uvarint(b[n1:])
	return store.KV{Key: key, CreateRev: int64(cr), ModRev: int64(mr)}, n1 + n2
}

func encodeEvent(ev store.Event) []byte {
	b := make([]byte, 0, 32+len(ev.KV.Key)+len(ev.KV.Value))
	b = append(b, byte(ev.Type))
	b = binary.AppendUvarint(b, uint64(len(ev.KV.Key)))
	b = append(b, ev.KV.Key...)
	b = binary.AppendUvarint(b, uint64(ev.KV.CreateRev))
	b = binary.AppendUvarint(b, uint64(len(ev.KV.Value)))
	b = append(b, ev.KV.Value...)
	if ev.Prev == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(ev.Prev.CreateRev))
	b = binary.AppendUvarint(b, uint64(ev.Prev.ModRev))
	b = binary.AppendUvarint(b, uint64(len(ev.Prev.Value)))
	return append(b, ev.Prev.Value...)
}

// decodeEvent reads a log entry written by encodeEvent. The log is written only by this package,
// so a malformed entry means a damaged file; it is reported, not guessed around.
func decodeEvent(rev int64, b []byte) (store.Event, bool) {
	r := reader{b: b}
	ev := store.Event{Type: store.EventType(r.byte())}
	ev.KV.Key = string(r.bytes())
	ev.KV.CreateRev = int64(r.uvarint())
	ev.KV.ModRev = rev
	ev.KV.Value = r.bytes()
	if r.byte() == 1 {
		p := store.KV{Key: ev.KV.Key}
		p.CreateRev = int64(r.uvarint())
		p.ModRev = int64(r.uvarint())
		p.Value = r.bytes()
		ev.Prev = &p
	}
	if ev.Type == store.Delete {
		ev.KV.Value = nil
	}
	return ev, r.ok && r.off == len(b)
}

type reader struct {
	b   []byte
	off int
	ok  bool
}

func (r *reader) byte() byte {
	if r.off == 0 && !r.ok {
		r.ok = true
	}
	if !r.ok || r.off >= len(r.b) {
		r.ok = false
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) uvarint() uint64 {
	if !r.ok {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.ok = false
		return 0
	}
	r.off += n
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if !r.ok || n > uint64(len(r.b)-r.off) {
		r.ok = false
		return nil
	}
	v := append([]byte(nil), r.b[r.off:r.off+int(n)]...)
	r.off += int(n)
	return v
}
