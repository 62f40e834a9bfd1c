package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/tetherhub/tether/store"
)

// change is a write the suite made, and what the event for it must say. Revisions need not be
// consecutive (an etcd shared with other writers has gaps), only increasing.
type change struct {
	typ       store.EventType
	key, val  string
	rev       int64
	createRev int64     // of the key's current incarnation (0 for a delete)
	prev      *store.KV // the key before the change; nil for a create
}

// writer makes writes through b with optimistic concurrency and records them.
type writer struct {
	t   *testing.T
	b   store.Backend
	c   context.Context
	cur map[string]store.KV
	log []change
}

func newWriter(t *testing.T, b store.Backend) *writer {
	return &writer{t: t, b: b, c: ctx(t), cur: map[string]store.KV{}}
}

// put creates key or updates it at its current revision.
func (w *writer) put(key, val string) int64 {
	w.t.Helper()
	prev, ok := w.cur[key]
	var rev int64
	var err error
	if ok {
		rev, err = w.b.Update(w.c, key, []byte(val), prev.ModRev)
	} else {
		rev, err = w.b.Create(w.c, key, []byte(val))
	}
	if err != nil {
		w.t.Fatalf("put %s: %v", key, err)
	}
	w.after(rev)
	ch := change{typ: store.Put, key: key, val: val, rev: rev, createRev: rev}
	if ok {
		p := prev
		ch.prev, ch.createRev = &p, prev.CreateRev
	}
	w.cur[key] = store.KV{Key: key, Value: []byte(val), CreateRev: ch.createRev, ModRev: rev}
	w.log = append(w.log, ch)
	return rev
}

func (w *writer) del(key string) int64 {
	w.t.Helper()
	prev, ok := w.cur[key]
	if !ok {
		w.t.Fatalf("suite bug: delete of %s, which it never wrote", key)
	}
	rev, got, err := w.b.Delete(w.c, key, prev.ModRev)
	if err != nil {
		w.t.Fatalf("delete %s: %v", key, err)
	}
	w.after(rev)
	if string(got.Value) != string(prev.Value) || got.ModRev != prev.ModRev || got.CreateRev != prev.CreateRev {
		w.t.Fatalf("delete %s returned %+v, want %+v", key, got, prev)
	}
	delete(w.cur, key)
	w.log = append(w.log, change{typ: store.Delete, key: key, rev: rev, prev: &prev})
	return rev
}

func (w *writer) after(rev int64) {
	w.t.Helper()
	if n := len(w.log); n > 0 && rev <= w.log[n-1].rev {
		w.t.Fatalf("revision %d after %d: revisions must increase", rev, w.log[n-1].rev)
	}
}

// since returns the recorded changes after rev.
func (w *writer) since(rev int64) []change {
	i := sort.Search(len(w.log), func(i int) bool { return w.log[i].rev > rev })
	return w.log[i:]
}

// checkEvents compares events with the changes that made them, field by field.
func checkEvents(t *testing.T, got []store.Event, want []change) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d: %s", len(got), len(want), describe(got))
	}
	for i, w := range want {
		e := got[i]
		bad := e.Type != w.typ || e.KV.Key != w.key || e.Rev() != w.rev || e.KV.CreateRev != w.createRev ||
			(w.typ == store.Put && string(e.KV.Value) != w.val) || (w.prev == nil) != (e.Prev == nil)
		if !bad && w.prev != nil {
			p := e.Prev
			bad = p.Key != w.key || string(p.Value) != string(w.prev.Value) || p.ModRev != w.prev.ModRev || p.CreateRev != w.prev.CreateRev
		}
		if bad {
			t.Fatalf("event %d = %s, want %s %s rev %d create %d value %q prev %v", i, describe(got[i:i+1]), w.typ, w.key, w.rev, w.createRev, w.val, w.prev)
		}
	}
}

func describe(evs []store.Event) string {
	var b bytes.Buffer
	for _, e := range evs {
		fmt.Fprintf(&b, "[%s %s rev %d create %d value %q", e.Type, e.KV.Key, e.Rev(), e.KV.CreateRev, e.KV.Value)
		if e.Prev != nil {
			fmt.Fprintf(&b, " prev %q@%d/%d", e.Prev.Value, e.Prev.ModRev, e.Prev.CreateRev)
		}
		b.WriteString("] ")
	}
	return b.String()
}

// collect reads n events from ch, failing on an error, an early end or a timeout.
func collect(t *testing.T, ch <-chan store.WatchResponse, n int) []store.Event {
	t.Helper()
	var got []store.Event
	timeout := time.After(15 * time.Second)
	for len(got) < n {
		select {
		case resp, ok := <-ch:
			if !ok || resp.Err != nil {
				t.Fatalf("watch ended after %d of %d events: %v", len(got), n, resp.Err)
			}
			got = append(got, resp.Events...)
		case <-timeout:
			t.Fatalf("timed out with %d of %d events", len(got), n)
		}
	}
	return got
}

// watchErr returns the error a watch from rev ends with at once: from Watch itself or as its
// first response (the contract allows either).
func watchErr(t *testing.T, b store.Backend, rev int64) error {
	t.Helper()
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	ch, err := b.Watch(c, rev)
	if err != nil {
		return err
	}
	select {
	case resp := <-ch:
		return resp.Err
	case <-time.After(2 * time.Second):
		return nil
	}
}

func testValues(t *testing.T, b store.Backend) {
	defer b.Close()
	c := ctx(t)
	start := (h{t}).rev(b.Rev(c))
	bin := []byte{0, 0xff, 1, '\n', 0xc3, 0x28}
	(h{t}).rev(b.Create(c, "/v/empty", nil))
	(h{t}).rev(b.Create(c, "/v/bin", bin))
	if kv := (h{t}).kv(b.Get(c, "/v/empty")); len(kv.Value) != 0 {
		t.Fatalf("empty value came back as %q", kv.Value)
	}
	if kv := (h{t}).kv(b.Get(c, "/v/bin")); !bytes.Equal(kv.Value, bin) {
		t.Fatalf("binary value came back as %q", kv.Value)
	}
	(h{t}).rev(b.Update(c, "/v/bin", []byte{}, 0))
	ch, err := b.Watch(c, start)
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, ch, 3)
	if len(evs[0].KV.Value) != 0 || !bytes.Equal(evs[1].KV.Value, bin) || len(evs[2].KV.Value) != 0 || !bytes.Equal(evs[2].Prev.Value, bin) {
		t.Fatalf("events = %s", describe(evs))
	}
}

func testRevIsLastChange(t *testing.T, b store.Backend) {
	defer b.Close()
	c := ctx(t)
	w := newWriter(t, b)
	check := func(want int64) {
		t.Helper()
		if got := (h{t}).rev(b.Rev(c)); got != want {
			t.Fatalf("Rev = %d, want %d (the last change)", got, want)
		}
		if _, rev, err := b.List(c, "/", "", 0); err != nil || rev != want {
			t.Fatalf("List rev = %d, %v; want %d", rev, err, want)
		}
	}
	check((h{t}).rev(b.Rev(c)))
	check(w.put("/r/a", "1"))
	check(w.put("/r/b", "1"))
	check(w.put("/r/a", "2"))
	last := w.del("/r/b")
	check(last)
	if _, err := b.Create(c, "/r/a", nil); !errors.Is(err, store.ErrExists) {
		t.Fatalf("create existing: %v", err)
	}
	if _, _, err := b.Delete(c, "/r/b", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
	check(last)
	if kv := (h{t}).kv(b.Get(c, "/r/a")); kv.ModRev != w.cur["/r/a"].ModRev {
		t.Fatalf("get = %+v, want mod rev %d", kv, w.cur["/r/a"].ModRev)
	}
}

func testOptimistic(t *testing.T, b store.Backend) {
	defer b.Close()
	c := ctx(t)
	const n = 16
	race := func(fn func(i int) error) (won int, lost []error) {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = fn(i) }()
		}
		wg.Wait()
		for _, err := range errs {
			if err == nil {
				won++
			} else {
				lost = append(lost, err)
			}
		}
		return won, lost
	}
	won, lost := race(func(i int) error { _, err := b.Create(c, "/o/k", []byte(fmt.Sprint(i))); return err })
	for _, err := range lost {
		if !errors.Is(err, store.ErrExists) {
			t.Fatalf("losing create: %v, want ErrExists", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d creates of one key won", won)
	}
	cur := (h{t}).kv(b.Get(c, "/o/k"))
	won, lost = race(func(i int) error { _, err := b.Update(c, "/o/k", []byte(fmt.Sprint(i)), cur.ModRev); return err })
	for _, err := range lost {
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("losing update: %v, want ErrConflict", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d updates at one revision won", won)
	}
	cur = (h{t}).kv(b.Get(c, "/o/k"))
	won, lost = race(func(int) error { _, _, err := b.Delete(c, "/o/k", cur.ModRev); return err })
	for _, err := range lost {
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("losing delete: %v, want ErrConflict or ErrNotFound", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d deletes at one revision won", won)
	}
}

func testListEdges(t *testing.T, b store.Backend) {
	defer b.Close()
	c := ctx(t)
	for _, k := range []string{"/l/b", "/l/ab", "/m/x", "/l/a", "/l/a/b"} {
		(h{t}).rev(b.Create(c, k, []byte(k)))
	}
	for _, tc := range []struct {
		prefix, after string
		limit         int
		want          string
	}{
		{"", "", 0, "[/l/a /l/a/b /l/ab /l/b /m/x]"},
		{"/", "", 0, "[/l/a /l/a/b /l/ab /l/b /m/x]"},
		{"/l/a", "", 0, "[/l/a /l/a/b /l/ab]"},
		{"/l/", "/l/a/b", 0, "[/l/ab /l/b]"},
		{"/l/", "/l/aa", 0, "[/l/ab /l/b]"},
		{"/l/", "/a", 0, "[/l/a /l/a/b /l/ab /l/b]"},
		{"/l/", "/z", 0, "[]"},
		{"/l/", "", 100, "[/l/a /l/a/b /l/ab /l/b]"},
		{"/l/", "/l/a", 1, "[/l/a/b]"},
		{"/nothing/", "", 0, "[]"},
	} {
		got, _ := listKeys(t, b, tc.prefix, tc.after, tc.limit)
		if fmt.Sprint(got) != tc.want {
			t.Errorf("List(%q, %q, %d) = %v, want %s", tc.prefix, tc.after, tc.limit, got, tc.want)
		}
	}
	del, _, err := b.Delete(c, "/l/ab", 0)
	if err != nil {
		t.Fatal(err)
	}
	got, rev := listKeys(t, b, "/l/", "", 0)
	if fmt.Sprint(got) != "[/l/a /l/a/b /l/b]" || rev != del {
		t.Fatalf("after delete: %v at %d, want 3 keys at %d", got, rev, del)
	}
	if _, rev := listKeys(t, b, "/nothing/", "", 0); rev != del {
		t.Fatalf("empty list at %d, want %d", rev, del)
	}
}

func testWatchFromEvery(t *testing.T, b store.Backend) {
	defer b.Close()
	c := ctx(t)
	w := newWriter(t, b)
	start := (h{t}).rev(b.Rev(c))
	w.put("/e/a", "1")
	w.put("/e/b", "1")
	w.put("/e/a", "2")
	w.del("/e/b")
	w.put("/e/c", "1")
	w.put("/e/c", "2")
	w.put("/e/b", "2") // a new incarnation: a create again
	w.del("/e/a")
	w.put("/e/c", "3")
	starts := []int64{start}
	for _, ch := range w.log {
		starts = append(starts, ch.rev)
	}
	for _, from := range starts {
		want := w.since(from)
		wc, cancel := context.WithCancel(c)
		ch, err := b.Watch(wc, from)
		if err != nil {
			t.Fatalf("watch from %d: %v", from, err)
		}
		if len(want) > 0 {
			checkEvents(t, collect(t, ch, len(want)), want)
		}
		cancel()
	}
	// From the head, the next change is the first event.
	head := (h{t}).rev(b.Rev(c))
	ch, err := b.Watch(c, head)
	if err != nil {
		t.Fatal(err)
	}
	w.put("/e/d", "1")
	checkEvents(t, collect(t, ch, 1), w.since(head))
}

func testWatchConcurrent(t *testing.T, b store.Backend) {
	defer b.Close()
	c := ctx(t)
	start := (h{t}).rev(b.Rev(c))
	ch, err := b.Watch(c, start)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 25
	revs := make(chan int64, writers*each)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				k := fmt.Sprintf("/cw/%d/%02d", g, i)
				r, err := b.Create(c, k, []byte(k))
				if err != nil {
					t.Error(err)
					return
				}
				revs <- r
			}
		}()
	}
	wg.Wait()
	close(revs)
	if t.Failed() {
		return
	}
	written := map[int64]bool{}
	for r := range revs {
		written[r] = true
	}
	evs := collect(t, ch, writers*each)
	last := start
	for _, e := range evs {
		if e.Rev() <= last {
			t.Fatalf("event at %d after %d: out of order or repeated", e.Rev(), last)
		}
		last = e.Rev()
		if !written[e.Rev()] || string(e.KV.Value) != e.KV.Key || e.Type != store.Put || e.Prev != nil {
			t.Fatalf("unexpected event %s", describe([]store.Event{e}))
		}
	}
}

func testClose(t *testing.T, b store.Backend) {
	c := ctx(t)
	(h{t}).rev(b.Create(c, "/c/a", []byte("1")))
	ch, err := b.Watch(c, (h{t}).rev(b.Rev(c)))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	calls := map[string]error{}
	_, calls["Get"] = b.Get(c, "/c/a")
	_, _, calls["List"] = b.List(c, "/", "", 0)
	_, calls["Rev"] = b.Rev(c)
	_, calls["Compacted"] = b.Compacted(c)
	_, calls["Create"] = b.Create(c, "/c/b", nil)
	_, calls["Update"] = b.Update(c, "/c/a", nil, 0)
	_, _, calls["Delete"] = b.Delete(c, "/c/a", 0)
	_, calls["Watch"] = b.Watch(c, 0)
	for name, err := range calls {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("a watch open at Close did not end")
		}
	}
}

// testCompaction needs a backend keeping about 10 revisions of history.
func testCompaction(t *testing.T, b store.Backend) {
	defer b.Close()
	c := ctx(t)
	w := newWriter(t, b)
	keys := []string{"/h/a", "/h/b", "/h/c", "/h/d"}
	for i := range 60 {
		k := keys[i%len(keys)]
		if _, ok := w.cur[k]; ok && i%7 == 0 {
			w.del(k)
		} else {
			w.put(k, fmt.Sprint(i))
		}
	}
	// Wait for the history to be compacted well past the start, and to stay put (a backend
	// compacting on a timer may still be catching up with the writes).
	var compacted, before int64 = 0, -1
	deadline := time.Now().Add(15 * time.Second)
	for compacted < w.log[30].rev || compacted != before {
		if time.Now().After(deadline) {
			t.Fatalf("compacted = %d after 60 changes with history 10; want at least %d, and still", compacted, w.log[30].rev)
		}
		time.Sleep(200 * time.Millisecond)
		before, compacted = compacted, (h{t}).rev(b.Compacted(c))
	}
	if head := (h{t}).rev(b.Rev(c)); compacted > head {
		t.Fatalf("compacted %d is past the head %d", compacted, head)
	}
	if err := watchErr(t, b, compacted-1); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("watch from %d, before the history (after %d): %v, want ErrCompacted", compacted-1, compacted, err)
	}
	if err := watchErr(t, b, w.log[0].rev); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("watch from the first change %d: %v, want ErrCompacted", w.log[0].rev, err)
	}
	// From the compacted revision on, every later change arrives, with its previous value.
	ch, err := b.Watch(c, compacted)
	if err != nil {
		t.Fatalf("watch from compacted %d: %v", compacted, err)
	}
	want := w.since(compacted)
	checkEvents(t, collect(t, ch, len(want)), want)
	// And the store goes on: the current state is intact.
	kvs, _, err := b.List(c, "/h/", "", 0)
	if err != nil || len(kvs) != len(w.cur) {
		t.Fatalf("list after compaction: %d keys, %v; want %d", len(kvs), err, len(w.cur))
	}
}

// testSlowWatcher needs a backend that drops a watcher 5 events behind.
func testSlowWatcher(t *testing.T, b store.Backend) {
	defer b.Close()
	c := ctx(t)
	w := newWriter(t, b)
	start := (h{t}).rev(b.Rev(c))
	ch, err := b.Watch(c, start)
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads ch while the writes go far past the watcher's buffer.
	for i := range 300 {
		w.put(fmt.Sprintf("/s/%03d", i), "v")
	}
	var got []store.Event
	var end error
	timeout := time.After(15 * time.Second)
	for end == nil {
		select {
		case resp, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %d events without an error", len(got))
			}
			got = append(got, resp.Events...)
			end = resp.Err
		case <-timeout:
			t.Fatalf("no ErrSlowWatcher after %d events", len(got))
		}
	}
	if !errors.Is(end, store.ErrSlowWatcher) {
		t.Fatalf("watch ended with %v, want ErrSlowWatcher", end)
	}
	if len(got) >= len(w.log) {
		t.Fatalf("all %d events were delivered and then ErrSlowWatcher", len(got))
	}
	// What did arrive is a gapless beginning; the rest comes from a new watch at the last
	// revision seen, as the contract tells the watcher to do.
	checkEvents(t, got, w.log[:len(got)])
	from := start
	if len(got) > 0 {
		from = got[len(got)-1].Rev()
	}
	ch, err = b.Watch(c, from)
	if err != nil {
		t.Fatal(err)
	}
	rest := w.since(from)
	checkEvents(t, collect(t, ch, len(rest)), rest)
}

func testReopen(t *testing.T, b store.Backend, reopen func(*testing.T, store.Backend) store.Backend) {
	c := ctx(t)
	w := newWriter(t, b)
	start := (h{t}).rev(b.Rev(c))
	w.put("/p/a", "1")
	w.put("/p/b", "1")
	w.put("/p/a", "2")
	w.del("/p/b")
	id, head := b.ClusterID(), (h{t}).rev(b.Rev(c))
	b = reopen(t, b)
	defer b.Close()
	if b.ClusterID() != id {
		t.Fatalf("cluster ID %s after reopen, was %s", b.ClusterID(), id)
	}
	if got := (h{t}).rev(b.Rev(c)); got != head {
		t.Fatalf("rev %d after reopen, was %d", got, head)
	}
	if kv := (h{t}).kv(b.Get(c, "/p/a")); string(kv.Value) != "2" || kv.ModRev != w.cur["/p/a"].ModRev {
		t.Fatalf("get after reopen = %+v", kv)
	}
	ch, err := b.Watch(c, start)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, collect(t, ch, len(w.log)), w.log)
	if r := (h{t}).rev(b.Create(c, "/p/c", nil)); r <= head {
		t.Fatalf("write after reopen at %d, not after %d", r, head)
	}
}
