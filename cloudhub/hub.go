package cloudhub

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/internal/wsframe"
	"github.com/tetherhub/tether/pki"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/view"
)

// ConnectPath is where edges open their websocket.
const ConnectPath = "/v1/connect"

// A join records on the Node which certificates of its name the hub accepts: those issued to
// this Node object (AnnotationJoinedUID holds its UID) at or after AnnotationCertificatesSince
// (RFC 3339 to the nanosecond; pki.IssuedAt of the certificate the join signed). A Node deleted
// and created again has another UID, so no certificate of the old one gets in; a second join of
// a live name retires the first one's certificate, even within the same second. Renewals over
// a session leave both as they are.
const (
	AnnotationJoinedUID         = "tether.dev/joined-uid"
	AnnotationCertificatesSince = "tether.dev/certificates-since"
)

// ErrBadReport is what Reports.Apply wraps when a report itself is malformed.
var ErrBadReport = errors.New("cloudhub: bad report")

// ErrHeldElsewhere is what Status.SetReady returns when it leaves a node Ready because another
// replica has its session.
var ErrHeldElsewhere = errors.New("cloudhub: the node is connected to another replica")

// ErrNotMarked is what Status.SetReady returns when a NotReady mark writes nothing: the node
// shows not Ready already, or has no Ready condition (it never connected).
var ErrNotMarked = errors.New("cloudhub: the node shows not Ready already")

// ErrBackHere is what Status.SetReady returns when it leaves a node Ready because the node
// connected to this replica again while the hub was marking it NotReady (see GoneSince).
var ErrBackHere = errors.New("cloudhub: the node connected to this replica again")

type goneSinceKey struct{}

// WithGoneSince is the context of a NotReady mark: the hub has timed the node's absence since t.
func WithGoneSince(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, goneSinceKey{}, t)
}

// GoneSince is, in the context of Status.SetReady's NotReady mark, when the hub started timing
// the node's absence. A Ready condition this replica wrote with a heartbeat after it means the
// node came back here while the mark was on its way (a write on a busy store takes seconds):
// SetReady must then leave it Ready and return ErrBackHere, or the mark lands after the node's
// Ready and a connected node shows NotReady.
func GoneSince(ctx context.Context) (time.Time, bool) {
	t, ok := ctx.Value(goneSinceKey{}).(time.Time)
	return t, ok
}

// HolderStoppedError is what Status.SetReady returns when the replica that held a node has
// stopped less than a grace period ago: the node is on its way to another replica (its edge
// redials within seconds), so it is looked at again after Wait, not marked NotReady at once.
// It is an ErrHeldElsewhere.
type HolderStoppedError struct {
	Holder string
	Wait   time.Duration
}

func (e *HolderStoppedError) Error() string {
	return fmt.Sprintf("cloudhub: the node's replica %s stopped; its grace period ends in %s", e.Holder, e.Wait)
}

// Is makes a HolderStoppedError an ErrHeldElsewhere.
func (e *HolderStoppedError) Is(target error) bool { return target == ErrHeldElsewhere }

// Status records what the hub learns about nodes; the cloud implements it over Node objects.
type Status interface {
	// SetReady records the node's Ready condition and its last heartbeat. Ready, it writes only
	// when something changed or the heartbeat is older than interval, so that reconnects and
	// restarts do not write (and route) every Node. Not ready (the node is gone past its grace
	// period), it leaves alone a node that another replica reports connected with a heartbeat
	// less than interval before heartbeat, and returns ErrHeldElsewhere; a HolderStoppedError
	// when that replica has stopped less than a grace period ago.
	SetReady(ctx context.Context, node string, ready bool, reason string, heartbeat time.Time, interval time.Duration) error
}

// Reports applies what edges send up; the cloud implements it over the store.
type Reports interface {
	// Apply stores one report from node, received on the session numbered epoch (see Epochs;
	// 0 without them). An error wrapping ErrBadReport means the report is malformed: it is
	// acknowledged (the edge drops it) and counted. Any other error means it could not be
	// stored: the session ends and the edge sends it again on its next one.
	//
	// A report is older than every report of a later session of its node: Apply may drop it
	// (and return nil) once an object holds what a session with a greater epoch reported.
	Apply(ctx context.Context, node string, epoch int64, r *protocol.Report) error
}

// Epochs numbers sessions when several replicas serve one store (etcd). One replica applies a
// node's reports in order, across a session and the one that replaced it; two replicas do not
// see each other's sessions, and a report the node sent to one could be applied after newer
// reports it sent to the other. Each session takes a number before it reads its first report,
// and Reports.Apply keeps an object from going back to an older session's report.
type Epochs interface {
	// Next returns a number greater than any Next returned before it was called, on any
	// replica.
	Next(ctx context.Context) (int64, error)
}

// Forwarder executes API requests edges relay from their metaserver; the cloud decides what a
// node may change.
type Forwarder interface {
	Forward(ctx context.Context, node string, req *protocol.Request) *protocol.Response
}

// Signer renews node certificates; *pki.CA implements it. issued is the issue time the
// certificate records (pki.IssuedAt), apart from now, which its validity starts from.
type Signer interface {
	SignCSRIssued(csrPEM []byte, nodeName string, validity time.Duration, now, issued time.Time) ([]byte, error)
}

// Hub accepts edge connections and keeps each node's view in sync.
type Hub struct {
	cfg          Config
	ix           *index.Index
	registry     *resource.Registry
	cluster      string
	status       Status
	reports      Reports
	epochs       Epochs
	storeRev     func(context.Context) (int64, error) // optional (Deps.StoreRev)
	forwarder    Forwarder
	signer       Signer
	certValidity time.Duration
	tlsConfig    *tls.Config
	log          zerolog.Logger
	sampled      zerolog.Logger // for what a storm of connects can log by the thousand
	metrics      *metrics
	now          func() time.Time
	statusRetry  time.Duration // about how soon a failed heartbeat write is tried again (session.heartbeat)
	upgrader     websocket.Upgrader
	frames       wsframe.Reader // shared by every session's reads
	// frameBufs holds the writers' frame buffers (*[]byte) while they do not run: an idle
	// session keeps none (it kept its last frame's, about 0.7 KB after a connect and more
	// after a fan-out of larger objects, per node).
	frameBufs sync.Pool

	// processed is the last index revision whose marks are all placed. A writer that reads it
	// before taking a session's pending keys knows every change up to it is among them.
	processed atomic.Int64
	// advanced is closed and replaced each time processed moves while handshakes wait for it
	// (waitProcessed; waiters counts them), so they wake on the change, not by polling.
	advMu    sync.Mutex
	advanced chan struct{}
	waiters  atomic.Int32
	// routed is the revision of the last change any node's view could see.
	routed atomic.Int64

	mu       sync.Mutex // guards the fields below; lock order: Hub.mu before session.mu
	sessions map[string]*session
	touched  []*session // scratch for onUpdate: the sessions a change marked
	ring     ring
	grace    map[string]*time.Timer // nodes disconnected, not yet reported NotReady
	stopping bool

	addr  net.Addr
	ready chan struct{}

	// reportLocks serialise report application per node (reportLock). A node's lock is chosen
	// by a hash of its name: 32 KB for any fleet size, and at 10,000 nodes two or three nodes
	// share one.
	reportLocks [4096]sync.Mutex
}

// reportLock returns the lock that orders node's report application.
func (h *Hub) reportLock(node string) *sync.Mutex {
	sum := uint32(2166136261) // FNV-1a, inline: taken once per report, so no hasher to allocate
	for i := 0; i < len(node); i++ {
		sum = (sum ^ uint32(node[i])) * 16777619
	}
	return &h.reportLocks[sum%uint32(len(h.reportLocks))]
}

// Deps are the hub's collaborators.
type Deps struct {
	Index     *index.Index
	Registry  *resource.Registry
	ClusterID string
	Status    Status
	Reports   Reports
	Epochs    Epochs // optional: without it every session's epoch is 0 (one replica)
	// StoreRev reads the store's current revision (store.Backend.Rev); optional. With it, a
	// node that has seen more of a shared store than this replica has processed is sent to
	// reconnect rather than reset from this replica's older view (see session.handshake).
	StoreRev     func(context.Context) (int64, error)
	Forwarder    Forwarder // optional: without it forwarded writes are refused with 501
	Signer       Signer
	CertValidity time.Duration
	TLS          *tls.Config // requires and verifies client certificates (pki.CA.ServerTLSConfig)
	Log          zerolog.Logger
	Metrics      prometheus.Registerer
	Now          func() time.Time
}

// New returns a hub and subscribes it to the index. It must be called before the index runs.
func New(cfg Config, d Deps) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.TLS == nil || d.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("cloudhub: the TLS config must require and verify client certificates")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	h := &Hub{
		cfg: cfg, ix: d.Index, registry: d.Registry, cluster: d.ClusterID, status: d.Status, reports: d.Reports, epochs: d.Epochs, storeRev: d.StoreRev, forwarder: d.Forwarder,
		signer: d.Signer, certValidity: d.CertValidity, tlsConfig: d.TLS, now: d.Now,
		log:      d.Log.With().Str("component", "cloudhub").Logger(),
		sessions: map[string]*session{},
		grace:    map[string]*time.Timer{},
		advanced: make(chan struct{}),
		ring:     ring{size: cfg.History},
		ready:    make(chan struct{}),
		// A first failure is tried again 2.5–7.5 s later: soon enough that a node shows Ready
		// within seconds, and spread so that a storm's retries do not come back as one.
		statusRetry: 5 * time.Second,
	}
	h.sampled = h.log.Sample(&zerolog.BurstSampler{Burst: 20, Period: 10 * time.Second})
	h.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		ReadBufferSize:   cfg.ReadBuffer,
		WriteBufferSize:  cfg.WriteBuffer,
		WriteBufferPool:  &sync.Pool{},
		// Edges are not browsers; identity is the client certificate.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	h.metrics = newMetrics(d.Metrics, h)
	d.Index.Subscribe(h.onUpdate)
	d.Index.OnProgress(func(rev int64) {
		h.mu.Lock()
		h.initRing()
		h.advance(rev)
		h.mu.Unlock()
	})
	return h, nil
}

// Addr is the address the hub listens on, once Ready is closed.
func (h *Hub) Addr() net.Addr { <-h.ready; return h.addr }

// Ready is closed once the hub is listening.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Run serves until ctx ends, then tells every node the cloud is going away and closes.
func (h *Hub) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", h.cfg.Listen)
	if err != nil {
		return fmt.Errorf("cloudhub: listen: %w", err)
	}
	h.addr = ln.Addr()
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         h.tlsConfig,
		ReadHeaderTimeout: h.cfg.HandshakeTimeout,
		ErrorLog:          newErrorLog(h.log),
	}
	close(h.ready)
	select {
	case <-h.ix.Ready():
	case <-ctx.Done():
		ln.Close()
		return nil
	}
	h.watchGrace()
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	go h.tick(ctx)
	h.log.Info().Str("addr", h.addr.String()).Msg("hub listening")
	select {
	case err := <-errc:
		return fmt.Errorf("cloudhub: serve: %w", err)
	case <-ctx.Done():
	}
	h.mu.Lock()
	h.stopping = true
	sessions := make([]*session, 0, len(h.sessions))
	for _, s := range h.sessions {
		sessions = append(sessions, s)
	}
	for _, t := range h.grace {
		t.Stop()
	}
	h.mu.Unlock()
	srv.Close()
	for _, s := range sessions {
		s.fail(protocol.CodeShuttingDown, "the cloud is shutting down; reconnect")
	}
	for _, s := range sessions {
		select {
		case <-s.done:
		case <-time.After(h.cfg.WriteTimeout):
		}
	}
	return nil
}

// ServeHTTP upgrades an authenticated edge to a websocket session.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != ConnectPath {
		http.NotFound(w, r)
		return
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		h.metrics.rejected.WithLabelValues("no-certificate").Inc()
		http.Error(w, "a client certificate is required", http.StatusUnauthorized)
		return
	}
	cert := r.TLS.PeerCertificates[0]
	node, err := pki.NodeNameFromCert(cert)
	if err != nil {
		h.metrics.rejected.WithLabelValues("not-a-node-certificate").Inc()
		h.log.Warn().Err(err).Str("remote", r.RemoteAddr).Msg("connection refused")
		http.Error(w, "the client certificate is not a node certificate", http.StatusForbidden)
		return
	}
	conn, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		h.metrics.rejected.WithLabelValues("upgrade").Inc()
		return // the upgrader has answered
	}
	conn.SetReadLimit(h.cfg.MaxMessage)
	// The handshake grew this goroutine's stack; the session lives on a fresh one, which keeps
	// an idle node's footprint small.
	go h.serveConn(conn, node, pki.IssuedAt(cert), cert.NotAfter, r.RemoteAddr)
}

// onUpdate runs on the index goroutine for every change, in order: it remembers the change and
// marks every connected node whose view it may alter.
func (h *Hub) onUpdate(u index.Update) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.initRing()
	if n := u.New; n != nil && n.Key.Resource == resource.Nodes && !u.Historical {
		if h.cfg.SharedStore {
			h.watchElsewhere(n.Key.Name)
		}
		if s := h.sessions[n.Key.Name]; s != nil {
			if err := retired(n, time.Unix(0, s.certIssued)); err != nil {
				// A later join of the name (or the Node made again) retired the certificate
				// this session connected with: it ends now, not at its next reconnect, and
				// cannot renew meanwhile.
				go s.fail(err.Code, err.Message)
			} else if !readyTrue(n.Raw) {
				// The node is connected here, yet its Node says otherwise: another replica
				// marked it NotReady (this one's lease looked gone to it, as under overload),
				// or someone wrote the status by hand. Say so now, not at the next heartbeat
				// write, which can be StatusInterval away. Only a write of Ready True ends
				// this, so two replicas cannot trade writes: neither marks a node NotReady
				// while its holder runs. Until then its failed writes are retried sooner.
				s.notShownReady.Store(max(h.now().UnixNano(), s.notShownReady.Load()+1))
				s.heartbeat()
			}
		}
	}
	if !view.Routed(u) {
		h.advance(u.Rev())
		return
	}
	c := view.ChangeOf(u)
	h.ring.add(c)
	h.routed.Store(u.Rev())
	if u.Historical {
		h.advance(u.Rev())
		return
	}
	// The keys are placed first, the revision recorded as processed, and only then are the
	// writers woken: a writer started by the first key could take it before the others of this
	// change are placed, or before processed moves, and then follow it with a Progress that
	// stops short of the change (the node would hear it was complete only at the next tick).
	all := false
	touched := h.touched[:0]
	view.Affected(c, u.Snap, func(node, key string) {
		if node == view.AllNodes {
			for _, s := range h.sessions {
				s.place(key)
			}
			all = true
		} else if s := h.sessions[node]; s != nil {
			s.place(key)
			touched = append(touched, s)
		}
	})
	h.advance(u.Rev())
	if all {
		for _, s := range h.sessions {
			s.wake()
		}
	} else {
		for _, s := range touched {
			s.wake()
		}
	}
	clear(touched)
	h.touched = touched[:0]
	if c.Resource == resource.Nodes && u.New == nil {
		if s := h.sessions[u.Old.Key.Name]; s != nil {
			go s.fail(protocol.CodeRevoked, "the node was deleted in the cloud")
		}
	}
}

// advance records that every mark up to rev is placed. Historical updates come before live
// ones but after the index's list, so processed never moves back.
func (h *Hub) advance(rev int64) {
	if rev > h.processed.Load() {
		h.processed.Store(rev)
		if h.waiters.Load() > 0 {
			h.advMu.Lock()
			close(h.advanced)
			h.advanced = make(chan struct{})
			h.advMu.Unlock()
		}
	}
}

// waitProcessed waits, at most d, until the hub has processed the store's changes through rev
// (see session.handshake), and says whether it has.
func (h *Hub) waitProcessed(rev int64, d time.Duration) bool {
	h.waiters.Add(1)
	defer h.waiters.Add(-1)
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		// The channel is taken before processed is read: a move after the read closes it.
		h.advMu.Lock()
		moved := h.advanced
		h.advMu.Unlock()
		if h.processed.Load() >= rev {
			return true
		}
		select {
		case <-moved:
		case <-timeout.C:
			return h.processed.Load() >= rev
		}
	}
}

// storeHas says whether the store's current revision is at least rev, as read within d; false
// when it cannot tell (no StoreRev, or the store did not answer).
func (h *Hub) storeHas(rev int64, d time.Duration) bool {
	if h.storeRev == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cur, err := h.storeRev(ctx)
	return err == nil && cur >= rev
}

// attach registers a session after its Hello and computes its catch-up. It returns the mode.
func (h *Hub) attach(s *session, hello *protocol.Hello) (protocol.Mode, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopping {
		return 0, &protocol.Error{Code: protocol.CodeShuttingDown, Message: "the cloud is shutting down"}
	}
	// Taken under h.mu: a Node deletion or a join that retires the certificate, published after
	// it, reaches onUpdate after this session is registered (and fails it); one published before
	// is seen here.
	snap := h.ix.Snapshot()
	node := snap.Get(resource.StoreKey(resource.Key{Resource: resource.Nodes, Name: s.node}))
	if node == nil {
		return 0, &protocol.Error{Code: protocol.CodeRevoked, Message: fmt.Sprintf("node %q is not registered in the cloud (deleted?); join it again", s.node)}
	}
	if err := retired(node, time.Unix(0, s.certIssued)); err != nil {
		return 0, err
	}
	h.initRing()
	processed := h.processed.Load()
	mode := protocol.ModeIncremental
	switch {
	case hello.ClusterID != h.cluster:
		mode = protocol.ModeReset // a fresh edge, or a cursor from another cloud
	case int64(hello.Cursor) > processed:
		mode = protocol.ModeReset // the cloud's history went back (restored from a backup)
	case int64(hello.Cursor) < h.ring.floor:
		mode = protocol.ModeReset // older than what the hub remembers
	}
	if old := h.sessions[s.node]; old != nil {
		old.failing.Store(true) // now, so that it applies no report after this session's first
		go old.fail(protocol.CodeReplaced, "a newer connection of this node took over")
	}
	h.sessions[s.node] = s
	if t := h.grace[s.node]; t != nil {
		t.Stop()
		delete(h.grace, s.node)
	}
	s.start(mode, uint64(processed), hello.Cursor)
	if mode == protocol.ModeIncremental {
		h.ring.since(int64(hello.Cursor), func(c view.Change) {
			view.AffectedOn(c, snap, s.node, s.markLocked)
		})
	}
	s.unlockAndKick()
	return mode, nil
}

// detach unregisters a session that ended and starts the node's grace period.
func (h *Hub) detach(s *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sessions[s.node] != s {
		return // replaced
	}
	delete(h.sessions, s.node)
	if !h.stopping {
		h.startGrace(s.node)
	}
}

// startGrace reports node NotReady unless it reconnects within the grace period. Called with
// h.mu held.
func (h *Hub) startGrace(node string) { h.startGraceFor(node, h.cfg.GracePeriod) }

// startGraceFor is startGrace with the time left of a grace period. Called with h.mu held.
func (h *Hub) startGraceFor(node string, d time.Duration) { h.startGraceTry(node, d, 0, h.now()) }

// startGraceTry is startGraceFor after failures NotReady writes for node failed in a row; the
// node's absence has been timed since since. Called with h.mu held.
func (h *Hub) startGraceTry(node string, d time.Duration, failures int, since time.Time) {
	if t := h.grace[node]; t != nil {
		t.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		h.mu.Lock()
		_, back := h.sessions[node]
		// A timer that fired while a newer one replaced it (it waited for h.mu) is stale: the
		// newer one decides, after its own full grace period.
		stale := h.grace[node] != t
		if !stale {
			delete(h.grace, node)
		}
		h.mu.Unlock()
		if back || stale {
			return
		}
		ctx, cancel := context.WithTimeout(WithGoneSince(context.Background(), since), h.cfg.WriteTimeout)
		defer cancel()
		// A node that another replica reports connected, and whose heartbeat that replica keeps
		// writing, is left to it. That replica rewrites the heartbeat about every StatusInterval
		// (a write that would move it by less is skipped, so the stored one can be up to twice
		// that old): one older than that and a grace period means that replica is gone too.
		err := h.status.SetReady(ctx, node, false, "NodeStatusUnknown", h.now(), 2*h.cfg.StatusInterval+h.cfg.GracePeriod)
		var stopped *HolderStoppedError
		switch {
		case errors.Is(err, ErrHeldElsewhere):
			// Look again after another grace period: the replica holding it may go away
			// without marking it. Once it has, the node gets what is left of a grace period
			// from then: its edge is redialling (here, most likely), and a failover must not
			// show a connected fleet NotReady.
			wait := h.cfg.GracePeriod
			if errors.As(err, &stopped) {
				wait = max(stopped.Wait, time.Millisecond)
			}
			h.log.Debug().Err(err).Str("node", node).Msg("node held by another replica; not marked NotReady")
			h.mu.Lock()
			if _, back := h.sessions[node]; !back && h.grace[node] == nil && !h.stopping {
				h.startGraceFor(node, wait)
			}
			h.mu.Unlock()
		case errors.Is(err, ErrNotMarked):
			h.log.Debug().Str("node", node).Msg("node past its grace period shows not Ready already")
		case errors.Is(err, ErrBackHere):
			// Left Ready. Timed again unless the node is here (or a newer timer runs): a
			// heartbeat after since with the node gone means the clock went back, and the
			// node must not stay Ready for good.
			h.log.Debug().Str("node", node).Msg("node connected again while it was being marked NotReady; left Ready")
			h.mu.Lock()
			if _, back := h.sessions[node]; !back && h.grace[node] == nil && !h.stopping {
				h.startGrace(node)
			}
			h.mu.Unlock()
		case err != nil:
			// Tried again, backing off as heartbeat writes do: nothing else would look at
			// this node again (with one replica, until the cloud restarts), and it would
			// show Ready for good.
			retry := retryAfter(h.statusRetry, failures+1, h.cfg.GracePeriod)
			h.metrics.statusFailed.Inc()
			h.log.Warn().Err(err).Str("node", node).Dur("retry_in", retry).Msg("could not mark node NotReady")
			h.mu.Lock()
			if _, back := h.sessions[node]; !back && h.grace[node] == nil && !h.stopping {
				h.startGraceTry(node, retry, failures+1, since)
			}
			h.mu.Unlock()
		default:
			h.log.Info().Str("node", node).Msg("node NotReady: disconnected past the grace period")
		}
	})
	h.grace[node] = t
}

// RecheckElsewhere is for when another replica has just stopped (see cloudapi.NodeStatus's
// HolderStopped): every node this replica is timing without a session is looked at again
// soon, spread over a quarter of the grace period, instead of at the end of its current
// period; Status.SetReady then times those of the stopped replica from when it stopped. A node
// that replica held and that reconnects nowhere is marked a replica TTL and one grace period
// after the stop, not up to two grace periods.
func (h *Hub) RecheckElsewhere() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopping {
		return
	}
	spread := max(int64(h.cfg.GracePeriod/4), 1)
	for node := range h.grace {
		h.startGraceFor(node, time.Duration(rand.Int64N(spread)))
	}
}

// readyTrue says whether a Node's JSON has the Ready condition True.
func readyTrue(raw []byte) bool {
	var n struct {
		Status struct {
			Conditions []struct{ Type, Status string }
		}
	}
	if json.Unmarshal(raw, &n) != nil {
		return true // not the hub's to judge; the next heartbeat write looks again
	}
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

// watchElsewhere gives a node this replica has no session for, and is not already timing, a
// grace period: a node that joined or connected through another replica after this one
// started is then marked NotReady here too should that replica die (see startGrace). Called
// with h.mu held, for every change of a Node.
func (h *Hub) watchElsewhere(node string) {
	if _, here := h.sessions[node]; here || h.grace[node] != nil || h.stopping {
		return
	}
	h.startGrace(node)
}

// watchGrace gives every node that the store says is Ready a grace period at start: after a
// cloud restart they reconnect within it and never show NotReady.
func (h *Hub) watchGrace() {
	snap := h.ix.Snapshot()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range snap.List(resource.Prefix(resource.Nodes, ""), "", 0) {
		if _, ok := h.sessions[o.Key.Name]; !ok {
			h.startGrace(o.Key.Name)
		}
	}
}

// tick sends progress marks, writes heartbeats and cuts off nodes that stopped acknowledging.
func (h *Hub) tick(ctx context.Context) {
	progress := time.NewTicker(h.cfg.Progress)
	defer progress.Stop()
	// Heartbeat writes are checked every second and made per node when its last one is older
	// than StatusInterval, so they spread over the interval instead of landing all at once.
	status := time.NewTicker(min(time.Second, h.cfg.StatusInterval))
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-progress.C:
			now := h.now()
			for _, s := range h.snapshotSessions() {
				s.progress(now)
			}
		case <-status.C:
			now := h.now()
			for _, s := range h.snapshotSessions() {
				if now.UnixNano() >= s.statusDue.Load() {
					s.heartbeat()
				}
			}
		}
	}
}

func (h *Hub) snapshotSessions() []*session {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*session, 0, len(h.sessions))
	for _, s := range h.sessions {
		out = append(out, s)
	}
	return out
}

// Connected reports whether node has a session on this hub.
func (h *Hub) Connected(node string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.sessions[node]
	return ok
}

// initRing sets the ring's floor to where the index's history starts, once. Called with h.mu
// held, after the index is ready.
func (h *Hub) initRing() {
	if !h.ring.init {
		h.ring.floor, h.ring.init = h.ix.HistoryFrom(), true
		h.advance(h.ix.ListRev())
	}
}

// ring remembers recent routed changes for catch-up. Guarded by Hub.mu.
type ring struct {
	size  int
	buf   []view.Change
	head  int   // oldest entry once full
	floor int64 // every routed change after floor is in buf
	init  bool
}

func (r *ring) add(c view.Change) {
	if len(r.buf) < r.size {
		r.buf = append(r.buf, c)
		return
	}
	r.floor = r.buf[r.head].Rev
	r.buf[r.head] = c
	r.head = (r.head + 1) % r.size
}

// since calls fn for every remembered change after rev, oldest first.
func (r *ring) since(rev int64, fn func(view.Change)) {
	n := len(r.buf)
	// Binary search for the first change after rev; entries are in revision order.
	lo, hi := 0, n
	for lo < hi {
		mid := (lo + hi) / 2
		if r.buf[(r.head+mid)%n].Rev > rev {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	for i := lo; i < n; i++ {
		fn(r.buf[(r.head+i)%n])
	}
}
