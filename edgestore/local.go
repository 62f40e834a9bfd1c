package edgestore

import (
	"context"

	bolt "go.etcd.io/bbolt"

	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// Writes the edge makes itself, from the cloud's answer to a write its metaserver forwarded.
//
// The cloud does not send some status-only changes back down (a Device's status: the edge
// reported it; see view.Routed), and the others arrive only after the hub's round trip, so
// without these a client that wrote through the metaserver might not read its own write at once,
// or, for a Device's status, until the Device next changed in the cloud. The cloud's answer carries the
// revision of the write, which is the per-object version an Upsert for that write would carry:
// applying it here follows exactly the rules of Apply (an older version never overwrites a
// newer one), so a later message from the hub for the same object wins or is skipped as usual.
// Neither moves the cursor: the view is complete through the cursor regardless.

// ApplyLocal stores obj, the cloud's object at cloud revision rev, as if the hub had sent it.
// It returns the record as stored afterwards: the new one, or the newer one it lost to (nil if
// the object is not in the store). During a reset it stores nothing, since the reset will bring
// the truth. Nor does it bring back an object the store does not hold when that could be the
// hub's later delete: the store has every change of its view through the cursor, so an object
// missing at a revision up to the cursor was deleted since (or is not the node's to see), and
// one deleted beyond the cursor is remembered until the cursor passes it.
func (s *Store) ApplyLocal(ctx context.Context, key resource.Key, rev uint64, obj []byte) (*Record, error) {
	sk := resource.StoreKey(key)
	err := s.do(ctx, func(tx *bolt.Tx, st *txState) error {
		if s.resetting {
			return nil
		}
		v := tx.Bucket(bucketObjects).Get([]byte(sk))
		if v == nil && (rev <= st.c.cursor || s.deletedAhead[sk] > rev) {
			return nil // deleted after this write, or outside the view
		}
		if v != nil {
			old, err := decodeRecord(s.reg, sk, v)
			if err != nil {
				return err
			}
			if old.Rev >= rev {
				return nil // the hub delivered this write, or a newer one, first
			}
		}
		return s.applyUpsert(tx, st, &protocol.Upsert{Key: key, Rev: rev, Object: obj})
	})
	if err != nil {
		return nil, err
	}
	return s.Get(sk)
}

// DeleteLocal removes the object at key if the stored record was written at cloud revision rev
// or earlier: the cloud deleted it, and nothing newer has arrived since the client's request
// was forwarded. The hub's Delete for it, when it comes, finds nothing to do.
func (s *Store) DeleteLocal(ctx context.Context, key resource.Key, rev uint64) error {
	return s.do(ctx, func(tx *bolt.Tx, st *txState) error {
		if s.resetting {
			return nil
		}
		return s.applyDelete(tx, st, key, rev)
	})
}

// StatusWrite is the edge's own status for one object (see SetStatus).
type StatusWrite struct {
	StoreKey string
	LocalRev uint64 // the local revision of the record Object was made from
	Object   []byte // that record's object with its status replaced
}

// SetStatus stores objects whose status the edge knows better than its copy of the cloud's:
// a Device's twins and state, which the edge reports and the cloud does not send back down.
// Each is stored only if its record is still at the local revision it was made from (a newer
// one, from the cloud or the edge, is left alone; the caller hears of it through its
// subscription), and never during a reset. The record keeps its cloud version: a newer one from
// the hub replaces it as usual, and the same one again leaves it (see applyUpsert). Every write
// is one Change with StatusOnly set, and they share one commit. It returns how many it stored.
func (s *Store) SetStatus(ctx context.Context, writes []StatusWrite) (int, error) {
	stored := 0
	err := s.do(ctx, func(tx *bolt.Tx, st *txState) error {
		stored = 0
		if s.resetting {
			return nil
		}
		b := tx.Bucket(bucketObjects)
		for _, w := range writes {
			v := b.Get([]byte(w.StoreKey))
			if v == nil {
				continue
			}
			old, err := decodeRecord(s.reg, w.StoreKey, v)
			if err != nil {
				return err
			}
			info, ok := s.reg.ByGroupResource(old.Key.Resource)
			if !ok || old.LocalRev != w.LocalRev {
				continue
			}
			next := st.c.localRev + 1
			obj, meta, _, err := prepare(w.Object, old.Key, info, next)
			if err != nil {
				s.log.Warn().Err(err).Str("key", w.StoreKey).Msg("not storing a status the edge made: the object is not valid")
				continue
			}
			meta.EdgeStatus = true
			rec := &Record{Key: old.Key, StoreKey: w.StoreKey, Rev: old.Rev, LocalRev: next, CloudRV: old.CloudRV, Meta: meta, Object: obj}
			if err := b.Put([]byte(w.StoreKey), encodeRecord(rec)); err != nil {
				return err
			}
			st.c.localRev = next
			st.changes = append(st.changes, Change{Key: w.StoreKey, Rev: next, Old: old, New: rec, StatusOnly: true})
			stored++
		}
		return nil
	})
	return stored, err
}
