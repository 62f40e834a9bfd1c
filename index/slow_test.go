package index

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store/boltstore"
)

// TestSlowIndexResumes: the store drops a watcher that falls WatchBuffer events behind, and the
// index then watches again from its last revision. That revision must still be in the store's
// history, so the index holds the store's compaction while it lags. Before, with the default
// WatchBuffer (200,000) larger than the History (100,000), it never was: Run failed for good
// and tether-cloud exited. Scaled down: History 100, WatchBuffer 200.
func TestSlowIndexResumes(t *testing.T) {
	cfg := boltstore.DefaultConfig(filepath.Join(t.TempDir(), "cloud.db"))
	cfg.History, cfg.WatchBuffer, cfg.MaxBatch = 100, 200, 1
	b, err := boltstore.Open(cfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ix, err := New(Config{HoldBehind: 20, HoldCheck: time.Millisecond}, b, resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	blocked := false
	ix.Subscribe(func(Update) {
		if !blocked {
			blocked = true
			<-release // one slow moment of a subscriber (the hub fanning out to many nodes)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	<-ix.Ready()
	var last int64
	for i := range 400 {
		last, err = b.Create(ctx, fmt.Sprintf("/configmaps/default/c%d", i), fmt.Appendf(nil, `{"metadata":{"name":"c%d","namespace":"default"}}`, i))
		if err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	go func() {
		if err := <-done; err != nil {
			t.Errorf("index.Run ended: %v", err)
			wcancel()
		}
	}()
	if _, err := ix.WaitFor(wctx, last); err != nil {
		t.Fatalf("the index never reached %d: %v", last, err)
	}
}
