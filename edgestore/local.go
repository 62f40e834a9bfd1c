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
// the truth.
func (s *Store) ApplyLocal(ctx context.Context, key resource.Key, rev uint64, obj []byte) (*Record, error) {
	sk := resource.StoreKey(key)
	err := s.do(ctx, func(tx *bolt.Tx, st *txState) error {
		if s.resetting {
			return nil
		}
		if v := tx.Bucket(bucketObjects).Get([]byte(sk)); v != nil {
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
