package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/store"
	"github.com/tetherhub/tether/store/etcdstore/etcdtest"
	"github.com/tetherhub/tether/store/storetest"
)

var prefixes atomic.Int64

// openTest opens a store on srv under a prefix no other test uses, closed when the test ends.
func openTest(t *testing.T, srv *etcdtest.Server, mutate func(*Config)) *Store {
	t.Helper()
	cfg := DefaultConfig(srv.Endpoint())
	cfg.Prefix = fmt.Sprintf("/test%d", prefixes.Add(1))
	cfg.DialTimeout, cfg.RequestTimeout = 5*time.Second, 5*time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, cfg, testLog(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testLog sends the store's log to the test's, shown with -v or when the test fails.
func testLog(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.ConsoleWriter{Out: logWriter{t}, NoColor: true, PartsExclude: []string{zerolog.TimestampFieldName}}).Level(zerolog.InfoLevel)
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestConformance(t *testing.T) {
	srv := etcdtest.Start(t)
	storetest.RunHarness(t, storetest.Harness{
		Open: func(t *testing.T) store.Backend { return openTest(t, srv, nil) },
		OpenLimited: func(t *testing.T, history int64, watchBuffer int) store.Backend {
			return openTest(t, srv, func(c *Config) {
				c.History, c.WatchBuffer, c.CompactInterval = history, watchBuffer, 20*time.Millisecond
			})
		},
		Reopen: func(t *testing.T, b store.Backend) store.Backend {
			s := b.(*Store)
			s.Close()
			return reopen(t, s.cfg)
		},
	})
}

// reopen opens a store with cfg, as a restarted process would.
func reopen(t *testing.T, cfg Config) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, cfg, testLog(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func bg(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// must turns (revision, error) results into revisions, failing the test on error.
type must struct{ t *testing.T }

func (m must) rev(rev int64, err error) int64 {
	m.t.Helper()
	if err != nil {
		m.t.Fatal(err)
	}
	return rev
}

// next reads the next n events from ch, failing on an error or after d.
func next(t *testing.T, ch <-chan store.WatchResponse, n int, d time.Duration) []store.Event {
	t.Helper()
	var got []store.Event
	timeout := time.After(d)
	for len(got) < n {
		select {
		case resp, ok := <-ch:
			if !ok || resp.Err != nil {
				t.Fatalf("watch ended after %d of %d events: %v", len(got), n, resp.Err)
			}
			got = append(got, resp.Events...)
		case <-timeout:
			t.Fatalf("%d of %d events after %s", len(got), n, d)
		}
	}
	return got
}

// end reads ch until it ends and returns the final error.
func end(t *testing.T, ch <-chan store.WatchResponse, d time.Duration) error {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case resp, ok := <-ch:
			if !ok {
				return nil
			}
			if resp.Err != nil {
				return resp.Err
			}
		case <-timeout:
			t.Fatalf("the watch did not end within %s", d)
		}
	}
}

func revs(evs []store.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Rev()
	}
	return out
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig("127.0.0.1:2379")
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"no endpoints":       func(c *Config) { c.Endpoints = nil },
		"empty endpoint":     func(c *Config) { c.Endpoints = []string{" "} },
		"dial timeout":       func(c *Config) { c.DialTimeout = 0 },
		"request timeout":    func(c *Config) { c.RequestTimeout = -time.Second },
		"cert without key":   func(c *Config) { c.CertFile = "c.pem" },
		"prefix without /":   func(c *Config) { c.Prefix = "tether" },
		"prefix ending in /": func(c *Config) { c.Prefix = "/tether/" },
		"prefix with !":      func(c *Config) { c.Prefix = "/a!b" },
		"empty prefix":       func(c *Config) { c.Prefix = "" },
		"history":            func(c *Config) { c.History = 0 },
		"compact interval":   func(c *Config) { c.CompactInterval = -1 },
		"watch buffer":       func(c *Config) { c.WatchBuffer = 0 },
		"list page":          func(c *Config) { c.ListPage = 0 },
	} {
		c := ok
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestOpenFailsWithinDialTimeout(t *testing.T) {
	cfg := DefaultConfig("http://127.0.0.1:1") // nothing listens there
	cfg.DialTimeout = 500 * time.Millisecond
	start := time.Now()
	_, err := Open(context.Background(), cfg, zerolog.Nop(), nil)
	if err == nil {
		t.Fatal("open without etcd succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("open took %s with a dial timeout of 500ms", d)
	}
}

func TestBadKeys(t *testing.T) {
	srv := etcdtest.Start(t)
	s := openTest(t, srv, nil)
	ctx := bg(t)
	if _, err := s.Create(ctx, "!rev", nil); !errors.Is(err, ErrBadKey) {
		t.Fatalf("create of a key without /: %v, want ErrBadKey", err)
	}
	if _, err := s.Get(ctx, "x"); !errors.Is(err, ErrBadKey) {
		t.Fatalf("get of a key without /: %v, want ErrBadKey", err)
	}
	if _, err := s.Create(ctx, "/a", nil); err != nil {
		t.Fatal(err)
	}
	if kvs, _, err := s.List(ctx, "x", "", 0); err != nil || len(kvs) != 0 {
		t.Fatalf("list of a prefix without / = %v, %v; want nothing", kvs, err)
	}
}

// TestOpenTogetherAgreeOnClusterID: replicas starting at once on a fresh prefix create the
// cluster ID once.
func TestOpenTogetherAgreeOnClusterID(t *testing.T) {
	srv := etcdtest.Start(t)
	cfg := DefaultConfig(srv.Endpoint())
	cfg.Prefix = "/together"
	sameFromAll(t, cfg, "cluster IDs", func(s *Store, _ int) (string, error) { return s.ClusterID(), nil })
}

// sameFromAll opens 8 stores on cfg at once, asks each what fn returns, and fails unless all
// answer the same non-empty value, which it returns.
func sameFromAll(t *testing.T, cfg Config, what string, fn func(s *Store, i int) (string, error)) string {
	t.Helper()
	const n = 8
	got := make(chan string, n)
	for i := range n {
		go func() {
			s, err := Open(bg(t), cfg, zerolog.Nop(), nil)
			if err != nil {
				t.Error(err)
				got <- ""
				return
			}
			defer s.Close()
			v, err := fn(s, i)
			if err != nil {
				t.Error(err)
			}
			got <- v
		}()
	}
	first := <-got
	for range n - 1 {
		if v := <-got; v != first || v == "" {
			t.Fatalf("%s %q and %q", what, first, v)
		}
	}
	return first
}

// TestClaimCATogether: replicas claiming at once on a fresh prefix all get the one CA stored
// first; a later claim gets it too; it is the store's own key, outside every list and watch;
// another prefix has its own.
func TestClaimCATogether(t *testing.T) {
	srv := etcdtest.Start(t)
	cfg := DefaultConfig(srv.Endpoint())
	cfg.Prefix = "/ca"
	first := sameFromAll(t, cfg, "claims got", func(s *Store, i int) (string, error) {
		v, err := s.ClaimCA(bg(t), []byte(fmt.Sprint("ca-", i)))
		return string(v), err
	})
	s := openTest(t, srv, func(c *Config) { c.Prefix = "/ca" })
	if v, err := s.ClaimCA(bg(t), []byte("late")); err != nil || string(v) != first {
		t.Fatalf("a later claim = %q, %v; want %q", v, err, first)
	}
	if kvs, _, err := s.List(bg(t), "", "", 0); err != nil || len(kvs) != 0 {
		t.Fatalf("list of everything = %v, %v; want nothing", kvs, err)
	}
	other := openTest(t, srv, func(c *Config) { c.Prefix = "/other" })
	if v, err := other.ClaimCA(bg(t), []byte("mine")); err != nil || string(v) != "mine" {
		t.Fatalf("another prefix's claim = %q, %v; want its own", v, err)
	}
}

// TestListPages: a list longer than a page is read in pages at one revision.
func TestListPages(t *testing.T) {
	srv := etcdtest.Start(t)
	s := openTest(t, srv, func(c *Config) { c.ListPage = 7 })
	ctx := bg(t)
	var want []string
	for i := range 50 {
		k := fmt.Sprintf("/p/%02d", i)
		want = append(want, k)
		(must{t}).rev(s.Create(ctx, k, []byte(k)))
	}
	head := (must{t}).rev(s.Rev(ctx))
	kvs, rev, err := s.List(ctx, "/p/", "", 0)
	if err != nil || rev != head || len(kvs) != 50 {
		t.Fatalf("list = %d keys at %d, %v; want 50 at %d", len(kvs), rev, err, head)
	}
	for i, kv := range kvs {
		if kv.Key != want[i] || string(kv.Value) != want[i] {
			t.Fatalf("key %d = %s", i, kv.Key)
		}
	}
	kvs, _, err = s.List(ctx, "/p/", "/p/09", 20)
	if err != nil || len(kvs) != 20 || kvs[0].Key != "/p/10" || kvs[19].Key != "/p/29" {
		t.Fatalf("page after /p/09 = %d keys from %v", len(kvs), kvs)
	}
}

// TestTwoClustersOneEtcd: stores under different prefixes see only their own keys and changes,
// and one's writes do not move the other's revision.
func TestTwoClustersOneEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	a, b := openTest(t, srv, nil), openTest(t, srv, nil)
	ctx := bg(t)
	if a.ClusterID() == b.ClusterID() {
		t.Fatal("two prefixes share a cluster ID")
	}
	ra := (must{t}).rev(a.Create(ctx, "/k", []byte("a")))
	wa, err := a.Watch(ctx, ra)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		(must{t}).rev(b.Create(ctx, fmt.Sprintf("/k%d", i), []byte("b")))
	}
	if got := (must{t}).rev(a.Rev(ctx)); got != ra {
		t.Fatalf("a's rev moved to %d with b's writes, want %d", got, ra)
	}
	kvs, rev, err := a.List(ctx, "/", "", 0)
	if err != nil || len(kvs) != 1 || string(kvs[0].Value) != "a" || rev != ra {
		t.Fatalf("a lists %+v at %d, %v", kvs, rev, err)
	}
	if kvs, _, _ := b.List(ctx, "/", "", 0); len(kvs) != 5 {
		t.Fatalf("b lists %d keys, want 5", len(kvs))
	}
	if _, err := a.Get(ctx, "/k0"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a gets b's key: %v", err)
	}
	ra2 := (must{t}).rev(a.Update(ctx, "/k", []byte("a2"), ra))
	evs := next(t, wa, 1, 10*time.Second)
	if len(evs) != 1 || evs[0].Rev() != ra2 || string(evs[0].Prev.Value) != "a" {
		t.Fatalf("a's watch = %v", evs)
	}
	// A watch from a revision inside the gap b's writes made is no watch from the future.
	if ch, err := a.Watch(ctx, ra2); err != nil {
		t.Fatal(err)
	} else if _, err := a.Watch(ctx, ra2+1); !errors.Is(err, store.ErrFutureRev) {
		t.Fatalf("watch past a's head: %v, want ErrFutureRev", err)
	} else {
		_ = ch
	}
}

// TestCompactionByOthers: etcd compacted by an operator or by another cluster on the same etcd.
// The history a store answers with is its own last change at the compaction, so an idle store's
// watches go on; a store whose changes were compacted says so.
func TestCompactionByOthers(t *testing.T) {
	srv := etcdtest.Start(t)
	idle := openTest(t, srv, func(c *Config) { c.CompactInterval = 0 })
	busy := openTest(t, srv, func(c *Config) { c.CompactInterval = 0; c.History = 5 })
	ctx := bg(t)
	var idleRevs []int64
	for i := range 10 {
		idleRevs = append(idleRevs, (must{t}).rev(idle.Create(ctx, fmt.Sprintf("/i/%d", i), nil)))
	}
	// An operator compacts at the fifth change of the idle store.
	if _, err := idle.client.Compact(ctx, idleRevs[4]); err != nil {
		t.Fatal(err)
	}
	if c := (must{t}).rev(idle.Compacted(ctx)); c != idleRevs[4] {
		t.Fatalf("compacted = %d after etcd compaction at %d, want that change's revision", c, idleRevs[4])
	}
	if _, err := idle.Watch(ctx, idleRevs[3]); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("watch from before the compaction: %v, want ErrCompacted", err)
	}
	ch, err := idle.Watch(ctx, idleRevs[4])
	if err != nil {
		t.Fatal(err)
	}
	if got := revs(next(t, ch, 5, 10*time.Second)); fmt.Sprint(got) != fmt.Sprint(idleRevs[5:]) {
		t.Fatalf("watch from compaction = %v, want %v", got, idleRevs[5:])
	}
	// The other cluster writes a lot and compacts past everything the idle one did.
	for i := range 30 {
		(must{t}).rev(busy.Create(ctx, fmt.Sprintf("/b/%d", i), nil))
	}
	if err := busy.compactOnce(ctx); err != nil {
		t.Fatal(err)
	}
	last := idleRevs[len(idleRevs)-1]
	if c := (must{t}).rev(idle.Compacted(ctx)); c != last {
		t.Fatalf("idle compacted = %d, want its last change %d: nothing of it was lost", c, last)
	}
	// The watch opened before goes on, and so does one opened now from the idle store's head.
	ch2, err := idle.Watch(ctx, last)
	if err != nil {
		t.Fatalf("watch from the idle store's head after the other's compaction: %v", err)
	}
	r := (must{t}).rev(idle.Create(ctx, "/i/new", nil))
	for _, c := range []<-chan store.WatchResponse{ch, ch2} {
		if got := revs(next(t, c, 1, 10*time.Second)); fmt.Sprint(got) != fmt.Sprint([]int64{r}) {
			t.Fatalf("after the other's compaction the watch got %v, want [%d]", got, r)
		}
	}
}

// TestHistoryIsPaced: a watcher whose buffer is smaller than the history it asks for gets all
// of it, at its own pace; only changes after the watch began count against its buffer.
func TestHistoryIsPaced(t *testing.T) {
	srv := etcdtest.Start(t)
	s := openTest(t, srv, func(c *Config) { c.WatchBuffer = 5 })
	ctx := bg(t)
	start := (must{t}).rev(s.Rev(ctx))
	const writers, each = 8, 150 // more than one etcd response (1000 revisions) of history
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := s.Create(ctx, fmt.Sprintf("/h/%d/%03d", g, i), nil); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	ch, err := s.Watch(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a slow consumer: let etcd send everything it will
	evs := next(t, ch, writers*each, 20*time.Second)
	for i := 1; i < len(evs); i++ {
		if evs[i].Rev() <= evs[i-1].Rev() {
			t.Fatalf("event %d at %d after %d", i, evs[i].Rev(), evs[i-1].Rev())
		}
	}
	if n := counter(t, s.metrics.restarts.WithLabelValues("paced")); n == 0 {
		t.Fatal("the history was not paced")
	}
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestValueTooLarge: a value past etcd's request limit (1.5 MiB by default) is store.ErrTooLarge,
// which a caller can tell from an outage: trying it again cannot succeed (a report that makes
// one is dropped as too large, instead of being sent again for ever).
func TestValueTooLarge(t *testing.T) {
	srv := etcdtest.Start(t)
	s := openTest(t, srv, nil)
	big := make([]byte, 2<<20)
	_, err := s.Create(bg(t), "/big", big)
	if !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("create of 2 MiB: %v, want ErrTooLarge", err)
	}
	rev, err := s.Create(bg(t), "/small", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(bg(t), "/small", big, rev); !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("update to 2 MiB: %v, want ErrTooLarge", err)
	}
}

// TestReplaceClusterID: ReplaceClusterID naming the cluster's ID gives it a new one, which
// replicas opened after it read; one started with the same flag after it, or with it too,
// replaces nothing more.
func TestReplaceClusterID(t *testing.T) {
	srv := etcdtest.Start(t)
	var prefix string
	a := openTest(t, srv, func(c *Config) { prefix = c.Prefix })
	old := a.ClusterID()
	replace := func(c *Config) { c.Prefix, c.ReplaceClusterID = prefix, old }
	b := openTest(t, srv, replace)
	if b.ClusterID() == old {
		t.Fatal("ReplaceClusterID of the cluster's own ID kept it")
	}
	if c := openTest(t, srv, replace); c.ClusterID() != b.ClusterID() {
		t.Fatalf("a replica started with the same flag after it reads %s, want %s", c.ClusterID(), b.ClusterID())
	}
	if d := openTest(t, srv, func(c *Config) { c.Prefix = prefix }); d.ClusterID() != b.ClusterID() {
		t.Fatalf("a replica opened after it reads %s, want %s", d.ClusterID(), b.ClusterID())
	}
}
