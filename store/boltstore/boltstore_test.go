package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/tetherhub/tether/store"
	"github.com/tetherhub/tether/store/storetest"
)

// openTest opens a store in a temp dir and checks the file's integrity when the test ends.
func openTest(t *testing.T, mutate func(*Config)) *Store {
	t.Helper()
	cfg := DefaultConfig(filepath.Join(t.TempDir(), "cloud.db"))
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := Open(cfg, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkFile(t, cfg.Path) })
	return s
}

func checkFile(t *testing.T, path string) {
	t.Helper()
	s, err := Open(DefaultConfig(path), zerolog.Nop(), nil)
	if err != nil {
		t.Errorf("reopen for check: %v", err)
		return
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Errorf("bbolt check of %s: %v", path, err)
	}
}

func TestConformance(t *testing.T) {
	storetest.RunHarness(t, storetest.Harness{
		Open: func(t *testing.T) store.Backend { return openTest(t, nil) },
		OpenLimited: func(t *testing.T, history int64, watchBuffer int) store.Backend {
			return openTest(t, func(c *Config) { c.History, c.WatchBuffer = history, watchBuffer })
		},
		Reopen: func(t *testing.T, b store.Backend) store.Backend {
			path := b.(*Store).Path()
			b.Close()
			s, err := Open(DefaultConfig(path), zerolog.Nop(), nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	})
}

func TestSecondOpenFailsFast(t *testing.T) {
	s := openTest(t, nil)
	defer s.Close()
	start := time.Now()
	cfg := DefaultConfig(s.Path())
	cfg.OpenTimeout = 200 * time.Millisecond
	_, err := Open(cfg, zerolog.Nop(), nil)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("second open took %s", d)
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	s := openTest(t, nil)
	ctx := context.Background()
	rev, err := s.Create(ctx, "/k", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	id := s.ClusterID()
	path := s.Path()
	s.Close()
	s2, err := Open(DefaultConfig(path), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.ClusterID() != id {
		t.Fatalf("cluster ID changed: %s → %s", id, s2.ClusterID())
	}
	if r, _ := s2.Rev(ctx); r != rev {
		t.Fatalf("rev after reopen = %d, want %d", r, rev)
	}
	kv, err := s2.Get(ctx, "/k")
	if err != nil || string(kv.Value) != "v" {
		t.Fatalf("get after reopen = %+v, %v", kv, err)
	}
	// The history survives too: a watch from before the write replays it.
	ch, err := s2.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp := <-ch; resp.Err != nil || len(resp.Events) != 1 || resp.Events[0].KV.Key != "/k" {
		t.Fatalf("replay after reopen = %+v", resp)
	}
}

func TestCompaction(t *testing.T) {
	s := openTest(t, func(c *Config) { c.History = 10 })
	defer s.Close()
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		if _, err := s.Update(ctx, "/k", []byte{byte(i)}, 0); errors.Is(err, store.ErrNotFound) {
			if _, err := s.Create(ctx, "/k", []byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
	}
	// Compaction trails the writes; wait until it stops moving before watching around it.
	compacted, _ := s.Compacted(ctx)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		now, _ := s.Compacted(ctx)
		if now == compacted {
			break
		}
		compacted = now
	}
	rev, _ := s.Rev(ctx)
	if compacted == 0 || rev-compacted > 2*10 {
		t.Fatalf("compacted = %d at rev %d with history 10", compacted, rev)
	}
	var stale []uint64 // log entries compaction should have dropped
	s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLog).ForEach(func(k, _ []byte) error {
			if r := binary.BigEndian.Uint64(k); int64(r) <= compacted {
				stale = append(stale, r)
			}
			return nil
		})
	})
	if len(stale) > 0 {
		t.Fatalf("log entries at or below the compacted revision %d remain: %v", compacted, stale)
	}
	if _, err := s.Watch(ctx, compacted-1); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("watch before compaction: %v, want ErrCompacted", err)
	}
	ch, err := s.Watch(ctx, compacted)
	if err != nil {
		t.Fatal(err)
	}
	resp := <-ch
	if resp.Err != nil || resp.Events[0].Rev() != compacted+1 {
		t.Fatalf("watch from compacted = %+v", resp)
	}
}

func TestSlowWatcherIsDropped(t *testing.T) {
	s := openTest(t, func(c *Config) { c.WatchBuffer = 10 })
	defer s.Close()
	ctx := context.Background()
	rev, _ := s.Rev(ctx)
	ch, err := s.Watch(ctx, rev)
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads ch while writes pile up past the watcher's buffer.
	for i := 0; i < 200; i++ {
		if _, err := s.Create(ctx, "/k/"+string(rune('a'+i%26))+string(rune('a'+i/26)), nil); err != nil {
			t.Fatal(err)
		}
	}
	var last store.WatchResponse
	for resp := range ch {
		last = resp
	}
	if !errors.Is(last.Err, store.ErrSlowWatcher) {
		t.Fatalf("last response = %+v, want ErrSlowWatcher", last)
	}
}

func TestConcurrentWritersShareCommits(t *testing.T) {
	s := openTest(t, nil)
	defer s.Close()
	ctx := context.Background()
	const n = 200
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			_, err := s.Create(ctx, "/c/"+time.Duration(i).String(), []byte("x"))
			errs <- err
		}(i)
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if rev, _ := s.Rev(ctx); rev != n {
		t.Fatalf("rev = %d, want %d", rev, n)
	}
}

// TestReplaceClusterID: ReplaceClusterID naming the store's ID gives it a new one, kept from
// then on; left set at the next start, it names an ID the store no longer has and does nothing.
func TestReplaceClusterID(t *testing.T) {
	s := openTest(t, nil)
	id, path := s.ClusterID(), s.Path()
	s.Close()
	reopen := func(replace string) string {
		t.Helper()
		cfg := DefaultConfig(path)
		cfg.ReplaceClusterID = replace
		s, err := Open(cfg, zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return s.ClusterID()
	}
	newID := reopen(id)
	if newID == id {
		t.Fatal("ReplaceClusterID of the store's own ID kept it")
	}
	if again := reopen(id); again != newID {
		t.Fatalf("started again with the flag: %s, want %s kept", again, newID)
	}
	if plain := reopen(""); plain != newID {
		t.Fatalf("reopened without the flag: %s, want %s", plain, newID)
	}
}
