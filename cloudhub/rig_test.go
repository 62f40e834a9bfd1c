package cloudhub

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
	"github.com/tetherhub/tether/store/boltstore"
	"github.com/tetherhub/tether/view"
)

type nopStatus struct{}

func (nopStatus) SetReady(context.Context, string, bool, string, time.Time, time.Duration) error {
	return nil
}

type nopReports struct{}

func (nopReports) Apply(context.Context, string, int64, *protocol.Report) error { return nil }

// rig is a store, an index and a hub in one process; edges connect over a plain websocket to
// an httptest server that hands the connection to serveConn (the TLS identity step is skipped).
type rig struct {
	t      *testing.T
	b      *boltstore.Store
	ix     *index.Index
	hub    *Hub
	srv    *httptest.Server
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

type rigOpts struct {
	path    string
	cfg     func(*Config)
	preSub  func(index.Update) // subscribed before the hub
	reports Reports            // nil: reports are taken and dropped
	epochs  Epochs             // nil: sessions are not numbered (one replica)
	status  Status             // nil: heartbeats are taken and dropped
	forward Forwarder          // nil: edges' requests are answered 501
}

func newRig(t *testing.T, o rigOpts) *rig {
	t.Helper()
	if o.path == "" {
		o.path = filepath.Join(t.TempDir(), "cloud.db")
	}
	b, err := boltstore.Open(boltstore.DefaultConfig(o.path), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := index.New(index.DefaultConfig(), b, resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.preSub != nil {
		ix.Subscribe(o.preSub)
	}
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	var reps Reports = nopReports{}
	if o.reports != nil {
		reps = o.reports
	}
	var status Status = nopStatus{}
	if o.status != nil {
		status = o.status
	}
	h, err := New(cfg, Deps{Index: ix, Registry: resource.New(), ClusterID: b.ClusterID(), Status: status, Reports: reps, Epochs: o.epochs, Forwarder: o.forward,
		TLS: &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, b: b, ix: ix, hub: h, done: make(chan error, 1)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		conn, err := h.upgrader.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		go h.serveConn(conn, req.URL.Query().Get("node"), time.Now(), time.Now().Add(24*time.Hour), req.RemoteAddr)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- ix.Run(ctx) }()
	<-ix.Ready()
	t.Cleanup(r.close)
	return r
}

func (r *rig) close() {
	r.once.Do(func() {
		r.cancel()
		r.srv.CloseClientConnections()
		r.srv.Close()
		<-r.done
		r.b.Close()
	})
}

func (r *rig) put(key, val string) int64 {
	r.t.Helper()
	ctx := context.Background()
	rev, err := r.b.Update(ctx, key, []byte(val), 0)
	if err == store.ErrNotFound || (err != nil && strings.Contains(err.Error(), "not found")) {
		rev, err = r.b.Create(ctx, key, []byte(val))
	}
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.ix.WaitFor(ctx, rev); err != nil {
		r.t.Fatal(err)
	}
	return rev
}

func (r *rig) del(key string) int64 {
	r.t.Helper()
	rev, _, err := r.b.Delete(context.Background(), key, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	r.ix.WaitFor(context.Background(), rev)
	return rev
}

// want is the node's view now, key → bytes.
func (r *rig) want(node string) map[string]string {
	snap := r.ix.Snapshot()
	out := map[string]string{}
	for _, o := range view.Full(snap, node) {
		if _, raw := view.Visible(snap, node, o.StoreKey); raw != nil {
			out[o.StoreKey] = string(raw)
		}
	}
	return out
}

// edge is a minimal faithful edge: it applies messages by revision per key, sweeps on ResetEnd,
// moves its cursor on Progress/ResetEnd, and acks cumulatively after each frame.
type edge struct {
	t       *testing.T
	node    string
	cluster string
	cursor  uint64
	objs    map[string]string
	revs    map[string]uint64
	mu      sync.Mutex
	ws      *websocket.Conn
	mode    protocol.Mode
	log     []string
	noAck   bool
}

func newEdge(t *testing.T, node string) *edge {
	return &edge{t: t, node: node, objs: map[string]string{}, revs: map[string]uint64{}}
}

func storeKeyOf(k protocol.Key) string {
	return resource.StoreKey(resource.Key{Resource: k.Resource, Namespace: k.Namespace, Name: k.Name})
}

func (e *edge) connect(r *rig) {
	e.t.Helper()
	url := "ws" + strings.TrimPrefix(r.srv.URL, "http") + ConnectPath + "?node=" + e.node
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.ws = ws
	// Held until the test ends: a test that stops using its edge after connecting must not
	// have the connection collected (and closed by its finalizer) under it.
	e.t.Cleanup(func() { ws.Close() })
	ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Hello{Version: protocol.Version, Node: e.node, ClusterID: e.cluster, Cursor: e.cursor}))
}

// converge reads until the cursor reaches rev (within d) and checks that the edge then holds
// exactly the node's view in r.
func (e *edge) converge(r *rig, rev int64, d time.Duration) {
	e.t.Helper()
	if !e.syncTo(rev, d) {
		e.t.Fatalf("no progress to %d: %v", rev, e.log)
	}
	if diff := e.diff(r.want(e.node)); len(diff) > 0 {
		e.t.Fatalf("edge at cursor %d differs from its view: %v\nmessages: %v", e.cursor, diff, e.log)
	}
}

// awaitMessage reads the hub's frames until one holds a message that match accepts, within d;
// the test fails with what and the read's error if the connection ends or d passes first.
func (e *edge) awaitMessage(d time.Duration, what string, match func(protocol.Message) bool) {
	e.t.Helper()
	e.ws.SetReadDeadline(time.Now().Add(d))
	for {
		_, frame, err := e.ws.ReadMessage()
		if err != nil {
			e.t.Fatalf("%s: %v", what, err)
		}
		msgs, _ := protocol.Decode(frame)
		for _, m := range msgs {
			if match(m) {
				return
			}
		}
	}
}

// awaitError is awaitMessage for the hub's Error, which it returns.
func (e *edge) awaitError(d time.Duration, what string) *protocol.Error {
	e.t.Helper()
	var got *protocol.Error
	e.awaitMessage(d, what, func(m protocol.Message) bool {
		got, _ = m.(*protocol.Error)
		return got != nil
	})
	return got
}

// syncTo reads until the cursor reaches rev (or timeout); returns false on timeout.
func (e *edge) syncTo(rev int64, d time.Duration) bool {
	deadline := time.Now().Add(d)
	var inReset bool
	var named map[string]bool
	for e.cursor < uint64(rev) {
		e.ws.SetReadDeadline(deadline)
		_, frame, err := e.ws.ReadMessage()
		if err != nil {
			return false
		}
		msgs, err := protocol.Decode(frame)
		if err != nil {
			e.t.Fatal(err)
		}
		var ack uint64
		for _, m := range msgs {
			if s, ok := protocol.SeqOf(m); ok {
				ack = s
			}
			e.mu.Lock()
			switch m := m.(type) {
			case *protocol.Welcome:
				e.mode, e.cluster = m.Mode, m.ClusterID
				e.log = append(e.log, "welcome "+modeName(m.Mode))
			case *protocol.Upsert:
				k := storeKeyOf(m.Key)
				if inReset {
					named[k] = true
				}
				e.log = append(e.log, "upsert "+k)
				if m.Rev > e.revs[k] || e.objs[k] == "" {
					e.objs[k], e.revs[k] = string(m.Object), m.Rev
				}
			case *protocol.Delete:
				k := storeKeyOf(m.Key)
				e.log = append(e.log, "delete "+k)
				if m.Rev >= e.revs[k] {
					delete(e.objs, k)
					e.revs[k] = m.Rev
				}
			case *protocol.ResetBegin:
				inReset, named = true, map[string]bool{}
				e.log = append(e.log, "resetbegin")
			case *protocol.ResetEnd:
				for k := range e.objs {
					if !named[k] {
						delete(e.objs, k)
					}
				}
				inReset = false
				e.cursor = m.Through
				e.log = append(e.log, "resetend")
			case *protocol.Progress:
				e.cursor = m.Through
			case *protocol.Error:
				e.log = append(e.log, "error "+m.Message)
			}
			e.mu.Unlock()
		}
		if ack > 0 && !e.noAck {
			e.ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Ack{Seq: ack}))
		}
	}
	return true
}

func (e *edge) diff(want map[string]string) []string {
	var out []string
	for k, v := range want {
		if got, ok := e.objs[k]; !ok {
			out = append(out, "missing "+k)
		} else if got != v {
			out = append(out, "stale "+k)
		}
	}
	for k := range e.objs {
		if _, ok := want[k]; !ok {
			out = append(out, "extra "+k)
		}
	}
	sort.Strings(out)
	return out
}

func nodeJSON(name string, labels string) string {
	if labels == "" {
		labels = "{}"
	}
	return `{"apiVersion":"v1","kind":"Node","metadata":{"name":"` + name + `","uid":"uid-` + name + `","labels":` + labels +
		`,"annotations":{"` + AnnotationJoinedUID + `":"uid-` + name + `","` + AnnotationCertificatesSince + `":"2026-01-01T00:00:00Z"}}}`
}

func podJSON(ns, name, node string, cms ...string) string {
	vols := []string{}
	for _, c := range cms {
		vols = append(vols, `{"name":"`+c+`","configMap":{"name":"`+c+`"}}`)
	}
	return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"` + name + `","namespace":"` + ns + `"},"spec":{"nodeName":"` + node + `","volumes":[` + strings.Join(vols, ",") + `]}}`
}

func cmJSON(ns, name, v string) string {
	return `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"` + name + `","namespace":"` + ns + `"},"data":{"v":"` + v + `"}}`
}

func nodeKey(n string) string {
	return resource.StoreKey(resource.Key{Resource: resource.Nodes, Name: n})
}
func podKey(ns, n string) string {
	return resource.StoreKey(resource.Key{Resource: resource.Pods, Namespace: ns, Name: n})
}
func cmKey(ns, n string) string {
	return resource.StoreKey(resource.Key{Resource: resource.ConfigMaps, Namespace: ns, Name: n})
}
func secretKey(ns, n string) string {
	return resource.StoreKey(resource.Key{Resource: resource.Secrets, Namespace: ns, Name: n})
}

// TestRigSanity: a plain sync converges.
func TestRigSanity(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.put(nodeKey("n1"), nodeJSON("n1", ""))
	r.put(cmKey("default", "c1"), cmJSON("default", "c1", "1"))
	rev := r.put(podKey("default", "p1"), podJSON("default", "p1", "n1", "c1"))
	e := newEdge(t, "n1")
	e.connect(r)
	e.converge(r, rev, 5*time.Second)
	e.converge(r, r.del(podKey("default", "p1")), 10*time.Second)
}
