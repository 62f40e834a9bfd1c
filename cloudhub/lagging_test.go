package cloudhub

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// laggingReplica starts a second hub over r's store whose index stops at its first live change
// until release is called, as a replica whose watch of the store is behind. tune, if not nil,
// changes the hub's config and dependencies.
func laggingReplica(t *testing.T, r *rig, tune func(*Config, *Deps)) (lagging *rig, release func()) {
	t.Helper()
	ix, err := index.New(index.DefaultConfig(), r.b, resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	hold, held := make(chan struct{}), make(chan struct{})
	var once sync.Once
	ix.Subscribe(func(u index.Update) {
		if !u.Historical {
			once.Do(func() { close(held); <-hold })
		}
	})
	var released sync.Once
	unhold := func() { released.Do(func() { close(hold) }) }
	lagging = replicaOver(t, r, ix, tune)
	t.Cleanup(unhold) // cleanups run last first: the index is let go before the server stops
	return lagging, func() { <-held; unhold() }
}

// replicaOver starts another hub over r's store, with index ix (not yet running).
func replicaOver(t *testing.T, r *rig, ix *index.Index, tune func(*Config, *Deps)) *rig {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	deps := Deps{Index: ix, Registry: resource.New(), ClusterID: r.b.ClusterID(), Status: nopStatus{}, Reports: nopReports{},
		TLS: &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}, Log: zerolog.Nop()}
	if tune != nil {
		tune(&cfg, &deps)
	}
	h, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go ix.Run(ctx)
	<-ix.Ready()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		conn, err := h.upgrader.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		go h.serveConn(conn, req.URL.Query().Get("node"), time.Now(), time.Now().Add(24*time.Hour), req.RemoteAddr)
	}))
	t.Cleanup(func() { srv.Close(); cancel() })
	return &rig{t: t, b: r.b, ix: ix, hub: h, srv: srv}
}

// edgeAhead makes changes on replica a that a lagging replica has not processed, syncs an edge
// n1 to them through a and disconnects it; it returns the edge, the head and what it holds.
func edgeAhead(t *testing.T, a *rig) (e *edge, head int64, before map[string]string) {
	t.Helper()
	a.put(cmKey("default", "c1"), cmJSON("default", "c1", "new"))
	head = a.put(podKey("default", "p2"), podJSON("default", "p2", "n1"))
	e = newEdge(t, "n1")
	e.connect(a)
	e.converge(a, head, 5*time.Second)
	e.ws.Close()
	before = map[string]string{}
	for k, v := range e.objs {
		before[k] = v
	}
	return e, head, before
}

// TestLaggingReplicaCatchesUpFirst: an edge moving to a replica that has not yet processed
// the changes it has (its watch of the shared store is behind) is caught up incrementally once
// that replica has them, not reset from its older view, which took a newer ConfigMap back to
// an older version and swept a newer Pod from the edge.
func TestLaggingReplicaCatchesUpFirst(t *testing.T) {
	a := newRig(t, rigOpts{})
	a.put(nodeKey("n1"), nodeJSON("n1", ""))
	a.put(cmKey("default", "c1"), cmJSON("default", "c1", "old"))
	a.put(podKey("default", "p1"), podJSON("default", "p1", "n1", "c1"))
	b, release := laggingReplica(t, a, nil)

	// Changes replica a routes and b has not processed.
	e, head, before := edgeAhead(t, a)

	e.connect(b) // the edge moves to b, which catches up 300 ms later
	time.AfterFunc(300*time.Millisecond, release)
	e.log = nil
	e.syncTo(int64(head)+1, 2*time.Second)
	if e.mode != protocol.ModeIncremental || len(e.log) == 0 || e.log[0] != "welcome incremental" {
		t.Errorf("mode %s from the lagging replica, want incremental (messages %v)", modeName(e.mode), e.log)
	}
	for k, v := range before {
		if got, ok := e.objs[k]; !ok {
			t.Errorf("%s was swept from the edge", k)
		} else if got != v {
			t.Errorf("%s went back to an older version on the edge", k)
		}
	}
}

// TestLaggingReplicaSendsTheNodeBack: a replica still behind the node after its wait, while the
// store has what the node has seen, refuses the session (CodeBehind) instead of resetting the
// node from its older view; the node reconnects once the replica has caught up and is caught up
// incrementally, keeping every newer object. Before, it was reset and took them back.
func TestLaggingReplicaSendsTheNodeBack(t *testing.T) {
	a := newRig(t, rigOpts{})
	a.put(nodeKey("n1"), nodeJSON("n1", ""))
	a.put(cmKey("default", "c1"), cmJSON("default", "c1", "old"))
	b, release := laggingReplica(t, a, func(cfg *Config, d *Deps) {
		cfg.HandshakeTimeout = 800 * time.Millisecond // a wait of 200 ms
		d.StoreRev = a.b.Rev
	})
	e, head, before := edgeAhead(t, a)

	e.connect(b) // b stays behind
	if got := e.awaitError(5*time.Second, "the lagging replica's answer"); got.Code != protocol.CodeBehind {
		t.Fatalf("the lagging replica answered %v, want %s", got, protocol.CodeBehind)
	}
	e.ws.Close()
	release()
	deadline := time.Now().Add(5 * time.Second)
	for b.hub.processed.Load() < int64(head) {
		if time.Now().After(deadline) {
			t.Fatal("the replica never caught up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.connect(b)
	e.log = nil
	e.syncTo(int64(head)+1, 2*time.Second)
	if e.mode != protocol.ModeIncremental || len(e.log) == 0 || e.log[0] != "welcome incremental" {
		t.Errorf("mode %s once the replica caught up, want incremental (messages %v)", modeName(e.mode), e.log)
	}
	for k, v := range before {
		if got, ok := e.objs[k]; !ok || got != v {
			t.Errorf("%s changed on the edge (present: %v)", k, ok)
		}
	}
}

// TestQuietRestartWelcomesUpToDateNodes: a replica started over a store with no change since
// (and no history to replay) counts as having processed what its index listed, so a node at the
// store's head is welcomed, not refused as ahead of it (CodeBehind) until some change comes.
func TestQuietRestartWelcomesUpToDateNodes(t *testing.T) {
	a := newRig(t, rigOpts{})
	a.put(nodeKey("n1"), nodeJSON("n1", ""))
	head := a.put(cmKey("default", "c1"), cmJSON("default", "c1", "v"))
	e := newEdge(t, "n1")
	e.connect(a)
	e.converge(a, head, 5*time.Second)
	e.ws.Close()

	icfg := index.DefaultConfig()
	icfg.Preload = 0 // nothing replayed: no change reaches the hub before the node does
	ix, err := index.New(icfg, a.b, resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b := replicaOver(t, a, ix, func(cfg *Config, d *Deps) {
		cfg.HandshakeTimeout = 800 * time.Millisecond
		d.StoreRev = a.b.Rev
	})
	e.connect(b)
	var refused *protocol.Error
	e.awaitMessage(3*time.Second, "the restarted replica's answer", func(m protocol.Message) bool {
		refused, _ = m.(*protocol.Error)
		_, welcome := m.(*protocol.Welcome)
		return welcome || refused != nil
	})
	if refused != nil {
		t.Fatalf("a node at the store's head was refused by a replica over that store: %v", refused)
	}
}
