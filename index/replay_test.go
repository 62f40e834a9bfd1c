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

// TestReplayNotOvertakenByCompaction: the index starts its history replay at the edge of the
// store's history (Preload == History, as tether-cloud wires it). Writes made while a slow
// subscriber takes the replay used to move the compaction past what the replay still had to
// read, and Run failed for good (tether-cloud exited). The index now holds the store's
// compaction until its replay is over.
func TestReplayNotOvertakenByCompaction(t *testing.T) {
	const history = 20_000
	cfg := boltstore.DefaultConfig(filepath.Join(t.TempDir(), "cloud.db"))
	cfg.History = history
	b, err := boltstore.Open(cfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Create(context.Background(), "/configmaps/default/cfg", []byte(`{"metadata":{"name":"cfg","namespace":"default"}}`)); err != nil {
		t.Fatal(err)
	}
	concurrentWrites(t, b, 25_000)

	ix, err := New(Config{Preload: history}, b, resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var once sync.Once
	ix.Subscribe(func(u Update) {
		// A subscriber slower than the writers (the hub and the watch cache take every
		// historical update); modelled as one pause while the writers run.
		once.Do(func() { <-release })
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	<-ix.Ready()
	concurrentWrites(t, b, 25_000) // ordinary traffic during the start
	close(release)
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
