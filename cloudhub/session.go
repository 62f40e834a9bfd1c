package cloudhub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/internal/wsframe"
	"github.com/tetherhub/tether/pki"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/view"
)

// session is one node's connection. The reader (run) lives as long as the connection; a writer
// goroutine exists only while there is something to send (so an idle node costs one goroutine),
// and a reporter goroutine only while reports wait for the store.
type session struct {
	hub    *Hub
	conn   *websocket.Conn // set at construction; writes only by the writer (and WriteControl)
	node   string          // set at construction
	remote string          // set at construction
	// certIssued and certExpires (unix nanos) are those of the certificate the session
	// connected with (pki.IssuedAt, NotAfter), set at construction; certExpires moves to a
	// renewed certificate's (renew, one at a time, is its only reader after the handshake).
	certIssued, certExpires int64
	epoch                   int64         // set by the handshake (see Epochs), before the reader starts
	noEpoch                 bool          // the handshake could not take an epoch: reports end the session
	done                    chan struct{} // closed when the session has ended
	sent                    atomic.Uint64 // seq of the last data message written; written by the writer
	lastSeen                atomic.Int64  // unix nanos of the last frame or ping from the edge
	failing                 atomic.Bool   // fail or end was called: the reader ignores further messages, reports are not applied
	statusDue               atomic.Int64  // unix nanos when the next heartbeat write is due (the tick makes it)
	statusErr               atomic.Int32  // heartbeat writes failed in a row (their retries back off)
	notShownReady           atomic.Int64  // when the Node was last seen not Ready True with the node here (0: since shown Ready)
	batchLeft               atomic.Int64  // keys of the current batch not yet sent, for metrics
	through                 atomic.Int64  // the last Through sent (lastThrough, published for the progress tick)

	mu          sync.Mutex          // guards the fields below
	pending     map[string]struct{} // keys to send; nil when none
	reset       bool                // send the whole view instead of pending keys
	control     []protocol.Message  // non-data messages, sent before data
	closing     *protocol.Error     // sent last, then the connection is closed
	writing     bool                // a writer goroutine is running
	progressDue bool                // the periodic progress tick asked for a mark
	acked       uint64              // highest seq the edge acknowledged
	fullSince   time.Time           // when the window filled while work waited; zero if not
	windowWait  bool                // the writer stopped on a full window with work left
	catchup     bool                // the next batch is the catch-up after Hello
	ended       bool
	reports     []*protocol.Report // waiting for the store
	reportBytes int                // payload bytes of reports
	reporting   bool               // a reporter goroutine is running
	forwarding  int                // forwarded requests being executed
	renewing    bool               // a certificate renewal is being signed

	// Owned by the writer goroutine (only one runs at a time).
	seq          uint64
	batch        []string // keys of the batch being sent
	inBatch      bool
	batchReset   bool
	resetBegun   bool
	batchThrough int64
	batchCatchup bool
	lastThrough  int64
	buf          []byte // the frame being built; from Hub.frameBufs while the writer runs
}

func (h *Hub) serveConn(conn *websocket.Conn, node string, certIssued, certExpires time.Time, remote string) {
	s := &session{
		hub: h, conn: conn, node: node, done: make(chan struct{}),
		remote: remote, certIssued: certIssued.UnixNano(), certExpires: certExpires.UnixNano(),
	}
	h.metrics.connects.Inc()
	if err := s.handshake(); err != nil {
		defer close(s.done)
		defer conn.Close()
		var perr *protocol.Error
		if errors.As(err, &perr) {
			s.writeError(perr)
			h.metrics.rejected.WithLabelValues(perr.Code.String()).Inc()
			s.log().Warn().Str("code", perr.Code.String()).Msg(perr.Message)
		} else {
			h.metrics.rejected.WithLabelValues("handshake").Inc()
			s.log().Warn().Err(err).Msg("handshake failed")
		}
		return
	}
	// The handshake and the catch-up computation grew this goroutine's stack; the read loop,
	// which is what an idle node costs, starts on a fresh one.
	go s.run()
}

// run is the session's read loop; it lives as long as the connection.
func (s *session) run() {
	defer close(s.done)
	defer s.conn.Close()
	defer s.hub.detach(s)
	err := s.readLoop()
	s.end()
	s.log().Info().Err(err).Msg("node disconnected")
}

// log returns the session's logger. It is built on demand: an idle session logs nothing, and a
// logger with fields is half a kilobyte per node kept for nothing.
func (s *session) log() *zerolog.Logger {
	l := s.hub.log.With().Str("node", s.node).Str("remote", s.remote).Logger()
	return &l
}

// handshake reads and checks Hello, then attaches the session.
func (s *session) handshake() error {
	h := s.hub
	s.conn.SetReadDeadline(h.now().Add(h.cfg.HandshakeTimeout))
	typ, frame, err := h.frames.Read(s.conn)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return &protocol.Error{Code: protocol.CodeHandshakeTimeout, Message: "no Hello within the handshake timeout"}
		}
		return err
	}
	if typ != websocket.BinaryMessage {
		return &protocol.Error{Code: protocol.CodeBadFrame, Message: "frames must be binary websocket messages"}
	}
	msgs, err := protocol.Decode(frame)
	if err != nil {
		return &protocol.Error{Code: protocol.CodeBadFrame, Message: err.Error()}
	}
	hello, ok := msgs[0].(*protocol.Hello)
	if !ok || len(msgs) != 1 {
		return &protocol.Error{Code: protocol.CodeProtocol, Message: "the first frame must hold exactly one Hello"}
	}
	if hello.Version != protocol.Version {
		return &protocol.Error{Code: protocol.CodeUnsupportedVersion, Message: fmt.Sprintf("protocol version %d is not supported; this cloud speaks %d", hello.Version, protocol.Version)}
	}
	if hello.Node != s.node {
		return &protocol.Error{Code: protocol.CodeIdentityMismatch, Message: fmt.Sprintf("the certificate is for node %q but Hello names %q", s.node, hello.Node)}
	}
	if err := s.checkRegistered(); err != nil {
		return err
	}
	// The ring holds every change after its floor only once the index's history replay is over.
	// Only a node to be caught up from a cursor inside that history waits for it: one that is up
	// to date (at or past the revision the index listed) or from another cluster (reset) needs
	// nothing from the history, and after a restart most nodes are up to date.
	if hello.ClusterID == h.cluster && int64(hello.Cursor) < h.ix.ListRev() {
		select {
		case <-h.ix.Current():
		case <-time.After(h.cfg.HandshakeTimeout):
			return &protocol.Error{Code: protocol.CodeShuttingDown, Message: "the cloud is still loading; reconnect"}
		}
	}
	// A cursor ahead of what this replica has processed: the node comes from another replica
	// on the same store that saw more of it (this one's watch is behind, as in a failover
	// storm), or the store's history went back (restored from a backup). A replica behind
	// usually catches up within a short wait, and the node is caught up incrementally; a reset
	// from its older view would take newer objects back, or sweep them, until its next
	// changes. If it has not caught up by then but the store has the node's revision, the node
	// is sent to reconnect (CodeBehind); only a store that does not have it (restored) resets.
	// (processed starts from the revision the index listed, even before any change arrives: a
	// replica restarted over a quiet store must not count as behind every node.)
	h.mu.Lock()
	h.initRing()
	h.mu.Unlock()
	if cursor := int64(hello.Cursor); hello.ClusterID == h.cluster && cursor > h.processed.Load() {
		// The store is asked at once, beside the wait, so that the handshake takes no longer
		// than the wait: the edge's own handshake timeout must not run out first.
		wait := min(h.cfg.HandshakeTimeout/4, 3*time.Second)
		has := make(chan bool, 1)
		go func() { has <- h.storeHas(cursor, wait) }()
		if !h.waitProcessed(cursor, wait) && <-has {
			return &protocol.Error{Code: protocol.CodeBehind, Message: fmt.Sprintf("this replica has processed the store up to revision %d, the node has seen %d; reconnect", h.processed.Load(), cursor)}
		}
	}
	s.takeEpoch()
	mode, err := h.attach(s, hello)
	if err != nil {
		return err
	}
	s.log().Info().Uint64("cursor", hello.Cursor).Str("agent", hello.Agent).Str("mode", modeName(mode)).Msg("node connected")
	s.heartbeat()
	return nil
}

// takeEpoch numbers the session for Reports.Apply, before it can read a report: a report this
// session applies was sent after this number was taken, so after every number of the node's
// earlier sessions, and before any of its later ones. A session that could not take one
// (the store is unreachable) still serves the node its objects; it ends when a report arrives,
// which the edge sends again on its next session.
func (s *session) takeEpoch() {
	if s.hub.epochs == nil {
		return
	}
	// The edge waits for Welcome as long as the hub waits for Hello: a slow store must not make
	// it give up and redial, which would ask for yet another epoch.
	ctx, cancel := context.WithTimeout(context.Background(), min(s.hub.cfg.WriteTimeout, s.hub.cfg.HandshakeTimeout/2))
	defer cancel()
	e, err := s.hub.epochs.Next(ctx)
	if err != nil {
		s.noEpoch = true
		s.hub.sampled.Warn().Err(err).Str("node", s.node).Msg("could not number the session for its reports; its first report will end it")
		return
	}
	s.epoch = e
}

// checkRegistered refuses the session's certificate if the Node object no longer vouches for it
// (see retired).
func (s *session) checkRegistered() *protocol.Error {
	snap := s.hub.ix.Snapshot()
	node := snap.Get(resource.StoreKey(resource.Key{Resource: resource.Nodes, Name: s.node}))
	if node == nil {
		return &protocol.Error{Code: protocol.CodeRevoked, Message: fmt.Sprintf("node %q is not registered in the cloud (deleted?); join it again", s.node)}
	}
	return retired(node, time.Unix(0, s.certIssued))
}

// retired refuses a certificate issued at certIssued that node, the Node object, does not vouch
// for: it is not the object the node joined as (deleted and created again, by hand or from a
// saved manifest, or never joined); or a later join of the name retired the certificate (see
// AnnotationJoinedUID).
func retired(node *index.Object, certIssued time.Time) *protocol.Error {
	name := node.Key.Name
	if uid := node.Annotations[AnnotationJoinedUID]; uid == "" || uid != node.UID {
		return &protocol.Error{Code: protocol.CodeRevoked, Message: fmt.Sprintf("node %q was created again since it joined (or never joined); join it again", name)}
	}
	since, err := time.Parse(time.RFC3339, node.Annotations[AnnotationCertificatesSince])
	if err != nil {
		return &protocol.Error{Code: protocol.CodeRevoked, Message: fmt.Sprintf("node %q has no valid %s annotation; join it again", name, AnnotationCertificatesSince)}
	}
	if certIssued.Before(since) {
		return &protocol.Error{Code: protocol.CodeRevoked, Message: fmt.Sprintf("a later join of node %q retired this certificate; join it again", name)}
	}
	return nil
}

func modeName(m protocol.Mode) string {
	if m == protocol.ModeReset {
		return "reset"
	}
	return "incremental"
}

// start prepares the session's first batch. Called by attach with Hub.mu held; it leaves
// session.mu locked for attach to mark keys, and attach calls unlockAndKick.
func (s *session) start(mode protocol.Mode, head, cursor uint64) {
	s.mu.Lock()
	s.control = append(s.control, &protocol.Welcome{
		Version: protocol.Version, ClusterID: s.hub.cluster, Head: head, Mode: mode,
		HeartbeatMS: uint32(s.hub.cfg.Heartbeat / time.Millisecond),
	})
	s.reset = mode == protocol.ModeReset
	s.catchup = true
	s.progressDue = true
	s.lastThrough = int64(cursor)
	s.through.Store(int64(cursor))
	s.lastSeen.Store(s.hub.now().UnixNano())
}

func (s *session) unlockAndKick() {
	start := s.kickLocked()
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
}

// place queues key for sending without waking the writer. Called on the index goroutine with
// Hub.mu held; onUpdate wakes the sessions once the change's revision is processed.
func (s *session) place(key string) {
	s.mu.Lock()
	s.markLocked(key)
	s.mu.Unlock()
}

// wake starts the writer for keys placed by a change now processed. A writer already running
// may have taken them before processed moved; progressDue makes it follow its batch with a
// Progress through the change (a batch taken after this clears it: its own Progress covers it).
func (s *session) wake() {
	s.mu.Lock()
	s.progressDue = true
	s.unlockAndKick()
}

func (s *session) markLocked(key string) {
	if s.reset || s.ended {
		return
	}
	if s.pending == nil {
		s.pending = map[string]struct{}{}
	}
	s.pending[key] = struct{}{}
	if len(s.pending) > s.hub.cfg.MaxPending {
		// Tracking more keys than this costs more than sending the view once.
		s.pending, s.reset = nil, true
		s.hub.metrics.resets.WithLabelValues("pending-overflow").Inc()
	}
}

// kickLocked reports whether a writer must be started; it marks one as running.
func (s *session) kickLocked() bool {
	if s.writing || s.ended {
		return false
	}
	s.writing = true
	return true
}

// progress is the periodic tick: ask for a progress mark, and cut the node off if its window
// has been full too long.
func (s *session) progress(now time.Time) {
	s.mu.Lock()
	if !s.fullSince.IsZero() && now.Sub(s.fullSince) > s.hub.cfg.SlowTimeout {
		s.mu.Unlock()
		s.hub.metrics.slowCutoffs.Inc()
		s.fail(protocol.CodeTooSlow, "the node did not acknowledge in time; reconnect and catch up")
		return
	}
	// A mark is due when a routed change happened since the node's cursor (the cursor keeps the
	// node's catch-up small), or when the cursor has fallen a quarter of the history behind in
	// revisions (so a cloud restart, which remembers History revisions, can still catch it up
	// incrementally). Changes no node sees (status writes) do not, on their own, cost the fleet
	// a message each.
	th := s.through.Load()
	if s.hub.routed.Load() <= th && s.hub.processed.Load()-th < int64(s.hub.cfg.History/4) {
		s.mu.Unlock()
		return
	}
	s.progressDue = true
	s.unlockAndKick()
}

// heartbeat writes the node's last heartbeat if the edge was heard from recently.
func (s *session) heartbeat() {
	asked := s.hub.now()
	due := asked.Add(s.hub.cfg.StatusInterval).UnixNano()
	s.statusDue.Store(due)
	seen := time.Unix(0, s.lastSeen.Load())
	if s.hub.now().Sub(seen) > 2*s.hub.cfg.Heartbeat {
		return
	}
	notShown := s.notShownReady.Load()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.hub.cfg.WriteTimeout)
		defer cancel()
		err := s.hub.status.SetReady(ctx, s.node, true, "EdgeConnected", seen, s.hub.cfg.StatusInterval)
		if err == nil {
			s.statusErr.Store(0)
			s.notShownReady.CompareAndSwap(notShown, 0) // unless seen not Ready again since
			return
		}
		// Try again soon, not a StatusInterval later: a node whose first write failed would show
		// not Ready that long. When 10,000 nodes connected at once, here to a cloud on etcd on
		// the same two cores, or on a host busy with other work, thousands of these writes
		// missed WriteTimeout. The jitter spreads such a storm's retries, and each failure in a
		// row doubles the wait (up to StatusInterval), so a store that stays behind is not kept
		// there by the retries.
		// A connected node the store shows not Ready waits at most half a grace period: it is
		// what operators see, where a late heartbeat time is not.
		limit := s.hub.cfg.StatusInterval
		if s.notShownReady.Load() != 0 {
			limit = min(limit, s.hub.cfg.GracePeriod/2)
		}
		retry := retryAfter(s.hub.statusRetry, int(s.statusErr.Add(1)), limit)
		s.statusDue.CompareAndSwap(due, asked.Add(retry).UnixNano()) // unless asked again since
		s.hub.metrics.statusFailed.Inc()
		s.hub.sampled.Warn().Err(err).Str("node", s.node).Dur("retry_in", retry).Msg("could not record heartbeat")
	}()
}

// retryAfter is how long the failures-th failed heartbeat write in a row waits before it is tried
// again: base doubled for each earlier failure, jittered over [½, 1½) of that, and never more than
// limit.
func retryAfter(base time.Duration, failures int, limit time.Duration) time.Duration {
	d := base << min(max(failures-1, 0), 16)
	return min(d/2+rand.N(d), limit)
}

// fail ends the session after telling the edge why.
func (s *session) fail(code protocol.Code, msg string) {
	s.failing.Store(true)
	s.mu.Lock()
	if s.ended || s.closing != nil {
		s.mu.Unlock()
		return
	}
	s.closing = &protocol.Error{Code: code, Message: msg}
	start := s.kickLocked()
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
	// If the writer is stuck on a dead peer, its write deadline ends it; in any case close the
	// connection soon so the reader returns.
	time.AfterFunc(s.hub.cfg.WriteTimeout, func() { s.conn.Close() })
}

// end marks the session over; no writer starts after it, and its report loop applies nothing
// more (the edge resends what was not acknowledged, perhaps already to a successor session).
func (s *session) end() {
	s.failing.Store(true)
	s.mu.Lock()
	s.ended = true
	s.pending = nil
	s.mu.Unlock()
	s.conn.Close()
}

// writeError sends err and closes, for failures before the session is attached.
func (s *session) writeError(err *protocol.Error) {
	s.conn.SetWriteDeadline(s.hub.now().Add(s.hub.cfg.WriteTimeout))
	s.conn.WriteMessage(websocket.BinaryMessage, protocol.Encode(err))
	s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, err.Code.String()), s.hub.now().Add(time.Second))
}

// readLoop reads the edge's messages until the connection ends.
func (s *session) readLoop() error {
	h := s.hub
	deadline := wsframe.NewDeadline(s.conn, wsframe.SilenceLimit(h.cfg.Heartbeat, h.cfg.WriteTimeout), h.now())
	seen := func() {
		now := h.now()
		s.lastSeen.Store(now.UnixNano())
		deadline.Alive(s.conn, now)
	}
	s.conn.SetPingHandler(func(data string) error {
		seen()
		err := s.conn.WriteControl(websocket.PongMessage, []byte(data), h.now().Add(h.cfg.WriteTimeout))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	for {
		typ, frame, err := h.frames.Read(s.conn)
		if err != nil {
			return err
		}
		seen()
		h.metrics.bytesIn.Add(float64(len(frame)))
		if s.failing.Load() {
			continue // the session is ending; the writer is sending the reason
		}
		if typ != websocket.BinaryMessage {
			s.fail(protocol.CodeBadFrame, "frames must be binary websocket messages")
			h.metrics.rejected.WithLabelValues(protocol.CodeBadFrame.String()).Inc()
			continue
		}
		msgs, err := protocol.Decode(frame)
		if err != nil {
			h.metrics.rejected.WithLabelValues(protocol.CodeBadFrame.String()).Inc()
			s.log().Warn().Err(err).Msg("bad frame from edge")
			s.fail(protocol.CodeBadFrame, err.Error())
			continue
		}
		for _, m := range msgs {
			if err := s.handle(m); err != nil {
				var perr *protocol.Error
				if errors.As(err, &perr) {
					h.metrics.rejected.WithLabelValues(perr.Code.String()).Inc()
					s.log().Warn().Str("code", perr.Code.String()).Msg(perr.Message)
					s.fail(perr.Code, perr.Message)
					break
				}
				return err
			}
		}
	}
}

func (s *session) handle(m protocol.Message) error {
	switch m := m.(type) {
	case *protocol.Ack:
		if m.Seq > s.sent.Load() {
			return &protocol.Error{Code: protocol.CodeProtocol, Message: fmt.Sprintf("ack of seq %d, which was never sent", m.Seq)}
		}
		s.mu.Lock()
		if m.Seq > s.acked {
			s.acked = m.Seq
			s.fullSince = time.Time{}
		}
		if s.windowWait {
			s.windowWait = false
			s.unlockAndKick()
		} else {
			s.mu.Unlock() // nothing waits for room in the window
		}
	case *protocol.Report:
		s.mu.Lock()
		if len(s.reports) >= s.hub.cfg.ReportQueue || s.reportBytes+len(m.Payload) > maxQueuedReportBytes {
			s.mu.Unlock()
			return &protocol.Error{Code: protocol.CodeProtocol, Message: "more reports in flight than the cloud accepts; lower the outbox window"}
		}
		// The payload is copied out of its frame: kept in place it would keep the whole frame
		// (up to MaxMessage, most of it perhaps a request's body) alive while the report waits,
		// and the queue's bound counts payload bytes.
		m.Payload = bytes.Clone(m.Payload)
		s.reports = append(s.reports, m)
		s.reportBytes += len(m.Payload)
		start := !s.reporting
		s.reporting = true
		s.mu.Unlock()
		if start {
			go s.reportLoop()
		}
	case *protocol.Renew:
		s.mu.Lock()
		busy := s.renewing
		s.renewing = true
		s.mu.Unlock()
		if busy {
			return &protocol.Error{Code: protocol.CodeProtocol, Message: "a certificate renewal is already in progress"}
		}
		go s.renew(m)
	case *protocol.Request:
		s.mu.Lock()
		if unread, size := len(s.control), answerBytes(s.control); unread >= maxControl || size >= maxControlBytes {
			// Answers pile up unread: the edge sends requests and does not read what they
			// return (each may hold a whole object).
			s.mu.Unlock()
			return &protocol.Error{Code: protocol.CodeProtocol, Message: fmt.Sprintf("%d answers (%d bytes) wait to be read, more than the %d (%d bytes) allowed; requests are refused", unread, size, maxControl, maxControlBytes)}
		}
		busy := s.forwarding >= maxForwarding
		if !busy {
			s.forwarding++
		}
		s.mu.Unlock()
		if busy {
			s.send(&protocol.Response{ID: m.ID, Code: 429, ContentType: "application/json",
				Body: []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too many requests in flight from this node","reason":"TooManyRequests","code":429}`)})
			break
		}
		go s.forward(m)
	case *protocol.Error:
		s.log().Warn().Str("code", m.Code.String()).Msg("edge reported an error: " + m.Message)
		return fmt.Errorf("edge error %s: %s", m.Code, m.Message)
	default:
		return &protocol.Error{Code: protocol.CodeProtocol, Message: fmt.Sprintf("an edge may not send %s", m.Type())}
	}
	return nil
}

// reportLoop applies queued reports in order and acknowledges them.
func (s *session) reportLoop() {
	for {
		s.mu.Lock()
		if len(s.reports) == 0 || s.ended {
			s.reporting = false
			s.mu.Unlock()
			return
		}
		r := s.reports[0]
		s.reports = s.reports[1:]
		s.reportBytes -= len(r.Payload)
		s.mu.Unlock()
		// One node's reports are applied one at a time, also across a session and the one that
		// replaced it: the edge resends what the old one had not acknowledged, and an old report
		// applied after a newer one would overwrite it (state and node status are plain values).
		// A replaced or ended session applies nothing more (failing is set before its
		// successor attaches, and when it ends).
		lock := s.hub.reportLock(s.node)
		lock.Lock()
		if s.noEpoch && !s.failing.Load() {
			s.hub.metrics.reportsFailed.Inc()
			s.fail(protocol.CodeInternal, "the cloud could not number this session's reports; they will be resent on the next one")
		}
		if s.failing.Load() {
			lock.Unlock()
			s.mu.Lock()
			s.reports, s.reportBytes, s.reporting = nil, 0, false
			s.mu.Unlock()
			return
		}
		err := s.applyReport(r)
		lock.Unlock()
		switch {
		case err == nil:
			s.hub.metrics.reportsApplied.Inc()
		case errors.Is(err, ErrBadReport):
			s.hub.metrics.reportsBad.Inc()
			s.log().Warn().Err(err).Uint64("seq", r.Seq).Msg("dropping a malformed report")
		default:
			s.hub.metrics.reportsFailed.Inc()
			s.log().Warn().Err(err).Uint64("seq", r.Seq).Msg("could not store a report; the edge will resend it")
			s.fail(protocol.CodeInternal, "the cloud could not store a report; it will be resent")
			s.mu.Lock()
			s.reports, s.reportBytes, s.reporting = nil, 0, false
			s.mu.Unlock()
			return
		}
		s.send(&protocol.ReportAck{Seq: r.Seq})
	}
}

// applyReport applies one report with the write deadline. A panic while applying it (a bug
// reached through an edge's input) is contained: the report is dropped as malformed, and the
// process, which holds every other node's session, lives.
func (s *session) applyReport(r *protocol.Report) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.hub.metrics.panics.Inc()
			s.log().Error().Str("panic", fmt.Sprint(p)).Bytes("stack", debug.Stack()).Uint64("seq", r.Seq).Msg("applying a report panicked; contained")
			err = fmt.Errorf("%w: applying it panicked: %v", ErrBadReport, p)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), s.hub.cfg.WriteTimeout)
	defer cancel()
	return s.hub.reports.Apply(ctx, s.node, s.epoch, r)
}

// maxForwarding bounds the forwarded API requests one node may have executing at once.
const maxForwarding = 16

// closeLinger is how long a connection the hub is ending stays open after the Error and the
// close frame, for the edge's close to arrive.
const closeLinger = time.Second

// maxQueuedReportBytes bounds the payload bytes of one node's reports waiting for the store,
// beside the count (Config.ReportQueue). An edge keeps its reports in flight under
// protocol.MaxReportBytesInFlight (but for one report), so an edge that keeps to the protocol
// never reaches it.
const maxQueuedReportBytes = 2 * protocol.MaxReportBytesInFlight

// maxControlBytes bounds the bodies of the answers waiting for a node's writer, beside their
// count (maxControl): a request is refused with the session past it.
const maxControlBytes = 16 << 20

// answerBytes adds up the bodies of the answers among control messages.
func answerBytes(control []protocol.Message) int {
	n := 0
	for _, m := range control {
		if r, ok := m.(*protocol.Response); ok {
			n += len(r.Body)
		}
	}
	return n
}

// maxControl bounds the control messages (answers, mostly) waiting for a node's writer: past it,
// a node that keeps sending requests is disconnected instead of being answered without end.
const maxControl = 1024

func (s *session) forward(m *protocol.Request) {
	defer func() {
		s.mu.Lock()
		s.forwarding--
		s.mu.Unlock()
	}()
	var resp *protocol.Response
	defer func() {
		// A panic while serving an edge's request (a bug reached through its input) ends
		// that request with a 500, not the process that holds every other node's session.
		if p := recover(); p != nil {
			s.hub.metrics.panics.Inc()
			s.log().Error().Str("panic", fmt.Sprint(p)).Bytes("stack", debug.Stack()).Str("method", m.Method).Str("path", m.Path).Msg("a forwarded request panicked; contained")
			s.send(&protocol.Response{ID: m.ID, Code: 500, ContentType: "application/json",
				Body: []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"internal error while serving the request","reason":"InternalError","code":500}`)})
		}
	}()
	if s.hub.forwarder == nil {
		resp = &protocol.Response{ID: m.ID, Code: 501, ContentType: "application/json",
			Body: []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"this cloud does not accept writes from edges","reason":"NotImplemented","code":501}`)}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp = s.hub.forwarder.Forward(ctx, s.node, m)
		cancel()
		resp.ID = m.ID
	}
	s.hub.metrics.forwarded.WithLabelValues(fmt.Sprint(resp.Code)).Inc()
	s.send(resp)
}

func (s *session) renew(m *protocol.Renew) {
	defer func() {
		s.mu.Lock()
		s.renewing = false
		s.mu.Unlock()
	}()
	// The session outlives the checks of its handshake: renew only what the cloud would still
	// let connect, or a retired or expired certificate's session could renew itself for ever.
	if perr := s.checkRegistered(); perr != nil {
		s.log().Warn().Str("code", perr.Code.String()).Msg("certificate renewal refused: " + perr.Message)
		s.send(&protocol.Renewed{Message: perr.Message}) // onUpdate ends the session of a retired certificate
		return
	}
	if now := s.hub.now(); now.UnixNano() >= s.certExpires {
		msg := fmt.Sprintf("the certificate this session connected with expired at %s; join the node again", time.Unix(0, s.certExpires).UTC().Format(time.RFC3339))
		s.log().Warn().Msg("certificate renewal refused: " + msg)
		s.send(&protocol.Renewed{Message: msg})
		return
	}
	// The renewed certificate records the issue time of the one it replaces, the join's: a
	// later join then retires the whole chain, even a renewal signed while that join was being
	// recorded, and a replica whose clock is behind the one that signed the join does not make
	// a renewal that join's cutoff retires at once.
	cert, err := s.hub.signer.SignCSRIssued(m.CSR, s.node, s.hub.certValidity, s.hub.now(), time.Unix(0, s.certIssued))
	if err != nil {
		s.log().Warn().Err(err).Msg("certificate renewal refused")
		s.send(&protocol.Renewed{Message: err.Error()})
		return
	}
	if c, err := pki.ParseCertPEM(cert); err == nil {
		// The edge goes on with this session under the new certificate: its next renewal, on
		// this session too, is judged by the new one's expiry.
		s.certExpires = c.NotAfter.UnixNano()
	}
	s.log().Info().Msg("certificate renewed")
	s.send(&protocol.Renewed{Certificate: cert})
}

// send queues a control message.
func (s *session) send(m protocol.Message) {
	s.mu.Lock()
	s.control = append(s.control, m)
	s.unlockAndKick()
}

// writeLoop sends until nothing is left that may be sent, then exits.
func (s *session) writeLoop() {
	if b, ok := s.hub.frameBufs.Get().(*[]byte); ok {
		s.buf = *b
	}
	for {
		frame, closing, ok := s.nextFrame()
		if !ok {
			return
		}
		if len(frame) > 0 {
			// The edge may ack before WriteMessage returns: publish the seqs first, or the
			// reader would take a fast ack for one of a seq never sent.
			s.sent.Store(s.seq)
			s.conn.SetWriteDeadline(s.hub.now().Add(s.hub.cfg.WriteTimeout))
			if err := s.conn.WriteMessage(websocket.BinaryMessage, frame); err != nil {
				s.log().Debug().Err(err).Msg("write failed")
				s.stopWriting()
				s.conn.Close()
				return
			}
			s.hub.metrics.bytesOut.Add(float64(len(frame)))
			s.hub.metrics.frames.Inc()
		}
		if closing != nil {
			s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, closing.Code.String()), s.hub.now().Add(time.Second))
			s.stopWriting()
			// Not closed at once: with the edge's frames still unread, closing makes the kernel
			// reset the connection, and the edge can lose the Error just written. The reader
			// drains until the edge answers the close (which ends the session), for at most a
			// second.
			time.AfterFunc(closeLinger, func() { s.conn.Close() })
			return
		}
	}
}

// releaseBuf hands the frame buffer back to the hub's pool as the writer exits; a buffer the
// writer let go for its size (nextFrame) is not kept. Called by the writer with mu held, before
// it clears writing: the next writer then starts after it.
func (s *session) releaseBuf() {
	if s.buf != nil {
		b := s.buf[:0]
		s.hub.frameBufs.Put(&b)
		s.buf = nil
	}
}

func (s *session) stopWriting() {
	s.mu.Lock()
	s.releaseBuf()
	s.writing = false
	s.ended = true
	s.mu.Unlock()
}

// nextFrame builds the next frame to write. ok is false when the writer should exit (and it
// has then marked itself stopped, atomically with finding nothing to do).
func (s *session) nextFrame() (frame []byte, closing *protocol.Error, ok bool) {
	h := s.hub
	s.mu.Lock()
	if s.ended {
		s.releaseBuf()
		s.writing = false
		s.mu.Unlock()
		return nil, nil, false
	}
	control := s.control
	s.control = nil
	closing = s.closing
	room := h.cfg.Window - int(s.seq-s.acked)
	var loneProgress int64
	if !s.inBatch && room > 0 && closing == nil {
		// Read processed before taking the keys: every change up to it is then among them.
		through := h.processed.Load()
		switch {
		case s.reset:
			s.inBatch, s.batchReset, s.resetBegun, s.batch = true, true, false, nil
			s.reset, s.pending = false, nil
		case len(s.pending) > 0:
			s.batch = make([]string, 0, len(s.pending))
			for k := range s.pending {
				s.batch = append(s.batch, k)
			}
			s.inBatch, s.batchReset, s.pending = true, false, nil
		case s.progressDue && through > s.lastThrough:
			loneProgress = through
		}
		if s.inBatch {
			s.batchThrough = through
			s.batchCatchup, s.catchup = s.catchup, false
		}
		s.progressDue = false
		if s.catchup && !s.inBatch {
			s.catchup = false // the catch-up had nothing to send
		}
	}
	workWaits := s.inBatch || s.reset || len(s.pending) > 0
	if room <= 0 && workWaits {
		s.windowWait = true
		if s.fullSince.IsZero() {
			s.fullSince = h.now()
		}
	}
	if len(control) == 0 && closing == nil && loneProgress == 0 && (!s.inBatch || room <= 0) {
		s.releaseBuf()
		s.writing = false
		s.mu.Unlock()
		return nil, nil, false
	}
	s.mu.Unlock()

	buf := s.buf[:0]
	for i, m := range control {
		if i > 0 && len(buf) >= h.cfg.MaxFrame {
			// The rest go in the next frames, ahead of anything queued since: a frame stays
			// within what the edge reads.
			s.mu.Lock()
			s.control = append(control[i:len(control):len(control)], s.control...)
			s.mu.Unlock()
			break
		}
		buf = protocol.Append(buf, m)
	}
	if loneProgress > 0 {
		s.seq++
		buf = protocol.Append(buf, &protocol.Progress{Seq: s.seq, Through: uint64(loneProgress)})
		s.lastThrough = loneProgress
		s.through.Store(loneProgress)
		h.metrics.sentProgress.Inc()
	}
	if s.inBatch && room > 0 && closing == nil {
		buf = s.fillBatch(buf, room)
	}
	if closing != nil {
		buf = protocol.Append(buf, closing)
	}
	if cap(buf) <= 4*h.cfg.MaxFrame {
		s.buf = buf[:0] // keep a modest buffer for the next frame; let a huge one go
	} else {
		s.buf = nil
	}
	return buf, closing, true
}

// fillBatch appends messages of the current batch to buf, within room and the frame size.
func (s *session) fillBatch(buf []byte, room int) []byte {
	h := s.hub
	snap := h.ix.Snapshot()
	if s.batchReset && !s.resetBegun {
		full := view.Full(snap, s.node)
		s.batch = make([]string, len(full))
		for i, o := range full {
			s.batch[i] = o.StoreKey
		}
		s.seq++
		room--
		buf = protocol.Append(buf, &protocol.ResetBegin{Seq: s.seq})
		s.resetBegun = true
		h.metrics.sentResetBegin.Inc()
	}
	for room > 0 && len(s.batch) > 0 && len(buf) < h.cfg.MaxFrame {
		key := s.batch[0]
		s.batch = s.batch[1:]
		o, raw := view.Visible(snap, s.node, key)
		start := len(buf)
		switch {
		case o != nil:
			s.seq++
			buf = protocol.Append(buf, &protocol.Upsert{Seq: s.seq, Rev: uint64(snap.Rev), Key: o.Key, Object: raw})
			h.metrics.sentUpsert.Inc()
		case s.batchReset:
			continue // gone since the reset began; the edge sweeps what the reset did not name
		default:
			k, err := parseKey(h, key)
			if err != nil {
				continue
			}
			s.seq++
			buf = protocol.Append(buf, &protocol.Delete{Seq: s.seq, Rev: uint64(snap.Rev), Key: k})
			h.metrics.sentDelete.Inc()
		}
		room--
		if s.batchCatchup {
			h.metrics.catchupMessages.Inc()
			h.metrics.catchupBytes.Add(float64(len(buf) - start))
		}
	}
	s.batchLeft.Store(int64(len(s.batch)))
	if len(s.batch) == 0 && room > 0 {
		s.seq++
		if s.batchReset {
			buf = protocol.Append(buf, &protocol.ResetEnd{Seq: s.seq, Through: uint64(s.batchThrough)})
			h.metrics.sentResetEnd.Inc()
		} else {
			buf = protocol.Append(buf, &protocol.Progress{Seq: s.seq, Through: uint64(s.batchThrough)})
			h.metrics.sentProgress.Inc()
		}
		s.lastThrough = s.batchThrough
		s.through.Store(s.batchThrough)
		s.inBatch, s.batch = false, nil
	}
	return buf
}

func parseKey(h *Hub, storeKey string) (protocol.Key, error) {
	k, _, err := h.registry.ParseStoreKey(storeKey)
	return k, err
}
