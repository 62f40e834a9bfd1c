package edgestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/tetherhub/tether/internal/boltsafe"
	"github.com/tetherhub/tether/resource"
)

// Bucket names and meta keys. Changing them is a data-format change.
var (
	bucketObjects = []byte("objects") // store key → record
	bucketMeta    = []byte("meta")
	bucketOutbox  = []byte("outbox") // big-endian seq → outbox entry

	metaCluster  = []byte("cluster")   // the cloud cluster the cursor belongs to
	metaCursor   = []byte("cursor")    // cloud revision through which the view is complete
	metaLocalRev = []byte("local-rev") // the edge's own revision counter, for the metaserver
	metaOutSeq   = []byte("outbox-seq")
)

// Sentinel errors.
var (
	// ErrLocked: Open found the file held by another process.
	ErrLocked = errors.New("edgestore: store file is in use by another process")
	// ErrClosed: a call after Close.
	ErrClosed = errors.New("edgestore: closed")
	// ErrOutboxFull: Enqueue would take the outbox past its limit; the report is refused
	// (and counted), never dropped silently.
	ErrOutboxFull = errors.New("edgestore: outbox full")
	// ErrApplyBroken: Apply after an earlier Apply of the same session failed (its operation or
	// its commit). Later data must not be stored past the gap, or the cursor would move beyond
	// objects that never were; the session has to start again (BeginSession) and catch up.
	ErrApplyBroken = errors.New("edgestore: an earlier apply of this session failed; start a new session")
)

// Config configures the edge store.
type Config struct {
	Path        string
	OpenTimeout time.Duration
	// MaxBatch caps the operations one commit carries.
	MaxBatch int
	// OutboxLimit is how many reports the outbox holds before Enqueue refuses more.
	OutboxLimit int
}

// DefaultConfig returns the defaults for a store at path.
func DefaultConfig(path string) Config {
	return Config{Path: path, OpenTimeout: time.Second, MaxBatch: 4096, OutboxLimit: 1_000_000}
}

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("edgestore: path is empty")
	case c.OpenTimeout <= 0:
		return fmt.Errorf("edgestore: open timeout must be positive, got %s", c.OpenTimeout)
	case c.MaxBatch < 1:
		return fmt.Errorf("edgestore: max batch must be at least 1, got %d", c.MaxBatch)
	case c.OutboxLimit < 1:
		return fmt.Errorf("edgestore: outbox limit must be at least 1, got %d", c.OutboxLimit)
	}
	return nil
}

// Change is one committed change to the stored view, as subscribers see it.
type Change struct {
	Key      string // store key
	Rev      uint64 // local revision of the change
	Old, New *Record
	// StatusOnly marks the edge's own status write (SetStatus): the object's cloud version and
	// everything outside its status are as they were.
	StatusOnly bool
}

// Store is the edge's bbolt store. Safe for concurrent use.
type Store struct {
	cfg     Config
	db      *bolt.DB
	reg     *resource.Registry
	log     zerolog.Logger
	metrics *metrics

	ops       chan *op
	outboxSig chan struct{} // signalled after a commit that appended to the outbox
	refused   atomic.Int64  // reports refused because the outbox was full
	stop      chan struct{}
	stopped   chan struct{}
	subs      []func([]Change) // set before the first write; called on the writer goroutine

	mu       sync.Mutex // guards the fields below
	cluster  string
	cursor   uint64
	localRev uint64
	outSeq   uint64 // last outbox seq assigned
	outFirst uint64 // first outbox seq still held (0 if empty)
	outCount int
	closed   bool

	// Owned by the writer goroutine.
	resetting      bool            // between ResetBegin and ResetEnd
	resetSeen      map[string]bool // keys upserted since ResetBegin
	sessionCluster string          // the cluster of the current hub session
	applyFailed    error           // why an Apply of this session failed; cleared by BeginSession
	// deletedAhead holds the cloud revision of each delete applied beyond the cursor, until
	// the cursor passes it: ApplyLocal must not bring back what a later delete removed.
	deletedAhead map[string]uint64

	rep replacer // in-place replacement of unread outbox entries (twins.go)
	// damagedSeq is the highest outbox seq found damaged, so that one is reported once.
	damagedSeq atomic.Uint64
}

// op is one unit of work for the writer: fn runs inside the shared transaction; done gets its
// result after the commit (or the transaction's failure).
type op struct {
	fn    func(tx *bolt.Tx, w *txState) error
	done  func(error)
	apply bool // data from the hub (Apply): its failure breaks the session's stream
}

// txState is what operations in one transaction share: the counters they advance (published
// only if the transaction commits) and the changes they made, for subscribers.
type txState struct {
	c       *counters
	changes []Change
}

// Open opens (creating if needed) the store at cfg.Path.
func Open(cfg Config, reg *resource.Registry, log zerolog.Logger, promReg prometheus.Registerer) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// bbolt as etcd runs it: a hashmap freelist, not synced. A commit then writes no list of
	// free pages (it is rebuilt by a scan at open, quick for a store of this size), and finding
	// free pages does not scan an array that the outbox's replaced and trimmed entries keep
	// long. Under 1,000 busy devices, with bbolt's default (an array, synced), one commit of a
	// profiled load took 0.41–0.82 s, and such commits are a likely cause of the twin latency's
	// long tail (bench twin, stop 16; not proven). A crash loses nothing: the freelist is
	// derived data.
	db, err := boltsafe.Open(cfg.Path, &bolt.Options{Timeout: cfg.OpenTimeout, FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s (is another tether-edge running on this data dir?)", ErrLocked, cfg.Path)
		}
		return nil, fmt.Errorf("edgestore: open %s: %w", cfg.Path, err)
	}
	s := &Store{
		cfg: cfg, db: db, reg: reg,
		log:       log.With().Str("component", "edgestore").Logger(),
		ops:       make(chan *op, 4*cfg.MaxBatch),
		outboxSig: make(chan struct{}, 1),
		stop:      make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	err = boltsafe.Update(db, func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketObjects, bucketMeta, bucketOutbox, bucketTwins} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		s.cluster = string(m.Get(metaCluster))
		s.cursor = getUint(m, metaCursor)
		s.localRev = getUint(m, metaLocalRev)
		s.outSeq = getUint(m, metaOutSeq)
		c := tx.Bucket(bucketOutbox).Cursor()
		if k, _ := c.First(); k != nil {
			s.outFirst = binary.BigEndian.Uint64(k)
		}
		s.outCount = tx.Bucket(bucketOutbox).Stats().KeyN
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("edgestore: init: %w", err)
	}
	s.metrics = newMetrics(promReg, s)
	go s.writer()
	return s, nil
}

// Subscribe adds fn, called after each commit with what it changed in the view, in order, on
// the writer goroutine (so it must not block). Call before the first write.
func (s *Store) Subscribe(fn func([]Change)) { s.subs = append(s.subs, fn) }

// OutboxSignal is signalled after a commit that appended reports. One reader (the hub client)
// should wait on it.
func (s *Store) OutboxSignal() <-chan struct{} { return s.outboxSig }

// Cursor returns the cluster and revision through which the stored view is complete.
func (s *Store) Cursor() (cluster string, cursor uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cluster, s.cursor
}

// Synced reports whether the store has ever completed a sync: before that, a list would be
// empty for the wrong reason, and must be answered with an error instead.
func (s *Store) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cluster != ""
}

// LocalRev returns the edge's newest local revision.
func (s *Store) LocalRev() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.localRev
}

// submit queues o for the writer. Every queued operation gets its done call, also when Close
// races the call: the writer answers what it finds queued both before and after it closes
// stopped, and a caller that queued after that answers what is left itself.
func (s *Store) submit(ctx context.Context, o *op) error {
	// Checked first: a select would otherwise pick the queue, which has room after Close too,
	// as often as the stop.
	select {
	case <-s.stop:
		return ErrClosed
	default:
	}
	select {
	case s.ops <- o:
	case <-s.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-s.stopped:
		s.failQueued()
	default:
	}
	return nil
}

// failQueued answers every queued operation with ErrClosed; only once the writer has stopped
// taking them, or by the writer itself.
func (s *Store) failQueued() {
	for {
		select {
		case o := <-s.ops:
			o.done(ErrClosed)
		default:
			return
		}
	}
}

// do runs fn in the writer's next transaction and waits for its commit.
func (s *Store) do(ctx context.Context, fn func(*bolt.Tx, *txState) error) error {
	done := make(chan error, 1)
	if err := s.submit(ctx, &op{fn: fn, done: func(err error) { done <- err }}); err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writer is the only goroutine that writes the file. It takes every queued operation into one
// transaction, so a burst of messages from the cloud and reports from devices share one fsync.
func (s *Store) writer() {
	batch := make([]*op, 0, s.cfg.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case o := <-s.ops:
			batch = append(batch, o)
		case <-s.stop:
			s.failQueued()
			close(s.stopped)
			s.failQueued() // queued before submit could see stopped closed
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
	}
}

// update runs fn in a write transaction and commits it, as bolt's DB.Update does, and also
// returns how long the commit spent writing pages and syncing the file: a commit far slower
// than its disk part waited on something else (CPU, a reader holding the map during a grow).
func (s *Store) update(fn func(*bolt.Tx) error) (disk time.Duration, err error) {
	tx, err := s.db.Begin(true)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() // after a commit, a no-op
	if err := fn(tx); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	st := tx.Stats()
	return st.GetWriteTime(), nil
}

func (s *Store) commit(batch []*op) {
	start := time.Now()
	errs := make([]error, len(batch))
	s.mu.Lock()
	shadow := counters{cluster: s.cluster, cursor: s.cursor, localRev: s.localRev, outSeq: s.outSeq, outFirst: s.outFirst, outCount: s.outCount}
	s.mu.Unlock()
	st := txState{c: &shadow}
	disk, err := s.update(func(tx *bolt.Tx) error {
		for i, o := range batch {
			errs[i] = o.fn(tx, &st)
		}
		m := tx.Bucket(bucketMeta)
		if err := m.Put(metaCluster, []byte(shadow.cluster)); err != nil {
			return err
		}
		for k, v := range map[string]uint64{string(metaCursor): shadow.cursor, string(metaLocalRev): shadow.localRev, string(metaOutSeq): shadow.outSeq} {
			if err := putUint(m, []byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	s.metrics.commitSeconds.Observe(time.Since(start).Seconds())
	if err == nil {
		s.metrics.diskSeconds.Observe(disk.Seconds())
	}
	s.metrics.batchSize.Observe(float64(len(batch)))
	if err != nil {
		// A reset in progress cannot be trusted past a failed commit, even one that held none
		// of the hub's data (a twin write's): the session's later Applies fail, so it ends
		// with the reset unacknowledged, and the next one starts it again. Were the reset
		// merely dropped, its ResetEnd would find none begun and be acknowledged, sweeping
		// nothing, and the objects the cloud no longer has would stay.
		broken := s.resetting
		s.resetting, s.resetSeen = false, nil
		for _, o := range batch {
			broken = broken || o.apply
		}
		if broken && s.applyFailed == nil {
			s.applyFailed = err
		}
		s.log.Error().Err(err).Int("ops", len(batch)).Msg("commit failed")
		for _, o := range batch {
			o.done(fmt.Errorf("edgestore: commit: %w", err))
		}
		return
	}
	s.mu.Lock()
	appended := shadow.outSeq > s.outSeq
	s.cluster, s.cursor, s.localRev = shadow.cluster, shadow.cursor, shadow.localRev
	s.outSeq, s.outFirst, s.outCount = shadow.outSeq, shadow.outFirst, shadow.outCount
	s.mu.Unlock()
	if appended {
		select {
		case s.outboxSig <- struct{}{}:
		default:
		}
	}
	if len(st.changes) > 0 {
		for _, fn := range s.subs {
			fn(st.changes)
		}
	}
	for i, o := range batch {
		o.done(errs[i])
	}
}

// counters are the in-memory mirrors of meta values, as a transaction changes them.
type counters struct {
	cluster  string
	cursor   uint64
	localRev uint64
	outSeq   uint64
	outFirst uint64
	outCount int
}

// Close stops the writer and closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.stopped
	return s.db.Close()
}

// Check runs bbolt's consistency check over the file.
func (s *Store) Check() error {
	return s.db.View(func(tx *bolt.Tx) error {
		// The check runs on a goroutine of bbolt's inside this transaction: read to the end,
		// or it would block on its channel with the transaction closed under it.
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		return first
	})
}

// Path is the store's file.
func (s *Store) Path() string { return s.cfg.Path }

func getUint(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bolt.Bucket, k []byte, v uint64) error { return b.Put(k, beUint(v)) }

func beUint(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
