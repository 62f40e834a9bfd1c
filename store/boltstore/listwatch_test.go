package boltstore

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

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
