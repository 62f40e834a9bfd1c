package etcdstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/internal/syncbuf"
	"github.com/tetherhub/tether/store/etcdstore/etcdtest"
)

// TestReplicaLiveness: a replica's key lives while KeepReplica runs; it is gone at once when
// KeepReplica's context ends (a clean stop), and within the lease's TTL when the replica just
// stops talking to etcd (a crash: here, its client closed). WatchReplicasGone tells of each
// going, once, and of nothing else.
func TestReplicaLiveness(t *testing.T) {
	srv := etcdtest.Start(t)
	a := openTest(t, srv, nil)
	b := openTest(t, srv, func(c *Config) { c.Prefix = a.cfg.Prefix })
	gone := make(chan string, 10)
	wctx, wstop := context.WithCancel(context.Background())
	wdone := make(chan error, 1)
	go func() { wdone <- b.WatchReplicasGone(wctx, func(name string) { gone <- name }) }()
	t.Cleanup(func() { wstop(); <-wdone })
	time.Sleep(200 * time.Millisecond) // the watch is open
	wantGone := func(name string, within time.Duration) {
		t.Helper()
		select {
		case got := <-gone:
			if got != name {
				t.Fatalf("told %q gone, want %q", got, name)
			}
		case <-time.After(within):
			t.Fatalf("not told %q gone within %s", name, within)
		}
	}
	waitAlive := func(name string, want bool, within time.Duration) {
		t.Helper()
		waitReplica(t, b, name, want, within)
	}
	waitAlive("r1", false, time.Second) // never started

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.KeepReplica(ctx, "r1", 2*time.Second) }()
	waitAlive("r1", true, 5*time.Second)
	time.Sleep(3 * time.Second) // past one TTL: the lease is kept alive
	waitAlive("r1", true, 0)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitAlive("r1", false, time.Second) // revoked on the way out
	wantGone("r1", time.Second)

	c := openTest(t, srv, func(c *Config) { c.Prefix = a.cfg.Prefix })
	cdone := make(chan error, 1)
	go func() { cdone <- c.KeepReplica(context.Background(), "r2", 2*time.Second) }()
	waitAlive("r2", true, 5*time.Second)
	c.Close() // no revoke: the lease runs out
	select {
	case <-cdone:
	case <-time.After(5 * time.Second):
		t.Fatal("KeepReplica went on after its store closed")
	}
	start := time.Now()
	waitAlive("r2", false, 6*time.Second)
	if d := time.Since(start); d < time.Second {
		t.Fatalf("r2's key went after %s: its lease was revoked, not left to expire", d)
	}
	wantGone("r2", time.Second)
	select {
	case name := <-gone:
		t.Fatalf("told %q gone once more", name)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestReplicaNameTaken: a second KeepReplica of a name that runs waits without touching the
// first one's key; it takes the key once the first stops.
func TestReplicaNameTaken(t *testing.T) {
	srv := etcdtest.Start(t)
	a := openTest(t, srv, nil)
	b := openTest(t, srv, func(c *Config) { c.Prefix = a.cfg.Prefix })
	ctxA, stopA := context.WithCancel(context.Background())
	doneA := make(chan error, 1)
	go func() { doneA <- a.KeepReplica(ctxA, "same", 3*time.Second) }()
	waitReplica(t, b, "same", true, 5*time.Second) // the first replica's key appears
	// A replica that waited and stops must leave the running one's key alone: had it put the
	// key on its own lease, its revoke would take the key away.
	ctxW, stopW := context.WithCancel(context.Background())
	doneW := make(chan error, 1)
	go func() { doneW <- b.KeepReplica(ctxW, "same", 3*time.Second) }()
	time.Sleep(2 * time.Second) // it tried at least twice (every TTL/3)
	stopW()
	if err := <-doneW; err != nil {
		t.Fatal(err)
	}
	if alive, err := b.ReplicaAlive(bg(t), "same"); err != nil || !alive {
		t.Fatalf("after the waiting replica stopped, the running one's key: alive %v, %v", alive, err)
	}

	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	doneB := make(chan error, 1)
	go func() { doneB <- b.KeepReplica(ctxB, "same", 3*time.Second) }()
	time.Sleep(2 * time.Second)
	stopA()
	<-doneA                                        // revoked: the key is gone
	waitReplica(t, b, "same", true, 5*time.Second) // the waiting replica takes the key
	stopB()
	if err := <-doneB; err != nil {
		t.Fatal(err)
	}
	if alive, err := a.ReplicaAlive(bg(t), "same"); err != nil || alive {
		t.Fatalf("after both stopped: alive %v, %v", alive, err)
	}
}

// TestReplicaWatchOutlivesEtcd: while etcd is down the watch of replica keys logs at most one
// warning (a broken watch is opened again less and less often, not every second); once etcd
// is back, a replica that goes is told of as before.
func TestReplicaWatchOutlivesEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	a := openTest(t, srv, nil)
	var logged syncbuf.Buffer
	b := openTest(t, srv, func(c *Config) { c.Prefix = a.cfg.Prefix })
	b.log = zerolog.New(&logged).Level(zerolog.DebugLevel)
	gone := make(chan string, 10)
	wctx, wstop := context.WithCancel(context.Background())
	wdone := make(chan error, 1)
	go func() { wdone <- b.WatchReplicasGone(wctx, func(name string) { gone <- name }) }()
	t.Cleanup(func() { wstop(); <-wdone })
	time.Sleep(200 * time.Millisecond) // the watch is open

	srv.Stop()
	time.Sleep(8 * time.Second)
	warns, breaks := strings.Count(logged.String(), `"level":"warn"`), strings.Count(logged.String(), "the watch of replica keys broke")
	t.Logf("etcd down 8 s: %d breaks logged, %d of them warnings", breaks, warns)
	if warns > 1 || breaks > 4 { // opened again after 1, 2 and 4 s at most, not every second
		t.Fatalf("%d breaks and %d warnings in 8 s of etcd down:\n%s", breaks, warns, logged.String())
	}
	srv.Restart()
	if breaks > 0 {
		deadline := time.Now().Add(20 * time.Second)
		for strings.Count(logged.String(), "the watch of replica keys is open again") == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the watch did not open again within 20 s of etcd's restart:\n%s", logged.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.KeepReplica(ctx, "r3", 2*time.Second) }()
	waitReplica(t, b, "r3", true, 20*time.Second) // a's client redials etcd with a backoff of its own
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	went := time.Now()
	select {
	case name := <-gone:
		if name != "r3" {
			t.Fatalf("told %q gone, want r3", name)
		}
		t.Logf("told r3 gone %s after it went", time.Since(went).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatalf("not told r3 gone within 5 s:\n%s", logged.String())
	}
}

// waitReplica waits until s sees replica name alive (or not, as want says), failing the test
// after within.
func waitReplica(t *testing.T, s *Store, name string, want bool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		alive, err := s.ReplicaAlive(bg(t), name)
		if err == nil && alive == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s alive = %v, %v after %s; want %v", name, alive, err, within, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
