package etcdstore

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhub/tether/store"
	"github.com/tetherhub/tether/store/etcdstore/etcdtest"
)

// proxy forwards TCP to etcd and can cut every connection, refusing new ones until healed: a
// network partition between one replica and etcd.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex // guards the fields below
	down  bool
	conns []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: strings.TrimPrefix(target, "http://")}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *proxy) endpoint() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) heal() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// TestWatchAcrossPartition: a replica cut off from etcd keeps its watch. Changes made meanwhile
// arrive once it is back; a compaction meanwhile that took only other clusters' revisions costs
// nothing; one that took changes the watch had not had ends it with store.ErrCompacted, which
// tells the index to list again.
func TestWatchAcrossPartition(t *testing.T) {
	srv := etcdtest.Start(t)
	p := newProxy(t, srv.Endpoint())
	direct := openTest(t, srv, func(c *Config) { c.CompactInterval = 0; c.History = 5 })
	cut := openTest(t, srv, func(c *Config) {
		c.Endpoints, c.Prefix, c.CompactInterval, c.RequestTimeout = []string{p.endpoint()}, direct.cfg.Prefix, 0, time.Second
	})
	other := openTest(t, srv, func(c *Config) { c.CompactInterval = 0; c.History = 5 })
	ctx := bg(t)
	if cut.ClusterID() != direct.ClusterID() {
		t.Fatal("two stores on one prefix have different cluster IDs")
	}
	ch, err := cut.Watch(ctx, (must{t}).rev(cut.Rev(ctx)))
	if err != nil {
		t.Fatal(err)
	}
	write := func(n int) (out []int64) {
		for range n {
			out = append(out, (must{t}).rev(direct.Create(ctx, fmt.Sprintf("/k/%d", time.Now().UnixNano()), nil)))
		}
		return out
	}
	want := write(3)
	if got := revs(next(t, ch, 3, 10*time.Second)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("before the cut: %v, want %v", got, want)
	}

	p.cut()
	if _, err := cut.Get(ctx, "/k"); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get while cut off: %v, want a failure", err)
	}
	want = write(5)
	p.heal()
	if got := revs(next(t, ch, 5, 20*time.Second)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after healing: %v, want %v", got, want)
	}

	// Away while another cluster writes and compacts: nothing of this one is lost.
	p.cut()
	for i := range 20 {
		(must{t}).rev(other.Create(ctx, fmt.Sprintf("/o/%d", i), nil))
	}
	if err := other.compactOnce(ctx); err != nil {
		t.Fatal(err)
	}
	p.heal()
	want = write(1)
	if got := revs(next(t, ch, 1, 20*time.Second)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the other cluster's compaction: %v, want %v", got, want)
	}
	if counter(t, cut.metrics.restarts.WithLabelValues("compacted")) != 1 {
		t.Fatal("the watch was not opened again after the compaction")
	}

	// Away while this cluster's own changes are compacted: the watch cannot go on.
	p.cut()
	write(20)
	if err := direct.compactOnce(ctx); err != nil {
		t.Fatal(err)
	}
	p.heal()
	if err := end(t, ch, 20*time.Second); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("watch ended with %v, want ErrCompacted", err)
	}
}

// TestEtcdRestart: while etcd is down calls fail within the request timeout; once it is back
// the store works again without being reopened, and an open watch resumes where it was: the
// changes made after the restart arrive, none twice, none missing.
func TestEtcdRestart(t *testing.T) {
	srv := etcdtest.Start(t)
	s := openTest(t, srv, func(c *Config) { c.RequestTimeout = time.Second })
	ctx := bg(t)
	r1 := (must{t}).rev(s.Create(ctx, "/a", []byte("1")))
	ch, err := s.Watch(ctx, r1)
	if err != nil {
		t.Fatal(err)
	}
	r2 := (must{t}).rev(s.Update(ctx, "/a", []byte("2"), r1))
	if got := revs(next(t, ch, 1, 10*time.Second)); fmt.Sprint(got) != fmt.Sprint([]int64{r2}) {
		t.Fatalf("before the restart: %v", got)
	}

	srv.Stop()
	start := time.Now()
	if _, err := s.Rev(ctx); err == nil {
		t.Fatal("Rev succeeded with etcd stopped")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("a call with etcd down took %s, request timeout 1s", d)
	}
	if counter(t, s.metrics.errors.WithLabelValues("rev")) == 0 {
		t.Fatal("the failed request was not counted")
	}
	srv.Restart()
	var r3 int64
	deadline := time.Now().Add(20 * time.Second)
	for {
		r3, err = s.Update(ctx, "/a", []byte("3"), r2)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write 20s after etcd restarted: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r4, _, err := s.Delete(ctx, "/a", r3)
	if err != nil {
		t.Fatal(err)
	}
	evs := next(t, ch, 2, 20*time.Second)
	if fmt.Sprint(revs(evs)) != fmt.Sprint([]int64{r3, r4}) || string(evs[0].Prev.Value) != "2" || string(evs[1].Prev.Value) != "3" {
		t.Fatalf("after the restart: %v", evs)
	}
}

// TestEtcdReplaced: an etcd wiped (or restored) under a running store is noticed: every call and
// every watch ends with ErrEtcdChanged instead of mixing two histories.
func TestEtcdReplaced(t *testing.T) {
	srv := etcdtest.Start(t)
	s := openTest(t, srv, nil)
	ctx := bg(t)
	r := (must{t}).rev(s.Create(ctx, "/a", nil))
	ch, err := s.Watch(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	srv.Wipe()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := s.Rev(ctx)
		if errors.Is(err, ErrEtcdChanged) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Rev on the new etcd: %v, want ErrEtcdChanged", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := s.Create(ctx, "/b", nil); !errors.Is(err, ErrEtcdChanged) {
		t.Fatalf("create on the new etcd: %v, want ErrEtcdChanged", err)
	}
	if err := end(t, ch, 10*time.Second); !errors.Is(err, ErrEtcdChanged) {
		t.Fatalf("watch ended with %v, want ErrEtcdChanged", err)
	}
}
