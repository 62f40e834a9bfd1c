package boltstore

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/store"
)

// TestWatchFromTheRevisionListed: List reads the revision inside its read transaction, which
// sees a commit a moment before the writer publishes the revision Watch checks. A List that
// landed in between returned a revision Watch then called the future (ErrFutureRev), so a
// list-then-watch failed now and then under writes.
func TestWatchFromTheRevisionListed(t *testing.T) {
	s, err := Open(DefaultConfig(filepath.Join(t.TempDir(), "db")), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				s.Update(ctx, "/k", []byte("v"), 0)
			}
		}()
	}
	if _, err := s.Create(ctx, "/k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	defer func() { stop.Store(true); wg.Wait() }()
	for i := 0; i < 2000; i++ {
		_, rev, err := s.List(ctx, "/", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithCancel(ctx)
		_, err = s.Watch(wctx, rev)
		wcancel()
		if errors.Is(err, store.ErrFutureRev) {
			t.Fatalf("iteration %d: Watch from the revision List just returned: %v", i, err)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestWatchAheadWaitsForTheRevision: a Watch from a revision the store has not published waits
// for it (up to a second): it starts once a commit reaches it, and ends at once when its
// context ends or the store closes.
func TestWatchAheadWaitsForTheRevision(t *testing.T) {
	s := openTest(t, nil)
	ctx := context.Background()
	rev, err := s.Rev(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		ch   <-chan store.WatchResponse
		err  error
		took time.Duration
	}
	watch := func(ctx context.Context, from int64) chan result {
		out := make(chan result, 1)
		go func() {
			start := time.Now()
			ch, err := s.Watch(ctx, from)
			out <- result{ch, err, time.Since(start)}
		}()
		return out
	}

	pending := watch(ctx, rev+1)
	time.Sleep(50 * time.Millisecond)
	if _, err := s.Create(ctx, "/a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	r := <-pending
	if r.err != nil || r.took > 900*time.Millisecond {
		t.Fatalf("watch from the next revision: %v after %s", r.err, r.took)
	}
	// Watch sends what comes after its revision: the next write.
	if _, err := s.Create(ctx, "/b", []byte("2")); err != nil {
		t.Fatal(err)
	}
	select {
	case resp := <-r.ch:
		if len(resp.Events) == 0 || resp.Events[0].KV.Key != "/b" {
			t.Fatalf("first response %+v, want the create of /b", resp)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event after the watch started")
	}

	if r := <-watch(ctx, rev+10); !errors.Is(r.err, store.ErrFutureRev) || r.took < 900*time.Millisecond {
		t.Fatalf("watch from a revision never reached: %v after %s, want ErrFutureRev after about a second", r.err, r.took)
	}

	cctx, cancel := context.WithCancel(ctx)
	pending = watch(cctx, rev+10)
	time.Sleep(50 * time.Millisecond)
	cancel()
	if r := <-pending; r.err == nil || r.took > 500*time.Millisecond {
		t.Fatalf("watch whose context ended: %v after %s", r.err, r.took)
	}

	pending = watch(ctx, rev+10)
	time.Sleep(50 * time.Millisecond)
	s.Close()
	if r := <-pending; !errors.Is(r.err, store.ErrClosed) || r.took > 500*time.Millisecond {
		t.Fatalf("watch on a store closing: %v after %s, want ErrClosed at once", r.err, r.took)
	}
}
