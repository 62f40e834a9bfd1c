package edgestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// Record is one stored object.
type Record struct {
	Key      resource.Key
	StoreKey string
	Rev      uint64 // cloud revision of the message that wrote it: the per-object version
	LocalRev uint64 // edge revision of the write
	CloudRV  string // the object's resourceVersion in the cloud
	Meta     Meta
	// Object is the JSON served on the edge, with metadata.resourceVersion set to LocalRev so
	// that the metaserver's versions are one consistent sequence.
	Object []byte
}

// Meta is what selectors read, kept beside the object so lists need not parse it.
type Meta struct {
	Labels   map[string]string `json:"l,omitempty"`
	NodeName string            `json:"n,omitempty"`
	// EdgeStatus: the object's status was written by the edge (SetStatus) over the cloud's
	// version CloudRV.
	EdgeStatus bool `json:"s,omitempty"`
}

// A record is uvarint(rev) uvarint(localRev) string(cloudRV) bytes(meta JSON) then the object.

func encodeRecord(r *Record) []byte {
	meta, _ := json.Marshal(r.Meta)
	b := make([]byte, 0, 32+len(r.CloudRV)+len(meta)+len(r.Object))
	b = binary.AppendUvarint(b, r.Rev)
	b = binary.AppendUvarint(b, r.LocalRev)
	b = binary.AppendUvarint(b, uint64(len(r.CloudRV)))
	b = append(b, r.CloudRV...)
	b = binary.AppendUvarint(b, uint64(len(meta)))
	b = append(b, meta...)
	return append(b, r.Object...)
}

// decodeRecord copies out of v (bbolt memory is valid only inside its transaction).
func decodeRecord(reg *resource.Registry, storeKey string, v []byte) (*Record, error) {
	r := &Record{StoreKey: storeKey}
	var n int
	fail := func() (*Record, error) { return nil, fmt.Errorf("edgestore: record %s is damaged", storeKey) }
	if r.Rev, n = binary.Uvarint(v); n <= 0 {
		return fail()
	}
	v = v[n:]
	if r.LocalRev, n = binary.Uvarint(v); n <= 0 {
		return fail()
	}
	v = v[n:]
	l, n := binary.Uvarint(v)
	if n <= 0 || l > uint64(len(v)-n) {
		return fail()
	}
	r.CloudRV = string(v[n : n+int(l)])
	v = v[n+int(l):]
	l, n = binary.Uvarint(v)
	if n <= 0 || l > uint64(len(v)-n) {
		return fail()
	}
	if err := json.Unmarshal(v[n:n+int(l)], &r.Meta); err != nil {
		return fail()
	}
	r.Object = append([]byte(nil), v[n+int(l):]...)
	k, _, err := reg.ParseStoreKey(storeKey)
	if err != nil {
		return fail()
	}
	r.Key = k
	return r, nil
}

// Apply queues data messages from the hub; done is called once they are committed (or the
// commit failed). Messages are applied in order, after everything queued before. Once an Apply
// has failed, every later one fails with ErrApplyBroken until BeginSession.
func (s *Store) Apply(ctx context.Context, msgs []protocol.Message, done func(error)) error {
	return s.submit(ctx, &op{apply: true, fn: func(tx *bolt.Tx, st *txState) error {
		if s.applyFailed != nil {
			return fmt.Errorf("%w (%v)", ErrApplyBroken, s.applyFailed)
		}
		for _, m := range msgs {
			if err := s.applyOne(tx, st, m); err != nil {
				s.applyFailed = err
				return err
			}
		}
		return nil
	}, done: done})
}

// BeginSession tells the store a new hub session started, for cluster. A reset left half done
// by the previous session is abandoned (the new session will redo it).
func (s *Store) BeginSession(ctx context.Context, cluster string) error {
	return s.do(ctx, func(*bolt.Tx, *txState) error {
		s.resetting, s.resetSeen, s.sessionCluster, s.applyFailed = false, nil, cluster, nil
		return nil
	})
}

func (s *Store) applyOne(tx *bolt.Tx, st *txState, m protocol.Message) error {
	switch m := m.(type) {
	case *protocol.Upsert:
		return s.applyUpsert(tx, st, m)
	case *protocol.Delete:
		return s.applyDelete(tx, st, m.Key, m.Rev)
	case *protocol.Progress:
		if m.Through > st.c.cursor {
			st.c.cursor = m.Through
		}
		for k, rev := range s.deletedAhead {
			if rev <= st.c.cursor {
				delete(s.deletedAhead, k)
			}
		}
	case *protocol.ResetBegin:
		s.resetting, s.resetSeen = true, map[string]bool{}
	case *protocol.ResetEnd:
		if !s.resetting {
			s.metrics.rejected.WithLabelValues("reset-end-without-begin").Inc()
			return nil
		}
		if err := s.sweep(tx, st); err != nil {
			return err
		}
		s.resetting, s.resetSeen = false, nil
		st.c.cluster, st.c.cursor = s.sessionCluster, m.Through
		s.deletedAhead = nil // the reset brought everything through m.Through
	}
	return nil
}

func (s *Store) applyUpsert(tx *bolt.Tx, st *txState, m *protocol.Upsert) error {
	info, ok := s.reg.ByGroupResource(m.Key.Resource)
	if !ok || (info.Namespaced != (m.Key.Namespace != "")) || m.Key.Name == "" {
		s.metrics.rejected.WithLabelValues("bad-key").Inc()
		s.log.Warn().Str("key", m.Key.String()).Msg("ignoring an upsert with an invalid key")
		return nil
	}
	sk := resource.StoreKey(m.Key)
	b := tx.Bucket(bucketObjects)
	var old *Record
	if v := b.Get([]byte(sk)); v != nil {
		var err error
		if old, err = decodeRecord(s.reg, sk, v); err != nil {
			return err
		}
		if old.Rev > m.Rev && !s.resetting {
			s.metrics.stale.Inc()
			return nil // an older version never overwrites a newer one
		}
	}
	next := st.c.localRev + 1
	obj, meta, cloudRV, err := prepare(m.Object, m.Key, info, next)
	if err != nil {
		s.metrics.rejected.WithLabelValues("bad-object").Inc()
		s.log.Warn().Err(err).Str("key", sk).Msg("ignoring an upsert whose object is not valid")
		return nil
	}
	if old != nil && old.CloudRV == cloudRV && cloudRV != "" {
		// The hub sends an unchanged object again when something it depends on changed (a
		// Pod's new label re-sends its ConfigMaps) and in a reset. Stored as it was, it keeps
		// its local version, so watchers see no event for it; only the stream's revision moves.
		// A status the edge wrote over this very version is kept: it is newer than the cloud's.
		same := old.Meta.EdgeStatus
		if !same {
			b, _, _, err := prepare(m.Object, m.Key, info, old.LocalRev)
			same = err == nil && bytes.Equal(b, old.Object)
		}
		if same {
			if s.resetting {
				s.resetSeen[sk] = true
			}
			if old.Rev == m.Rev {
				return nil
			}
			kept := *old
			kept.Rev = m.Rev
			return b.Put([]byte(sk), encodeRecord(&kept))
		}
	}
	st.c.localRev = next
	rec := &Record{Key: m.Key, StoreKey: sk, Rev: m.Rev, LocalRev: next, CloudRV: cloudRV, Meta: meta, Object: obj}
	if err := b.Put([]byte(sk), encodeRecord(rec)); err != nil {
		return err
	}
	if s.resetting {
		s.resetSeen[sk] = true
	}
	st.changes = append(st.changes, Change{Key: sk, Rev: next, Old: old, New: rec})
	return nil
}

func (s *Store) applyDelete(tx *bolt.Tx, st *txState, key resource.Key, rev uint64) error {
	sk := resource.StoreKey(key)
	b := tx.Bucket(bucketObjects)
	v := b.Get([]byte(sk))
	if v == nil {
		// Remembered all the same: the hub deletes what it marked whether or not the edge
		// had it, and the answer to a write the metaserver forwarded may come after this.
		s.noteDeletedAhead(st, sk, rev)
		return nil
	}
	old, err := decodeRecord(s.reg, sk, v)
	if err != nil {
		return err
	}
	if old.Rev > rev && !s.resetting {
		s.metrics.stale.Inc()
		return nil
	}
	if err := b.Delete([]byte(sk)); err != nil {
		return err
	}
	s.noteDeletedAhead(st, sk, rev)
	st.c.localRev++
	st.changes = append(st.changes, Change{Key: sk, Rev: st.c.localRev, Old: old})
	return nil
}

// noteDeletedAhead remembers a delete beyond the cursor for ApplyLocal, until the cursor
// passes it.
func (s *Store) noteDeletedAhead(st *txState, sk string, rev uint64) {
	if rev <= st.c.cursor || s.resetting {
		return
	}
	if s.deletedAhead == nil {
		s.deletedAhead = map[string]uint64{}
	}
	s.deletedAhead[sk] = max(s.deletedAhead[sk], rev)
}

// sweep deletes every key the reset did not name.
func (s *Store) sweep(tx *bolt.Tx, st *txState) error {
	var gone []string
	c := tx.Bucket(bucketObjects).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if !s.resetSeen[string(k)] {
			gone = append(gone, string(k))
		}
	}
	for _, sk := range gone {
		k, _, err := s.reg.ParseStoreKey(sk)
		if err != nil {
			// Not a served kind (written by a newer version?): drop it all the same.
			tx.Bucket(bucketObjects).Delete([]byte(sk))
			continue
		}
		if err := s.applyDelete(tx, st, k, ^uint64(0)); err != nil {
			return err
		}
	}
	return nil
}

// prepare checks an object from the cloud and stamps it with the edge's revision.
func prepare(raw []byte, key resource.Key, info resource.Info, localRev uint64) ([]byte, Meta, string, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil || m == nil {
		return nil, Meta{}, "", fmt.Errorf("not a JSON object")
	}
	md, _ := m["metadata"].(map[string]any)
	if md == nil {
		return nil, Meta{}, "", fmt.Errorf("no metadata")
	}
	if name, _ := md["name"].(string); name != key.Name {
		return nil, Meta{}, "", fmt.Errorf("metadata.name %q does not match the key", name)
	}
	if ns, _ := md["namespace"].(string); info.Namespaced && ns != key.Namespace {
		return nil, Meta{}, "", fmt.Errorf("metadata.namespace %q does not match the key", ns)
	}
	var meta Meta
	if labels, ok := md["labels"].(map[string]any); ok {
		meta.Labels = make(map[string]string, len(labels))
		for k, v := range labels {
			if s, ok := v.(string); ok {
				meta.Labels[k] = s
			}
		}
	}
	if spec, ok := m["spec"].(map[string]any); ok {
		meta.NodeName, _ = spec["nodeName"].(string)
	}
	cloudRV, _ := md["resourceVersion"].(string)
	md["resourceVersion"] = strconv.FormatUint(localRev, 10)
	out, err := json.Marshal(m)
	return out, meta, cloudRV, err
}

// Get returns the record at storeKey, or nil.
func (s *Store) Get(storeKey string) (*Record, error) {
	var rec *Record
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketObjects).Get([]byte(storeKey))
		if v == nil {
			return nil
		}
		var err error
		rec, err = decodeRecord(s.reg, storeKey, v)
		return err
	})
	return rec, err
}

// List returns the records whose store key starts with prefix, in key order, and the local
// revision the list is consistent at.
func (s *Store) List(prefix string) ([]*Record, uint64, error) {
	var out []*Record
	var rev uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		rev = getUint(tx.Bucket(bucketMeta), metaLocalRev)
		c := tx.Bucket(bucketObjects).Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
			rec, err := decodeRecord(s.reg, string(k), v)
			if err != nil {
				return err
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, rev, err
}

// Keys returns every stored key with its per-object version, for tests and checks.
func (s *Store) Keys() (map[string]uint64, error) {
	out := map[string]uint64{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketObjects).ForEach(func(k, v []byte) error {
			rev, _ := binary.Uvarint(v)
			out[string(k)] = rev
			return nil
		})
	})
	return out, err
}
