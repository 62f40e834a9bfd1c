package edgestore

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tetherhub/tether/protocol"
)

// bucketTwins holds the twin engine's state per device: device id → opaque bytes. The store
// does not read them; the engine owns their meaning.
var bucketTwins = []byte("twins")

// ErrEmptyID is returned by WriteTwin for an empty device id.
var ErrEmptyID = errors.New("edgestore: empty twin id")

// replacer lets WriteTwin replace an outbox entry in place when nobody has read it yet, so that
// a device reporting faster than the cloud drains leaves one entry, with its latest values, in
// the position of its first unsent change (a moving entry could be overtaken forever by other
// devices' entries).
//
// The danger is a reader that read the old content of an entry, then the entry being replaced:
// the new content would never be sent. So ReadOutbox holds mu while it reads and notes the
// highest seq it returned, and the writer takes mu before it decides to replace and keeps it
// until that transaction has committed or failed. A replacement is therefore either committed
// before a read begins (the read sees it) or decided after the read noted its seqs (and then it
// is not a replacement but an append).
type replacer struct {
	mu   sync.Mutex // see above; taken before a bbolt View, never inside one
	read uint64     // guarded by mu: the highest seq ReadOutbox has returned since Open

	// Owned by the writer goroutine.
	held   bool                  // mu is held until the current transaction ends
	latest map[replaceKey]uint64 // seq of the newest replaceable entry appended, by kind and subject

	group groupCommit // WriteTwin's batching
}

// groupCommit gathers concurrent WriteTwin calls into one operation of the writer. The writer
// already shares a commit among whatever is queued, but under a steady stream of device updates
// a commit's fixed cost (two fsyncs, meta and freelist pages) is paid every few updates; waiting
// up to twinLinger for more, while updates keep coming, pays it once for many.
type groupCommit struct {
	mu       sync.Mutex
	pending  []*twinWrite
	flushing bool          // a flush goroutine is running
	more     chan struct{} // capacity 1: pending grew
	lastSize int           // writes in the previous batch; owned by the flush goroutine
}

// twinWrite is one WriteTwin call in a batch.
type twinWrite struct {
	id       string
	state    []byte
	reports  []Entry
	replaced int
	err      error
	done     chan struct{}
}

// Group commit bounds: a batch waits at most twinLinger for company, and only when the previous
// batch had company (so a lone update is never delayed), and carries at most twinBatchMax writes.
const (
	twinLinger   = time.Millisecond
	twinBatchMax = 1024
)

// noteRead records what a ReadOutbox returned; the caller holds mu.
func (r *replacer) noteRead(out []Entry) {
	if n := len(out); n > 0 && out[n-1].Seq > r.read {
		r.read = out[n-1].Seq
	}
}

// replaceKey names the entries a report may replace: the same kind about the same subject.
type replaceKey struct {
	kind    protocol.ReportKind
	subject string
}

// entryIs reports whether the stored outbox entry v is of kind about subject, and when it was
// first queued, reading only its header (encodeEntry's layout): the payload is not copied.
func entryIs(v []byte, kind protocol.ReportKind, subject string) (time int64, ok bool) {
	if len(v) < 1 || protocol.ReportKind(v[0]) != kind {
		return 0, false
	}
	v = v[1:]
	l, n := binary.Uvarint(v)
	if n <= 0 || l > uint64(len(v)-n) || string(v[n:n+int(l)]) != subject {
		return 0, false
	}
	t, m := binary.Varint(v[n+int(l):])
	return t, m > 0
}

// WriteTwin stores the state of one device's twin (state nil deletes it) and, in the same
// transaction, its reports, and returns once both are durable: a report exists exactly when the
// state it describes does. Each report replaces the newest outbox entry with the same Kind and
// Subject if that entry has not been read for sending yet, and is appended otherwise, so a report
// must carry everything its reader needs (a snapshot), never a difference. replaced says how
// many reports replaced an entry. When the outbox has no room for what would be appended,
// nothing is written and the error is ErrOutboxFull; a report beyond what a hub accepts writes
// nothing either (protocol.ErrReportTooLarge).
//
// Concurrent calls are committed together (see groupCommit); each succeeds or fails on its own.
func (s *Store) WriteTwin(ctx context.Context, id string, state []byte, reports ...Entry) (replaced int, err error) {
	if id == "" {
		return 0, ErrEmptyID
	}
	if err := checkEntries(reports); err != nil {
		return 0, err
	}
	w := &twinWrite{id: id, state: state, reports: reports, done: make(chan struct{})}
	g := &s.rep.group
	g.mu.Lock()
	g.pending = append(g.pending, w)
	start := !g.flushing
	g.flushing = true
	if g.more == nil {
		g.more = make(chan struct{}, 1)
	}
	more := g.more
	g.mu.Unlock()
	if start {
		go s.flushTwins()
	} else {
		select {
		case more <- struct{}{}:
		default:
		}
	}
	select {
	case <-w.done:
		return w.replaced, w.err
	case <-ctx.Done():
		return 0, ctx.Err() // it may still be committed: the caller cannot know
	}
}

// flushTwins commits pending WriteTwin calls, a batch at a time, until none are left.
func (s *Store) flushTwins() {
	g := &s.rep.group
	timer := time.NewTimer(twinLinger)
	timer.Stop()
	defer timer.Stop()
	for {
		g.mu.Lock()
		n := len(g.pending)
		if n == 0 {
			g.flushing = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		if g.lastSize > 1 && n < twinBatchMax {
			timer.Reset(twinLinger)
		linger:
			for {
				select {
				case <-timer.C:
					break linger
				case <-g.more:
					g.mu.Lock()
					n = len(g.pending)
					g.mu.Unlock()
					if n >= twinBatchMax {
						timer.Stop() // no stale tick to drain: timers are synchronous since Go 1.23
						break linger
					}
				}
			}
		}
		g.mu.Lock()
		batch := g.pending
		if len(batch) > twinBatchMax {
			batch = batch[:twinBatchMax]
		}
		g.pending = append([]*twinWrite(nil), g.pending[len(batch):]...)
		g.mu.Unlock()
		g.lastSize = len(batch)
		s.commitTwins(batch)
	}
}

// commitTwins runs a batch as one operation of the writer and tells each write its outcome.
func (s *Store) commitTwins(batch []*twinWrite) {
	_, err := s.doTwin(context.Background(), func(tx *bolt.Tx, st *txState) (int, error) {
		for _, w := range batch {
			w.replaced, w.err = s.writeTwin(tx, st, w.id, w.state, w.reports)
		}
		return 0, nil
	})
	for _, w := range batch {
		if err != nil {
			w.replaced, w.err = 0, err // the commit failed: nothing of the batch is stored
		}
		close(w.done)
	}
}

// doTwin is do for operations that may take replacer.mu: the lock is released once the
// transaction carrying the operation has ended, whatever its outcome. fn's count is delivered
// with the commit's outcome, so a caller that gave up (ctx) never reads what fn writes later.
func (s *Store) doTwin(ctx context.Context, fn func(*bolt.Tx, *txState) (int, error)) (int, error) {
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	var n int // written by fn and read by done, both on the writer goroutine
	o := &op{fn: func(tx *bolt.Tx, st *txState) error {
		var err error
		n, err = fn(tx, st)
		return err
	}}
	o.done = func(err error) {
		// done runs on the writer goroutine after the commit (or its failure) of the batch.
		if s.rep.held {
			s.rep.held = false
			s.rep.mu.Unlock()
		}
		if err != nil {
			n = 0
		}
		done <- result{n, err}
	}
	if err := s.submit(ctx, o); err != nil {
		return 0, err
	}
	select {
	case r := <-done:
		return r.n, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (s *Store) writeTwin(tx *bolt.Tx, st *txState, id string, state []byte, reports []Entry) (int, error) {
	out := tx.Bucket(bucketOutbox)
	if s.rep.latest == nil {
		s.rep.latest = map[replaceKey]uint64{}
	}
	// Decide first, write after: an operation that fails must leave nothing behind, because the
	// rest of its batch commits.
	type target struct {
		seq  uint64 // 0: append
		time int64  // the replaced entry's
	}
	var tbuf [2]target
	targets := tbuf[:0]
	appends := 0
	for _, e := range reports {
		key := replaceKey{e.Kind, e.Subject}
		seq, ok := s.rep.latest[key]
		var first int64
		if ok {
			v := out.Get(beUint(seq))
			if v == nil {
				delete(s.rep.latest, key) // acknowledged and trimmed
				ok = false
			} else if first, ok = entryIs(v, e.Kind, e.Subject); !ok {
				// The seq was reused after a failed commit: the map is only a hint.
				delete(s.rep.latest, key)
			}
		}
		if ok {
			if !s.rep.held {
				s.rep.mu.Lock()
				s.rep.held = true
			}
			if seq > s.rep.read {
				targets = append(targets, target{seq, first})
				continue
			}
		}
		targets = append(targets, target{})
		appends++
	}
	if st.c.outCount+appends > s.cfg.OutboxLimit {
		s.refused.Add(1)
		s.metrics.outboxFull.Inc()
		return 0, ErrOutboxFull
	}
	b, err := tx.CreateBucketIfNotExists(bucketTwins)
	if err != nil {
		return 0, err
	}
	if state == nil {
		err = b.Delete([]byte(id))
	} else {
		err = b.Put([]byte(id), state)
	}
	if err != nil {
		return 0, err
	}
	replaced := 0
	for i, e := range reports {
		if tg := targets[i]; tg.seq != 0 {
			e.Time = tg.time // the entry waits since its first change: keep the outbox age honest
			if err := out.Put(beUint(tg.seq), encodeEntry(e)); err != nil {
				return 0, err
			}
			replaced++
			continue
		}
		if err := s.enqueue(tx, st, []Entry{e}); err != nil {
			return 0, err
		}
		s.rep.latest[replaceKey{e.Kind, e.Subject}] = st.c.outSeq
	}
	return replaced, nil
}

// Twins returns every device's stored twin state, by id.
func (s *Store) Twins() (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTwins)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			out[string(k)] = append([]byte(nil), v...)
			return nil
		})
	})
	return out, err
}

// OutboxSeqs returns the seq of every entry in the outbox, in order, for tests and checks.
func (s *Store) OutboxSeqs() ([]uint64, error) {
	var out []uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).ForEach(func(k, _ []byte) error {
			out = append(out, binary.BigEndian.Uint64(k))
			return nil
		})
	})
	return out, err
}
