package index

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
	"github.com/tetherhub/tether/store/boltstore"
)

func concurrentWrites(t *testing.T, b store.Backend, n int) {
	t.Helper()
	var wg sync.WaitGroup
	per := n / 50
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if _, err := b.Update(context.Background(), "/configmaps/default/cfg", []byte(`{"metadata":{"name":"cfg","namespace":"default"}}`), 0); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// openStore opens a bbolt store in a temporary directory, its config adjusted by edit, closed
// when the test ends.
func openStore(t *testing.T, edit func(*boltstore.Config)) *boltstore.Store {
	t.Helper()
	cfg := boltstore.DefaultConfig(filepath.Join(t.TempDir(), "cloud.db"))
	edit(&cfg)
	b, err := boltstore.Open(cfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// runPaused runs an index over b, configured by cfg, whose one subscriber holds the index
// goroutine at its first update until release is called (also when the test ends). It returns
// once the index is Ready; done receives Run's result.
func runPaused(t *testing.T, b store.Backend, cfg Config) (ix *Index, done <-chan error, release func()) {
	t.Helper()
	ix, err := New(cfg, b, resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	release = sync.OnceFunc(func() { close(stop) })
	var once sync.Once
	ix.Subscribe(func(Update) { once.Do(func() { <-stop }) })
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- ix.Run(ctx) }()
	t.Cleanup(func() {
		release()
		cancel()
	})
	<-ix.Ready()
	return ix, ran, release
}

// TestReplayNotOvertakenByCompaction: the index starts its history replay at the edge of the
// store's history (Preload == History, as tether-cloud wires it). Writes made while a slow
// subscriber takes the replay used to move the compaction past what the replay still had to
// read, and Run failed for good (tether-cloud exited). The index now holds the store's
// compaction until its replay is over.
func TestReplayNotOvertakenByCompaction(t *testing.T) {
	const history = 20_000
	b := openStore(t, func(c *boltstore.Config) { c.History = history })
	if _, err := b.Create(context.Background(), "/configmaps/default/cfg", []byte(`{"metadata":{"name":"cfg","namespace":"default"}}`)); err != nil {
		t.Fatal(err)
	}
	concurrentWrites(t, b, 25_000)
	// A subscriber slower than the writers (the hub and the watch cache take every historical
	// update), modelled as one pause while the writers run.
	ix, done, release := runPaused(t, b, Config{Preload: history})
	concurrentWrites(t, b, 25_000) // ordinary traffic during the start
	release()
	select {
	case err := <-done:
		if errors.Is(err, store.ErrCompacted) {
			t.Fatalf("index.Run failed for good during its start: %v", err)
		}
		t.Fatalf("Run returned %v", err)
	case <-ix.Current():
	case <-time.After(30 * time.Second):
		t.Fatal("timeout")
	}
}
