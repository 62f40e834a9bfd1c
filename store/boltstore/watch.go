package boltstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tetherhub/tether/store"
)

// Watch implements store.Backend. The watcher is registered before the history is read, so no
// event falls between the replay and the live stream (kine's subscribe-then-list).
func (s *Store) Watch(ctx context.Context, rev int64) (<-chan store.WatchResponse, error) {
	s.mu.Lock()
	// A List or Get sees a commit as soon as bbolt's transaction ends, a moment before the
	// writer publishes its revision here: wait that moment out (up to a second) instead of
	// calling a revision just read "future" (a list-then-watch from the list's revision would
	// fail).
	if rev > s.rev && !s.closed {
		wait := time.NewTimer(time.Second)
		defer wait.Stop()
		for done := false; rev > s.rev && !s.closed && !done; {
			moved := s.revMoved
			s.mu.Unlock()
			select {
			case <-moved:
			case <-wait.C:
				done = true
			case <-ctx.Done():
				done = true
			}
			s.mu.Lock()
		}
	}
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, store.ErrClosed
	case rev < s.compacted:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: watch from %d, history starts after %d", store.ErrCompacted, rev, s.compacted)
	case rev > s.rev:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: watch from %d, store is at %d", store.ErrFutureRev, rev, s.rev)
	}
	w := &watcher{ch: make(chan store.WatchResponse, 16), wake: make(chan struct{}, 1), limit: s.cfg.WatchBuffer}
	s.watchers[w] = struct{}{}
	upTo := s.rev
	s.mu.Unlock()
	go func() {
		defer func() {
			s.mu.Lock()
			delete(s.watchers, w)
			s.mu.Unlock()
		}()
		w.run(ctx, s, rev, upTo)
	}()
	return w.ch, nil
}

// watcher buffers events between the writer (which must never block on a reader) and one
// consumer. Lock order: Store.mu before watcher.mu.
type watcher struct {
	ch    chan store.WatchResponse // owned by run; closed when it returns
	wake  chan struct{}
	limit int

	mu      sync.Mutex // guards pending and err
	pending []store.Event
	err     error
}

// push is called by the writer with Store.mu held.
func (w *watcher) push(evs []store.Event) {
	w.mu.Lock()
	if w.err == nil {
		if len(w.pending)+len(evs) > w.limit {
			w.err = store.ErrSlowWatcher
			w.pending = nil
		} else {
			w.pending = append(w.pending, evs...)
		}
	}
	w.mu.Unlock()
	w.signal()
}

func (w *watcher) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
	w.signal()
}

func (w *watcher) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watcher) run(ctx context.Context, s *Store, from, upTo int64) {
	defer close(w.ch)
	send := func(r store.WatchResponse) bool {
		select {
		case w.ch <- r:
			return true
		case <-ctx.Done():
			return false
		}
	}
	// Replay the history (from, upTo] in chunks, so a long replay does not hold a read
	// transaction (and with it, freed pages) for its whole duration.
	next := from + 1
	for next <= upTo {
		evs, err := s.readLog(next, upTo, 1000)
		if err != nil {
			send(store.WatchResponse{Err: err})
			return
		}
		if !send(store.WatchResponse{Events: evs}) {
			return
		}
		next = evs[len(evs)-1].Rev() + 1
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		w.mu.Lock()
		evs, err := w.pending, w.err
		w.pending = nil
		w.mu.Unlock()
		if len(evs) > 0 && !send(store.WatchResponse{Events: evs}) {
			return
		}
		if err != nil {
			send(store.WatchResponse{Err: err})
			return
		}
	}
}

// readLog returns up to limit events from revision `from` on, but not past upTo. A missing
// revision means compaction overtook the reader.
func (s *Store) readLog(from, upTo int64, limit int) ([]store.Event, error) {
	var out []store.Event
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLog).Cursor()
		want := from
		for k, v := c.Seek(beKey(from)); k != nil && len(out) < limit; k, v = c.Next() {
			rev := int64(binary.BigEndian.Uint64(k))
			if rev > upTo {
				break
			}
			if rev != want {
				return fmt.Errorf("%w: revision %d is no longer in the history", store.ErrCompacted, want)
			}
			ev, ok := decodeEvent(rev, v)
			if !ok {
				return fmt.Errorf("boltstore: log entry %d is damaged", rev)
			}
			out = append(out, ev)
			want++
		}
		if len(out) == 0 {
			return fmt.Errorf("%w: revision %d is no longer in the history", store.ErrCompacted, from)
		}
		return nil
	})
	return out, err
}
