package boltstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/tetherhub/tether/internal/boltkeys"
	"github.com/tetherhub/tether/internal/boltsafe"
	"github.com/tetherhub/tether/store"
)

// Bucket names and meta keys. Changing them is a data-format change.
var (
	bucketKV   = []byte("kv")   // key → record (createRev, modRev, value)
	bucketLog  = []byte("log")  // big-endian revision → event, so cursor order is revision order
	bucketMeta = []byte("meta") // the keys below

	metaRev       = []byte("rev")        // current revision
	metaCompacted = []byte("compacted")  // log entries at or below this revision are gone
	metaCluster   = []byte("cluster-id") // random, made when the file is created
)

// Config configures the embedded store.
type Config struct {
	// Path of the bbolt file.
	Path string
	// History is how many revisions of change log are kept for Watch. Older ones are compacted.
	History int64
	// OpenTimeout bounds the wait for the file lock, so a second process on the same data dir
	// fails at once with a clear error instead of hanging.
	OpenTimeout time.Duration
	// MaxBatch caps how many writes one commit may carry.
	MaxBatch int
	// WatchBuffer is how many undelivered events a watcher may have before it is dropped with
	// store.ErrSlowWatcher.
	WatchBuffer int
	// ReplaceClusterID, if the store's cluster ID is this one, gives it a new one at Open, as
	// after restoring it from a backup: edges' cursors then belong to another history, and each
	// gets a full reset. Naming the ID replaced makes it once only: a store whose ID is already
	// another (replaced at an earlier start) is left alone.
	ReplaceClusterID string
}

// DefaultConfig returns the defaults for a store at path.
func DefaultConfig(path string) Config {
	return Config{Path: path, History: 100_000, OpenTimeout: time.Second, MaxBatch: 1024, WatchBuffer: 200_000}
}

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("boltstore: path is empty")
	case c.History < 1:
		return fmt.Errorf("boltstore: history must be at least 1, got %d", c.History)
	case c.OpenTimeout <= 0:
		return fmt.Errorf("boltstore: open timeout must be positive, got %s", c.OpenTimeout)
	case c.MaxBatch < 1:
		return fmt.Errorf("boltstore: max batch must be at least 1, got %d", c.MaxBatch)
	case c.WatchBuffer < 1:
		return fmt.Errorf("boltstore: watch buffer must be at least 1, got %d", c.WatchBuffer)
	}
	return nil
}

// ErrLocked is returned by Open when another process holds the file.
var ErrLocked = errors.New("boltstore: store file is in use by another process")

type opKind uint8

const (
	opCreate opKind = iota + 1
	opUpdate
	opDelete
)

type op struct {
	kind  opKind
	key   string
	value []byte
	rev   int64 // expected ModRev for update/delete, 0 for any
	done  chan opResult
}

type opResult struct {
	rev  int64
	prev store.KV
	err  error
}

// Store is the embedded store. It is safe for concurrent use.
type Store struct {
	cfg     Config
	db      *bolt.DB
	log     zerolog.Logger
	metrics *metrics
	cluster string // set at Open

	ops     chan *op      // to the writer goroutine
	stop    chan struct{} // closed by Close
	stopped chan struct{} // closed when the writer has exited

	// compactMu is held by a compaction from its decision to its end, and by HoldCompaction
	// while it counts a hold, so a hold never starts in the middle of a compaction.
	compactMu sync.Mutex
	holds     int // guarded by compactMu: HoldCompaction calls not yet released

	mu        sync.Mutex    // guards the fields below and the watcher set
	rev       int64         // owned by the writer; read under mu
	revMoved  chan struct{} // closed and replaced whenever rev moves or the store closes
	compacted int64
	watchers  map[*watcher]struct{}
	closed    bool
}

// Open opens (creating if needed) the store at cfg.Path and starts its writer.
func Open(cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	db, err := boltsafe.Open(cfg.Path, &bolt.Options{Timeout: cfg.OpenTimeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s (is another tether-cloud running on this data dir?)", ErrLocked, cfg.Path)
		}
		return nil, fmt.Errorf("boltstore: open %s: %w", cfg.Path, err)
	}
	s := &Store{
		cfg:      cfg,
		db:       db,
		log:      log.With().Str("component", "store").Logger(),
		ops:      make(chan *op, cfg.MaxBatch*4),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
		watchers: map[*watcher]struct{}{},
		revMoved: make(chan struct{}),
	}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	s.metrics = newMetrics(reg, s)
	go s.writer()
	return s, nil
}

func (s *Store) init() error {
	return boltsafe.Update(s.db, func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketKV, bucketLog, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		id := meta.Get(metaCluster)
		replace := id != nil && s.cfg.ReplaceClusterID != "" && string(id) == s.cfg.ReplaceClusterID
		if id != nil && !replace {
			s.cluster = string(id)
			if s.cfg.ReplaceClusterID != "" {
				s.log.Info().Str("cluster", s.cluster).Str("replace", s.cfg.ReplaceClusterID).Msg("the store's cluster ID is not the one to replace; kept")
			}
		} else {
			var b [16]byte
			if _, err := rand.Read(b[:]); err != nil {
				return err
			}
			s.cluster = hex.EncodeToString(b[:])
			if err := meta.Put(metaCluster, []byte(s.cluster)); err != nil {
				return err
			}
			if replace {
				s.log.Warn().Str("was", string(id)).Str("cluster", s.cluster).Msg("cluster ID replaced: every edge gets a full reset")
			}
		}
		s.rev = getInt(meta, metaRev)
		s.compacted = getInt(meta, metaCompacted)
		return nil
	})
}

// ClusterID implements store.Backend.
func (s *Store) ClusterID() string { return s.cluster }

// Rev implements store.Backend.
func (s *Store) Rev(context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, store.ErrClosed
	}
	return s.rev, nil
}

// Compacted implements store.Backend.
func (s *Store) Compacted(context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, store.ErrClosed
	}
	return s.compacted, nil
}

// Get implements store.Backend.
func (s *Store) Get(_ context.Context, key string) (store.KV, error) {
	var kv store.KV
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketKV).Get([]byte(key))
		if v == nil {
			return store.ErrNotFound
		}
		kv = decodeRecord(key, v)
		return nil
	})
	return kv, err
}

// List implements store.Backend.
func (s *Store) List(_ context.Context, prefix, after string, limit int) ([]store.KV, int64, error) {
	return s.list(prefix, after, limit, decodeRecord)
}

// Keys implements store.Backend.
func (s *Store) Keys(_ context.Context, prefix, after string, limit int) ([]store.KV, int64, error) {
	return s.list(prefix, after, limit, decodeMeta)
}

func (s *Store) list(prefix, after string, limit int, decode func(string, []byte) store.KV) ([]store.KV, int64, error) {
	var out []store.KV
	var rev int64
	err := s.view(func(tx *bolt.Tx) error {
		rev = getInt(tx.Bucket(bucketMeta), metaRev)
		c := tx.Bucket(bucketKV).Cursor()
		start := prefix
		if after > start {
			start = after
		}
		k, v := c.Seek([]byte(start))
		if after != "" && string(k) == after {
			k, v = c.Next()
		}
		for ; k != nil && hasPrefix(k, prefix); k, v = c.Next() {
			if limit > 0 && len(out) == limit {
				break
			}
			out = append(out, decode(string(k), v))
		}
		return nil
	})
	return out, rev, err
}

func (s *Store) view(fn func(*bolt.Tx) error) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return store.ErrClosed
	}
	return s.db.View(fn)
}

// Create implements store.Backend.
func (s *Store) Create(ctx context.Context, key string, value []byte) (int64, error) {
	r := s.submit(ctx, &op{kind: opCreate, key: key, value: value})
	return r.rev, r.err
}

// Update implements store.Backend.
func (s *Store) Update(ctx context.Context, key string, value []byte, rev int64) (int64, error) {
	r := s.submit(ctx, &op{kind: opUpdate, key: key, value: value, rev: rev})
	return r.rev, r.err
}

// Delete implements store.Backend.
func (s *Store) Delete(ctx context.Context, key string, rev int64) (int64, store.KV, error) {
	r := s.submit(ctx, &op{kind: opDelete, key: key, rev: rev})
	return r.rev, r.prev, r.err
}

// submit hands o to the writer and waits for its commit. If ctx ends first the write may still
// commit, as with any remote store.
func (s *Store) submit(ctx context.Context, o *op) opResult {
	o.done = make(chan opResult, 1)
	// Checked first: a select would otherwise pick the queue, which has room after Close too,
	// as often as the stop.
	select {
	case <-s.stop:
		return opResult{err: store.ErrClosed}
	default:
	}
	select {
	case s.ops <- o:
	case <-s.stop:
		return opResult{err: store.ErrClosed}
	case <-ctx.Done():
		return opResult{err: ctx.Err()}
	}
	select {
	case r := <-o.done:
		return r
	case <-s.stopped:
		// The writer is gone: it answered o before leaving, or never took it (queued after
		// its last drain, when Close raced this call).
		select {
		case r := <-o.done:
			return r
		default:
			return opResult{err: store.ErrClosed}
		}
	case <-ctx.Done():
		return opResult{err: ctx.Err()}
	}
}

// writer is the only goroutine that writes the file. It takes every write waiting when it
// starts a transaction, so many concurrent writers share one fsync (STYLE §9).
func (s *Store) writer() {
	defer close(s.stopped)
	batch := make([]*op, 0, s.cfg.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case o := <-s.ops:
			batch = append(batch, o)
		case <-s.stop:
			s.failPending()
			return
		}
	fill:
		for len(batch) < s.cfg.MaxBatch {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		s.commit(batch)
		s.compact()
	}
}

func (s *Store) failPending() {
	for {
		select {
		case o := <-s.ops:
			o.done <- opResult{err: store.ErrClosed}
		default:
			return
		}
	}
}

func (s *Store) commit(batch []*op) {
	results := make([]opResult, len(batch))
	var events []store.Event
	start := time.Now()
	var rev int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		kv, lg, meta := tx.Bucket(bucketKV), tx.Bucket(bucketLog), tx.Bucket(bucketMeta)
		rev = getInt(meta, metaRev)
		events = events[:0]
		for i, o := range batch {
			ev, err := apply(kv, o, rev+1)
			if err != nil {
				results[i] = opResult{err: err}
				continue
			}
			rev++
			if err := lg.Put(beKey(rev), encodeEvent(ev)); err != nil {
				return err
			}
			results[i] = opResult{rev: rev}
			if ev.Prev != nil {
				results[i].prev = *ev.Prev
			}
			events = append(events, ev)
		}
		return putInt(meta, metaRev, rev)
	})
	s.metrics.commitSeconds.Observe(time.Since(start).Seconds())
	s.metrics.batchSize.Observe(float64(len(batch)))
	if err != nil {
		s.log.Error().Err(err).Int("ops", len(batch)).Msg("commit failed")
		for _, o := range batch {
			o.done <- opResult{err: fmt.Errorf("boltstore: commit: %w", err)}
		}
		return
	}
	s.mu.Lock()
	s.rev = rev
	close(s.revMoved)
	s.revMoved = make(chan struct{})
	if len(events) > 0 {
		for w := range s.watchers {
			w.push(events)
		}
	}
	s.mu.Unlock()
	for i, o := range batch {
		o.done <- results[i]
	}
}

// apply performs one write against the kv bucket at revision rev and returns its event.
func apply(kv *bolt.Bucket, o *op, rev int64) (store.Event, error) {
	k := []byte(o.key)
	cur := kv.Get(k)
	var prev *store.KV
	if cur != nil {
		p := decodeRecord(o.key, cur)
		prev = &p
	}
	switch o.kind {
	case opCreate:
		if prev != nil {
			return store.Event{}, store.ErrExists
		}
		next := store.KV{Key: o.key, Value: o.value, CreateRev: rev, ModRev: rev}
		return store.Event{Type: store.Put, KV: next}, kv.Put(k, encodeRecord(next))
	case opUpdate:
		if prev == nil {
			return store.Event{}, store.ErrNotFound
		}
		if o.rev != 0 && o.rev != prev.ModRev {
			return store.Event{}, store.ErrConflict
		}
		next := store.KV{Key: o.key, Value: o.value, CreateRev: prev.CreateRev, ModRev: rev}
		return store.Event{Type: store.Put, KV: next, Prev: prev}, kv.Put(k, encodeRecord(next))
	case opDelete:
		if prev == nil {
			return store.Event{}, store.ErrNotFound
		}
		if o.rev != 0 && o.rev != prev.ModRev {
			return store.Event{}, store.ErrConflict
		}
		return store.Event{Type: store.Delete, KV: store.KV{Key: o.key, ModRev: rev}, Prev: prev}, kv.Delete(k)
	}
	return store.Event{}, fmt.Errorf("boltstore: unknown op %d", o.kind)
}

// compact drops log entries older than the history window, a bounded number per transaction so
// that writers never wait long behind it.
func (s *Store) compact() {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	if s.holds > 0 {
		return
	}
	s.mu.Lock()
	target := s.rev - s.cfg.History
	from := s.compacted
	s.mu.Unlock()
	// Compact in steps of at least a tenth of the window, not on every commit.
	if target-from < max(1, s.cfg.History/10) {
		return
	}
	const perTx = 10_000
	if target-from > perTx {
		target = from + perTx
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if _, err := boltkeys.DeleteThrough(tx.Bucket(bucketLog), uint64(target)); err != nil {
			return err
		}
		return putInt(tx.Bucket(bucketMeta), metaCompacted, target)
	})
	if err != nil {
		s.log.Error().Err(err).Msg("compaction failed")
		return
	}
	s.mu.Lock()
	s.compacted = target
	s.mu.Unlock()
}

// HoldCompaction stops compaction until release is called, for a reader that must replay the
// history it found (the index at start, whose replay the writes of a busy start could otherwise
// overtake). Meanwhile the history grows past History; compaction catches up after. Once it
// returns, Compacted does not move until release; release may be called more than once.
func (s *Store) HoldCompaction() (release func()) {
	s.compactMu.Lock()
	s.holds++
	s.compactMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.compactMu.Lock()
			s.holds--
			s.compactMu.Unlock()
		})
	}
}

// Close stops the writer (failing queued writes with ErrClosed), ends every watch and closes
// the file.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.revMoved)
	s.revMoved = make(chan struct{})
	for w := range s.watchers {
		w.fail(store.ErrClosed)
	}
	s.watchers = map[*watcher]struct{}{}
	s.mu.Unlock()
	close(s.stop)
	<-s.stopped
	return s.db.Close()
}

// Path returns the file the store lives in.
func (s *Store) Path() string { return s.cfg.Path }

// Check runs bbolt's consistency check over the whole file and returns the first problem.
func (s *Store) Check() error {
	return s.db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() { // to the end: bbolt's checker sends on it from a goroutine
			if first == nil {
				first = err
			}
		}
		return first
	})
}

func hasPrefix(k []byte, prefix string) bool {
	return len(k) >= len(prefix) && string(k[:len(prefix)]) == prefix
}

func beKey(rev int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(rev))
	return b[:]
}

func getInt(b *bolt.Bucket, k []byte) int64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

func putInt(b *bolt.Bucket, k []byte, v int64) error { return b.Put(k, beKey(v)) }
