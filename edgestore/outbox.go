package edgestore

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tetherhub/tether/internal/boltkeys"
	"github.com/tetherhub/tether/protocol"
)

// Entry is one report in the outbox: exactly what goes on the wire, Seq included.
type Entry = protocol.Report

// checkEntries refuses reports that no hub would accept (protocol.CheckReport): queued, such a
// report would fail its frame at every resend, and every report after it would wait for good.
func checkEntries(entries []Entry) error {
	for _, e := range entries {
		if err := protocol.CheckReport(e.Subject, len(e.Payload)); err != nil {
			return fmt.Errorf("edgestore: report %q not queued: %w", truncate(e.Subject, 64), err)
		}
	}
	return nil
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// An outbox value is kind, uvarint(len subject) subject, varint(time), payload.

func encodeEntry(e Entry) []byte {
	b := make([]byte, 0, 24+len(e.Subject)+len(e.Payload))
	b = append(b, byte(e.Kind))
	b = binary.AppendUvarint(b, uint64(len(e.Subject)))
	b = append(b, e.Subject...)
	b = binary.AppendVarint(b, e.Time)
	return append(b, e.Payload...)
}

func decodeEntry(seq uint64, v []byte) (Entry, error) {
	e := Entry{Seq: seq}
	if len(v) < 1 {
		return e, fmt.Errorf("edgestore: outbox entry %d is damaged", seq)
	}
	e.Kind = protocol.ReportKind(v[0])
	v = v[1:]
	l, n := binary.Uvarint(v)
	if n <= 0 || l > uint64(len(v)-n) {
		return e, fmt.Errorf("edgestore: outbox entry %d is damaged", seq)
	}
	e.Subject = string(v[n : n+int(l)])
	v = v[n+int(l):]
	t, n := binary.Varint(v)
	if n <= 0 {
		return e, fmt.Errorf("edgestore: outbox entry %d is damaged", seq)
	}
	e.Time = t
	e.Payload = append([]byte(nil), v[n:]...)
	return e, nil
}

// Enqueue appends reports to the outbox and returns once they are durable. It fails with
// ErrOutboxFull (appending none of them) when the outbox would pass its limit, and with an
// error wrapping protocol.ErrReportTooLarge when a report is beyond what a hub accepts.
func (s *Store) Enqueue(ctx context.Context, entries ...Entry) error {
	return s.do(ctx, func(tx *bolt.Tx, st *txState) error {
		return s.enqueue(tx, st, entries)
	})
}

// outboxReserve is room kept beyond the limit for the node's own status reports, so that an
// outbox full of device reports can still carry the condition that says so.
const outboxReserve = 64

func (s *Store) enqueue(tx *bolt.Tx, st *txState, entries []Entry) error {
	if err := checkEntries(entries); err != nil {
		return err
	}
	limit := s.cfg.OutboxLimit
	status := true
	for _, e := range entries {
		status = status && e.Kind == protocol.ReportNodeStatus
	}
	if status {
		limit += outboxReserve
	}
	if st.c.outCount+len(entries) > limit {
		s.refused.Add(1)
		s.metrics.outboxFull.Inc()
		return ErrOutboxFull
	}
	b := tx.Bucket(bucketOutbox)
	for _, e := range entries {
		st.c.outSeq++
		if e.Time == 0 {
			e.Time = time.Now().UnixMilli()
		}
		if err := b.Put(beUint(st.c.outSeq), encodeEntry(e)); err != nil {
			return err
		}
		if st.c.outFirst == 0 {
			st.c.outFirst = st.c.outSeq
		}
		st.c.outCount++
	}
	return nil
}

// ReadOutbox returns up to max entries after seq `after`, stopping before maxBytes of payload
// (but always returning at least one entry if there is one).
func (s *Store) ReadOutbox(after uint64, max int, maxBytes int) ([]Entry, error) {
	// What is returned may go on the wire, so it must not be replaced any more (see replacer).
	s.rep.mu.Lock()
	defer s.rep.mu.Unlock()
	var out []Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		size := 0
		for k, v := c.Seek(beUint(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			if len(out) > 0 && size+len(v) > maxBytes {
				break
			}
			seq := binary.BigEndian.Uint64(k)
			e, err := decodeEntry(seq, v)
			if err != nil {
				// Skipped, not returned as an error: the hub client would end its session at
				// every read, and the cloud link would stay down for good (sync included). The
				// entry goes when a later one is acknowledged.
				if seq > s.damagedSeq.Load() {
					s.damagedSeq.Store(seq)
					s.metrics.rejected.WithLabelValues("damaged-outbox-entry").Inc()
					s.log.Error().Err(err).Uint64("seq", seq).Msg("skipping a damaged outbox entry; its report is lost")
				}
				continue
			}
			out = append(out, e)
			size += len(v)
		}
		return nil
	})
	s.rep.noteRead(out)
	return out, err
}

// AckOutbox deletes every entry up to and including seq.
func (s *Store) AckOutbox(ctx context.Context, seq uint64) error {
	return s.do(ctx, func(tx *bolt.Tx, st *txState) error { return s.ackOutbox(tx, st, seq) })
}

func (s *Store) ackOutbox(tx *bolt.Tx, st *txState, seq uint64) error {
	b := tx.Bucket(bucketOutbox)
	n, err := boltkeys.DeleteThrough(b, seq)
	st.c.outCount -= n
	if err != nil {
		return err
	}
	st.c.outFirst = 0
	if k, _ := b.Cursor().First(); k != nil {
		st.c.outFirst = binary.BigEndian.Uint64(k)
	}
	// Each live replacement hint names an entry still in the outbox, so more hints than entries
	// means some are of acknowledged entries: drop those, or the map would keep every device
	// the node ever served. (If this transaction fails, a dropped hint costs an append instead
	// of a replacement.)
	if len(s.rep.latest) > st.c.outCount {
		for k, hint := range s.rep.latest {
			if hint <= seq {
				delete(s.rep.latest, k)
			}
		}
	}
	return nil
}

// OutboxFull reports whether the outbox is at its limit, and how many reports it has refused
// since the store was opened (a caller watching for refusals compares the count over time).
func (s *Store) OutboxFull() (full bool, refused int64) {
	s.mu.Lock()
	full = s.outCount >= s.cfg.OutboxLimit
	s.mu.Unlock()
	return full, s.refused.Load()
}

// OutboxDepth returns how many reports wait and the time the oldest was recorded (zero if none).
func (s *Store) OutboxDepth() (int, time.Time) {
	s.mu.Lock()
	n, first := s.outCount, s.outFirst
	s.mu.Unlock()
	if n == 0 {
		return 0, time.Time{}
	}
	var t time.Time
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketOutbox).Get(beUint(first)); v != nil {
			if e, err := decodeEntry(first, v); err == nil {
				t = time.UnixMilli(e.Time)
			}
		}
		return nil
	})
	return n, t
}
