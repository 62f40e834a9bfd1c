package etcdstore

import (
	"context"
	"testing"
	"time"

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
		deadline := time.Now().Add(within)
		for {
			alive, err := b.ReplicaAlive(bg(t), name)
			if err == nil && alive == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s alive = %v, %v after %s; want %v", name, alive, err, within, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
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
	deadline := time.Now().Add(5 * time.Second)
	for alive, _ := b.ReplicaAlive(bg(t), "same"); !alive; alive, _ = b.ReplicaAlive(bg(t), "same") {
		if time.Now().After(deadline) {
			t.Fatal("the first replica's key never appeared")
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	<-doneA // revoked: the key is gone
	deadline = time.Now().Add(5 * time.Second)
	for alive, _ := b.ReplicaAlive(bg(t), "same"); !alive; alive, _ = b.ReplicaAlive(bg(t), "same") {
		if time.Now().After(deadline) {
			t.Fatal("the waiting replica never took the key")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopB()
	if err := <-doneB; err != nil {
		t.Fatal(err)
	}
	if alive, err := a.ReplicaAlive(bg(t), "same"); err != nil || alive {
		t.Fatalf("after both stopped: alive %v, %v", alive, err)
	}
}
