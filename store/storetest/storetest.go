package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tetherhub/tether/store"
)

// Run runs the conformance suite. open returns a fresh, empty backend; the suite closes it.
func Run(t *testing.T, open func(t *testing.T) store.Backend) {
	RunHarness(t, Harness{Open: open})
}

// Harness opens backends for RunHarness. Open is required; each other opener enables the tests
// that need it.
type Harness struct {
	// Open returns a fresh, empty backend; the suite closes it.
	Open func(t *testing.T) store.Backend
	// OpenLimited returns a fresh, empty backend that keeps about history revisions of change
	// history, compacting on its own within seconds of the writes, and ends a watch that has
	// more than watchBuffer events undelivered with store.ErrSlowWatcher. The suite closes it.
	OpenLimited func(t *testing.T, history int64, watchBuffer int) store.Backend
	// Reopen closes b and opens the same store again, as a restarted process would.
	Reopen func(t *testing.T, b store.Backend) store.Backend
}

// RunHarness runs the conformance suite with every test h makes possible.
func RunHarness(t *testing.T, h Harness) {
	open := h.Open
	t.Run("CRUD", func(t *testing.T) { testCRUD(t, open(t)) })
	t.Run("Values", func(t *testing.T) { testValues(t, open(t)) })
	t.Run("RevIsLastChange", func(t *testing.T) { testRevIsLastChange(t, open(t)) })
	t.Run("OptimisticConcurrency", func(t *testing.T) { testOptimistic(t, open(t)) })
	t.Run("List", func(t *testing.T) { testList(t, open(t)) })
	t.Run("ListEdges", func(t *testing.T) { testListEdges(t, open(t)) })
	t.Run("Keys", func(t *testing.T) { testKeys(t, open(t)) })
	t.Run("WatchReplayThenLive", func(t *testing.T) { testWatch(t, open(t)) })
	t.Run("WatchFromEveryRevision", func(t *testing.T) { testWatchFromEvery(t, open(t)) })
	t.Run("WatchConcurrentWriters", func(t *testing.T) { testWatchConcurrent(t, open(t)) })
	t.Run("WatchBounds", func(t *testing.T) { testWatchBounds(t, open(t)) })
	t.Run("Close", func(t *testing.T) { testClose(t, open(t)) })
	if h.OpenLimited != nil {
		t.Run("Compaction", func(t *testing.T) { testCompaction(t, h.OpenLimited(t, 10, 100_000)) })
		t.Run("SlowWatcher", func(t *testing.T) { testSlowWatcher(t, h.OpenLimited(t, 100_000, 5)) })
	}
	if h.Reopen != nil {
		t.Run("Reopen", func(t *testing.T) { testReopen(t, open(t), h.Reopen) })
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// h turns (value, error) results into values, failing the test on error.
type h struct{ t *testing.T }

func (h h) rev(r int64, err error) int64 {
	h.t.Helper()
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

func (h h) kv(kv store.KV, err error) store.KV {
	h.t.Helper()
	if err != nil {
		h.t.Fatal(err)
	}
	return kv
}

func testCRUD(t *testing.T, b store.Backend) {
	defer b.Close()
	c := ctx(t)
	if b.ClusterID() == "" {
		t.Fatal("empty cluster ID")
	}
	r0 := (h{t}).rev(b.Rev(c))
	r1 := (h{t}).rev(b.Create(c, "/a/x", []byte("1")))
	if r1 <= r0 {
		t.Fatalf("create rev %d not after %d", r1, r0)
	}
	if _, err := b.Create(c, "/a/x", []byte("again")); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	kv := (h{t}).kv(b.Get(c, "/a/x"))
	if string(kv.Value) != "1" || kv.CreateRev != r1 || kv.ModRev != r1 {
		t.Fatalf("get = %+v", kv)
	}
	if _, err := b.Update(c, "/a/x", []byte("2"), r1+100); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	r2 := (h{t}).rev(b.Update(c, "/a/x", []byte("2"), r1))
	kv = (h{t}).kv(b.Get(c, "/a/x"))
	if string(kv.Value) != "2" || kv.CreateRev != r1 || kv.ModRev != r2 {
		t.Fatalf("after update get = %+v", kv)
	}
	r3 := (h{t}).rev(b.Update(c, "/a/x", []byte("3"), 0))
	if _, _, err := b.Delete(c, "/a/x", r2); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale delete: %v, want ErrConflict", err)
	}
	r4, prev, err := b.Delete(c, "/a/x", r3)
	if err != nil || r4 <= r3 || string(prev.Value) != "3" {
		t.Fatalf("delete = %d %+v %v", r4, prev, err)
	}
	if _, err := b.Get(c, "/a/x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := b.Update(c, "/a/x", []byte("4"), 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
	if _, _, err := b.Delete(c, "/a/x", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
	// Failed writes take no revision.
	if got := (h{t}).rev(b.Rev(c)); got != r4 {
		t.Fatalf("rev = %d after failed writes, want %d", got, r4)
	}
}

func testList(t *testing.T, b store.Backend) {
	defer b.Close()
	c := ctx(t)
	for _, k := range []string{"/p/ns1/a", "/p/ns1/b", "/p/ns2/a", "/q/a", "/p/ns1/c"} {
		(h{t}).rev(b.Create(c, k, []byte(k)))
	}
	kvs, rev := listKeys(t, b, "/p/ns1/", "", 0)
	if fmt.Sprint(kvs) != "[/p/ns1/a /p/ns1/b /p/ns1/c]" {
		t.Fatalf("list = %v", kvs)
	}
	if want := (h{t}).rev(b.Rev(c)); rev != want {
		t.Fatalf("list rev %d, want %d", rev, want)
	}
	page1, _ := listKeys(t, b, "/p/", "", 2)
	page2, _ := listKeys(t, b, "/p/", page1[len(page1)-1], 2)
	page3, _ := listKeys(t, b, "/p/", page2[len(page2)-1], 2)
	if fmt.Sprint(page1, page2, page3) != "[/p/ns1/a /p/ns1/b] [/p/ns1/c /p/ns2/a] []" {
		t.Fatalf("pages = %v %v %v", page1, page2, page3)
	}
}

// testKeys checks that Keys answers as List does, without the values.
func testKeys(t *testing.T, b store.Backend) {
	defer b.Close()
	c := ctx(t)
	for _, k := range []string{"/k/a", "/k/b", "/k/c", "/k/d", "/l/a"} {
		(h{t}).rev(b.Create(c, k, bytes.Repeat([]byte(k), 100)))
	}
	(h{t}).rev(b.Update(c, "/k/b", []byte("changed"), 0)) // a ModRev apart from its CreateRev
	for _, tc := range []struct {
		prefix, after string
		limit         int
	}{{"", "", 0}, {"/k/", "", 0}, {"/k/", "/k/a", 2}, {"/k/", "/k/c", 0}, {"/nothing/", "", 0}} {
		list, lrev, err := b.List(c, tc.prefix, tc.after, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		keys, krev, err := b.Keys(c, tc.prefix, tc.after, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		for i := range list {
			list[i].Value = nil
		}
		if fmt.Sprint(keys) != fmt.Sprint(list) || krev != lrev {
			t.Errorf("Keys(%q, %q, %d) = %v at %d; List without values = %v at %d", tc.prefix, tc.after, tc.limit, keys, krev, list, lrev)
		}
		for _, kv := range keys {
			if kv.Value != nil {
				t.Errorf("Keys gave %s a value of %d bytes", kv.Key, len(kv.Value))
			}
		}
	}
}

func listKeys(t *testing.T, b store.Backend, prefix, after string, limit int) ([]string, int64) {
	kvs, rev, err := b.List(ctx(t), prefix, after, limit)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, kv := range kvs {
		if string(kv.Value) != kv.Key {
			t.Fatalf("value of %s = %q", kv.Key, kv.Value)
		}
		out = append(out, kv.Key)
	}
	return out, rev
}

func testWatch(t *testing.T, b store.Backend) {
	defer b.Close()
	c := ctx(t)
	start := (h{t}).rev(b.Rev(c))
	r1 := (h{t}).rev(b.Create(c, "/w/a", []byte("1")))
	r2 := (h{t}).rev(b.Update(c, "/w/a", []byte("2"), r1))
	ch, err := b.Watch(c, start)
	if err != nil {
		t.Fatal(err)
	}
	r3, _, err := b.Delete(c, "/w/a", r2)
	if err != nil {
		t.Fatal(err)
	}
	r4 := (h{t}).rev(b.Create(c, "/w/b", []byte("b")))
	var got []store.Event
	for len(got) < 4 {
		select {
		case resp, ok := <-ch:
			if !ok || resp.Err != nil {
				t.Fatalf("watch ended: %v", resp.Err)
			}
			got = append(got, resp.Events...)
		case <-c.Done():
			t.Fatalf("timed out with %d events", len(got))
		}
	}
	want := []struct {
		typ  store.EventType
		rev  int64
		val  string
		prev string
	}{{store.Put, r1, "1", ""}, {store.Put, r2, "2", "1"}, {store.Delete, r3, "", "2"}, {store.Put, r4, "b", ""}}
	for i, w := range want {
		e := got[i]
		prev := ""
		if e.Prev != nil {
			prev = string(e.Prev.Value)
		}
		if e.Type != w.typ || e.Rev() != w.rev || string(e.KV.Value) != w.val || prev != w.prev {
			t.Errorf("event %d = %s rev %d %q prev %q; want %s rev %d %q prev %q", i, e.Type, e.Rev(), e.KV.Value, prev, w.typ, w.rev, w.val, w.prev)
		}
	}
}

func testWatchBounds(t *testing.T, b store.Backend) {
	defer b.Close()
	c := ctx(t)
	(h{t}).rev(b.Create(c, "/x", []byte("1")))
	rev := (h{t}).rev(b.Rev(c))
	if _, err := b.Watch(c, rev+1000); err == nil {
		t.Fatal("watch from the future accepted")
	}
	wc, cancel := context.WithCancel(c)
	ch, err := b.Watch(wc, rev)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	for range ch { // must close once the context ends
	}
}
