package index

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
)

const table = "objects"

// Index names in the memdb schema.
const (
	idxID   = "id"   // store key; also answers prefix queries (one kind, one namespace)
	idxNode = "node" // "<resource>/<node>" for objects bound to a node
	idxRefs = "refs" // the store keys an object references
)

func schema() *memdb.DBSchema {
	indexes := map[string]*memdb.IndexSchema{
		idxID:   {Name: idxID, Unique: true, Indexer: &memdb.StringFieldIndex{Field: "StoreKey"}},
		idxNode: {Name: idxNode, AllowMissing: true, Indexer: nodeIndexer{}},
		idxRefs: {Name: idxRefs, AllowMissing: true, Indexer: refsIndexer{}},
	}
	// Node groups and range-nodegroup Services (topology.go).
	for name, ix := range topologyIndexes() {
		indexes[name] = ix
	}
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		table: {Name: table, Indexes: indexes},
	}}
}

// Update is one change handed to subscribers.
type Update struct {
	Event store.Event
	// Old and New are the object before and after the change (nil when absent). For historical
	// updates they are decoded from the event, not taken from the index.
	Old, New *Object
	// Snap is the index right after this change (for historical updates: the index as first
	// listed, which already includes it).
	Snap Snapshot
	// Historical marks a change from before the index started, replayed only so that
	// subscribers can rebuild their memory of recent changes; the index did not apply it.
	Historical bool
}

// Rev is the revision of the change.
func (u Update) Rev() int64 { return u.Event.Rev() }

// Config configures the index.
type Config struct {
	// Preload is how many revisions of history before the start are replayed to subscribers.
	Preload int64
	// HoldBehind is how many revisions the index may lag the store before it holds the store's
	// compaction until it has caught up (see holdWhileBehind), checked every HoldCheck. Zero
	// means the defaults: 1,000 revisions, every 100 ms.
	HoldBehind int64
	HoldCheck  time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{Preload: 100_000} }

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	if c.Preload < 0 || c.HoldBehind < 0 || c.HoldCheck < 0 {
		return fmt.Errorf("index: preload, hold-behind and hold-check must not be negative, got %d, %d, %s", c.Preload, c.HoldBehind, c.HoldCheck)
	}
	return nil
}

// Index is the in-memory, indexed copy of every served object.
type Index struct {
	cfg     Config
	backend store.Backend
	reg     *resource.Registry
	log     zerolog.Logger
	db      *memdb.MemDB // written only by Run

	subs     []func(Update) // set before Run, read by Run only
	progress []func(int64)  // set before Run, read by Run only

	cur atomic.Pointer[Snapshot] // the state at the last applied revision; read without a lock

	mu      sync.Mutex    // guards the fields below
	changed chan struct{} // closed and replaced whenever cur moves (after it has moved)
	ready   chan struct{} // closed once the first list is applied
	current chan struct{} // closed once the history replay is over and updates are live
	history int64         // replayed history starts after this revision; set before ready
	listRev int64         // revision of the first list; set before ready

	applied  prometheus.Counter
	rejected prometheus.Counter
	objects  prometheus.Gauge
}

// New returns an index over backend. Call Subscribe before Run.
func New(cfg Config, backend store.Backend, reg *resource.Registry, log zerolog.Logger, metrics prometheus.Registerer) (*Index, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		return nil, err
	}
	ix := &Index{
		cfg: cfg, backend: backend, reg: reg, db: db,
		log:     log.With().Str("component", "index").Logger(),
		changed: make(chan struct{}),
		ready:   make(chan struct{}),
		current: make(chan struct{}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_cloud_index_events_total", Help: "Store changes applied to the in-memory index.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_cloud_index_undecodable_total", Help: "Stored values the index could not decode (a damaged store or a foreign writer).",
		}),
		objects: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_cloud_index_objects", Help: "Objects in the in-memory index.",
		}),
	}
	ix.cur.Store(&Snapshot{txn: db.Txn(false)})
	if metrics != nil {
		metrics.MustRegister(ix.applied, ix.rejected, ix.objects)
	}
	return ix, nil
}

// Subscribe adds fn to the subscribers. It must be called before Run.
func (ix *Index) Subscribe(fn func(Update)) { ix.subs = append(ix.subs, fn) }

// OnProgress adds fn, called on the index goroutine with the revision of every live change that
// is not to a served object (join tokens, uploads): subscribers that track how far they have
// processed the store learn that nothing of theirs happened at that revision. It must be called
// before Run.
func (ix *Index) OnProgress(fn func(rev int64)) { ix.progress = append(ix.progress, fn) }

// Ready is closed once the index holds the store's state.
func (ix *Index) Ready() <-chan struct{} { return ix.ready }

// HistoryFrom is the revision after which subscribers are handed every change (historical,
// then live). Valid once Ready is closed.
func (ix *Index) HistoryFrom() int64 {
	<-ix.ready
	return ix.history
}

// ListRev is the revision of the list the index started from: changes up to it are either in
// the list or historical. Valid once Ready is closed.
func (ix *Index) ListRev() int64 {
	<-ix.ready
	return ix.listRev
}

// Current is closed once subscribers have been handed the whole history replay and every
// update from then on is live.
func (ix *Index) Current() <-chan struct{} { return ix.current }

// Snapshot returns the current state. It is immutable and safe to keep and share.
func (ix *Index) Snapshot() Snapshot {
	return *ix.cur.Load()
}

// WaitFor blocks until the index has applied revision rev, so that a writer reads its own write.
func (ix *Index) WaitFor(ctx context.Context, rev int64) (Snapshot, error) {
	for {
		ix.mu.Lock()
		ch := ix.changed
		ix.mu.Unlock()
		snap := ix.Snapshot() // taken after ch: a publish after this closes ch
		if snap.Rev >= rev {
			return snap, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Snapshot{}, ctx.Err()
		}
	}
}

// compactionHolder is a backend whose compaction can be held off (boltstore).
type compactionHolder interface {
	HoldCompaction() (release func())
}

// Run lists the backend, replays recent history to subscribers, then follows the backend's
// changes until ctx ends. It returns nil when ctx ends and an error if the backend fails in a
// way that cannot be resumed.
func (ix *Index) Run(ctx context.Context) error {
	start := time.Now()
	kvs, rev, err := ix.backend.List(ctx, "/", "", 0)
	if err != nil {
		return fmt.Errorf("index: initial list: %w", err)
	}
	txn := ix.db.Txn(true)
	n := 0
	for _, kv := range kvs {
		o, err := Decode(ix.reg, kv)
		if err != nil {
			ix.skip(kv.Key, err)
			continue
		}
		if err := txn.Insert(table, o); err != nil {
			txn.Abort()
			return err
		}
		n++
	}
	txn.Commit()
	ix.objects.Set(float64(n))
	from := rev
	if h, ok := ix.backend.(compactionHolder); ok && ix.cfg.Preload > 0 {
		// The replay starts near the edge of the store's history; the writes of a busy start
		// must not compact it away under the replay (Run could not go on). Held until the
		// replay is over. A store compacted by others (etcd) cannot be held.
		release := h.HoldCompaction()
		defer release()
		go func() {
			select {
			case <-ix.current:
			case <-ctx.Done():
			}
			release()
		}()
	}
	if ix.cfg.Preload > 0 {
		compacted, err := ix.backend.Compacted(ctx)
		if err != nil {
			return err
		}
		from = max(compacted, rev-ix.cfg.Preload)
	}
	ix.history, ix.listRev = from, rev
	ix.publish(rev)
	close(ix.ready)
	ix.log.Info().Int("objects", n).Int64("rev", rev).Int64("history_from", from).Dur("took", time.Since(start)).Msg("index loaded")
	listRev := rev
	if from >= listRev {
		close(ix.current)
	}
	if h, ok := ix.backend.(compactionHolder); ok {
		lag, every := ix.cfg.HoldBehind, ix.cfg.HoldCheck
		if lag == 0 {
			lag = 1000
		}
		if every == 0 {
			every = 100 * time.Millisecond
		}
		go ix.holdWhileBehind(ctx, h, every, lag)
	}
	for {
		ch, err := ix.backend.Watch(ctx, from)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("index: watch from %d: %w", from, err)
		}
		from, err = ix.follow(ctx, ch, from, listRev)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, store.ErrSlowWatcher):
			ix.log.Warn().Int64("rev", from).Msg("index fell behind the store; re-watching")
		default:
			return fmt.Errorf("index: watch: %w", err)
		}
	}
}

// holdWhileBehind holds the store's compaction while the index is more than lag revisions
// behind it (and lets go once it is within a tenth of that), checking every interval. A
// subscriber slow for a moment (the hub fanning a burst out) stops the index goroutine; the
// store then drops its watch once WatchBuffer events wait, and the index watches again from the
// last revision it applied, which must still be in the history. The store's log grows meanwhile
// and is compacted once the index has caught up.
func (ix *Index) holdWhileBehind(ctx context.Context, h compactionHolder, interval time.Duration, lag int64) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var release func()
	defer func() {
		if release != nil {
			release()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		head, err := ix.backend.Rev(ctx)
		if err != nil {
			continue
		}
		behind := head - ix.Snapshot().Rev
		switch {
		case release == nil && behind > lag:
			release = h.HoldCompaction()
			ix.log.Warn().Int64("behind", behind).Msg("the index is behind the store; its compaction is held until the index catches up")
		case release != nil && behind <= lag/10:
			release()
			release = nil
			ix.log.Info().Msg("the index caught up with the store; compaction goes on")
		}
	}
}

// follow applies watch responses until the channel ends, returning the last revision handled.
func (ix *Index) follow(ctx context.Context, ch <-chan store.WatchResponse, from, listRev int64) (int64, error) {
	for resp := range ch {
		if resp.Err != nil {
			return from, resp.Err
		}
		for _, ev := range resp.Events {
			if ev.Rev() <= listRev {
				ix.replay(ev)
				if ev.Rev() == listRev {
					close(ix.current)
				}
			} else {
				ix.apply(ev)
			}
			from = ev.Rev()
		}
	}
	return from, ctx.Err()
}

func (ix *Index) replay(ev store.Event) {
	u := Update{Event: ev, Snap: ix.Snapshot(), Historical: true}
	u.Old, u.New = ix.decodeEvent(ev)
	if u.Old == nil && u.New == nil {
		return
	}
	for _, fn := range ix.subs {
		fn(u)
	}
}

func (ix *Index) decodeEvent(ev store.Event) (old, new *Object) {
	if ev.Prev != nil {
		if o, err := Decode(ix.reg, *ev.Prev); err == nil {
			old = o
		}
	}
	if ev.Type == store.Put {
		o, err := Decode(ix.reg, ev.KV)
		if err != nil {
			ix.skip(ev.KV.Key, err)
		} else {
			new = o
		}
	}
	return old, new
}

func (ix *Index) apply(ev store.Event) {
	old, new := ix.decodeEvent(ev)
	txn := ix.db.Txn(true)
	var err error
	if new != nil {
		err = txn.Insert(table, new)
	} else if raw, _ := txn.First(table, idxID, ev.KV.Key); raw != nil {
		err = txn.Delete(table, raw)
	}
	if err != nil {
		// memdb fails only on schema misuse; the store is fine, so keep going and say so.
		txn.Abort()
		ix.log.Error().Err(err).Str("key", ev.KV.Key).Msg("index update failed")
	} else {
		txn.Commit()
	}
	ix.applied.Inc()
	switch {
	case old == nil && new != nil:
		ix.objects.Inc()
	case old != nil && new == nil:
		ix.objects.Dec()
	}
	snap := ix.publish(ev.Rev())
	if old == nil && new == nil {
		// Not a served kind (tokens, uploads): no update, but the revision is behind us.
		for _, fn := range ix.progress {
			fn(ev.Rev())
		}
		return
	}
	u := Update{Event: ev, Old: old, New: new, Snap: snap}
	for _, fn := range ix.subs {
		fn(u)
	}
}

func (ix *Index) publish(rev int64) Snapshot {
	snap := Snapshot{txn: ix.db.Txn(false), Rev: rev}
	ix.cur.Store(&snap)
	ix.mu.Lock()
	close(ix.changed)
	ix.changed = make(chan struct{})
	ix.mu.Unlock()
	return snap
}

func (ix *Index) skip(key string, err error) {
	if _, _, perr := ix.reg.ParseStoreKey(key); perr != nil {
		return // a key of the cloud's own (tokens): not an object, not an error
	}
	ix.rejected.Inc()
	ix.log.Error().Err(err).Str("key", key).Msg("stored value is not a valid object; not indexed")
}

// Snapshot is the index at one revision.
type Snapshot struct {
	txn *memdb.Txn
	Rev int64
}

// Get returns the object at storeKey, or nil.
func (s Snapshot) Get(storeKey string) *Object {
	raw, err := s.txn.First(table, idxID, storeKey)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*Object)
}

// List returns the objects whose store key starts with prefix, in key order, starting after
// the key `after` (exclusive, "" for the start), at most limit of them (0 for all).
func (s Snapshot) List(prefix, after string, limit int) []*Object {
	var out []*Object
	var it memdb.ResultIterator
	var err error
	if after != "" && after >= prefix {
		it, err = s.txn.LowerBound(table, idxID, after)
	} else {
		it, err = s.txn.Get(table, idxID+"_prefix", prefix)
	}
	if err != nil {
		return nil
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		o := raw.(*Object)
		if len(o.StoreKey) < len(prefix) || o.StoreKey[:len(prefix)] != prefix {
			break
		}
		if o.StoreKey == after {
			continue
		}
		if limit > 0 && len(out) == limit {
			break
		}
		out = append(out, o)
	}
	return out
}

// OnNode returns the objects of a kind bound to node (Pods or Devices with that spec.nodeName,
// the Node itself).
func (s Snapshot) OnNode(groupResource, node string) []*Object {
	return s.collect(idxNode, groupResource+"/"+node)
}

// Referencing returns every object that references storeKey.
func (s Snapshot) Referencing(storeKey string) []*Object {
	return s.collect(idxRefs, storeKey)
}

func (s Snapshot) collect(index, value string) []*Object {
	it, err := s.txn.Get(table, index, value)
	if err != nil {
		return nil
	}
	var out []*Object
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*Object))
	}
	return out
}

// nodeIndexer indexes objects bound to a node by "<resource>/<node>".
type nodeIndexer struct{}

func (nodeIndexer) FromObject(obj any) (bool, []byte, error) {
	v := obj.(*Object).nodeIndex()
	if v == "" {
		return false, nil, nil
	}
	return true, []byte(v + "\x00"), nil
}

func (nodeIndexer) FromArgs(args ...any) ([]byte, error) { return stringArg(args) }

// refsIndexer indexes objects by each store key they reference.
type refsIndexer struct{}

func (refsIndexer) FromObject(obj any) (bool, [][]byte, error) {
	refs := obj.(*Object).Refs
	if len(refs) == 0 {
		return false, nil, nil
	}
	out := make([][]byte, len(refs))
	for i, r := range refs {
		out[i] = []byte(r + "\x00")
	}
	return true, out, nil
}

func (refsIndexer) FromArgs(args ...any) ([]byte, error) { return stringArg(args) }

func stringArg(args []any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("index: want one argument, got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("index: want a string argument, got %T", args[0])
	}
	return []byte(s + "\x00"), nil
}
