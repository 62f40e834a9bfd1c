package index

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tetherhub/tether/store/boltstore"
)

// TestSlowIndexResumes: the store drops a watcher that falls WatchBuffer events behind, and the
// index then watches again from its last revision. That revision must still be in the store's
// history, so the index holds the store's compaction while it lags. Before, with the default
// WatchBuffer (200,000) larger than the History (100,000), it never was: Run failed for good
// and tether-cloud exited. Scaled down: History 100, WatchBuffer 200.
func TestSlowIndexResumes(t *testing.T) {
	b := openStore(t, func(c *boltstore.Config) { c.History, c.WatchBuffer, c.MaxBatch = 100, 200, 1 })
	// One slow moment of a subscriber (the hub fanning out to many nodes).
	ix, done, release := runPaused(t, b, Config{HoldBehind: 20, HoldCheck: time.Millisecond})
	ctx := context.Background()
	var err error
	var last int64
	for i := range 400 {
		last, err = b.Create(ctx, fmt.Sprintf("/configmaps/default/c%d", i), fmt.Appendf(nil, `{"metadata":{"name":"c%d","namespace":"default"}}`, i))
		if err != nil {
			t.Fatal(err)
		}
	}
	release()
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
