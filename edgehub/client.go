package edgehub

import (
	"context"
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

	"github.com/tetherhub/tether/internal/wsframe"
	"github.com/tetherhub/tether/pki"
	"github.com/tetherhub/tether/protocol"
)

// ConnectPath is where the hub serves websockets.
const ConnectPath = "/v1/connect"

// Config configures the hub client.
type Config struct {
	// Cloud lists hub addresses (HOST:PORT); the client tries them in turn.
	Cloud []string
	// Heartbeat is the ping interval until the hub's Welcome says otherwise.
	Heartbeat time.Duration
	// DialTimeout bounds TCP, TLS and the websocket upgrade; HandshakeTimeout the wait for
	// Welcome; WriteTimeout every write.
	DialTimeout, HandshakeTimeout, WriteTimeout time.Duration
	// BackoffMin and BackoffMax bound the jittered exponential wait between attempts.
	BackoffMin, BackoffMax time.Duration
	// MaxMessage bounds one websocket message from the hub.
	MaxMessage int64
	// ReportWindow is how many reports may be unacknowledged.
	ReportWindow int
	// MaxReportBytes bounds the reports packed into one frame.
	MaxReportBytes int
	// RenewAt is the share of a certificate's lifetime after which the client asks the hub for
	// a fresh one.
	RenewAt float64
	// Agent is the build version sent in Hello.
	Agent string
	// LocalAddr, if set, is the local IP to dial from (the simulator spreads thousands of
	// edges over 127.0.0.x so one address's ports do not cap the count).
	LocalAddr string
	// WrapConn, if set, wraps every TCP connection before TLS (the simulator counts the bytes
	// on the wire with it).
	WrapConn func(net.Conn) net.Conn
	// Frames, if set, reads the hub's frames; the simulator shares one among all its edges so
	// that thousands of clients share a few warm scratch buffers. Nil gives the client its own.
	Frames *wsframe.Reader
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Heartbeat: 15 * time.Second, DialTimeout: 10 * time.Second, HandshakeTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, BackoffMin: 500 * time.Millisecond, BackoffMax: 30 * time.Second,
		MaxMessage: 4 << 20, ReportWindow: 256, MaxReportBytes: 256 << 10, RenewAt: 2.0 / 3, Agent: "dev",
	}
}

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	var errs []error
	if len(c.Cloud) == 0 {
		errs = append(errs, errors.New("edgehub: no cloud address"))
	}
	for _, a := range c.Cloud {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("edgehub: cloud address %q: %v", a, err))
		}
	}
	for name, d := range map[string]time.Duration{"heartbeat": c.Heartbeat, "dial timeout": c.DialTimeout, "handshake timeout": c.HandshakeTimeout, "write timeout": c.WriteTimeout, "backoff min": c.BackoffMin, "backoff max": c.BackoffMax} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("edgehub: %s must be positive, got %s", name, d))
		}
	}
	if c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("edgehub: backoff max %s is below backoff min %s", c.BackoffMax, c.BackoffMin))
	}
	if c.MaxMessage < 4096 || c.ReportWindow < 1 || c.MaxReportBytes < 1024 {
		errs = append(errs, errors.New("edgehub: max message ≥ 4096, report window ≥ 1 and max report bytes ≥ 1024 are required"))
	}
	if c.ReportWindow > MaxReportWindow {
		errs = append(errs, fmt.Errorf("edgehub: report window must be at most %d (the hub refuses frames of more than %d messages), got %d", MaxReportWindow, protocol.MaxFrameMessages, c.ReportWindow))
	}
	if c.RenewAt <= 0 || c.RenewAt >= 1 {
		errs = append(errs, fmt.Errorf("edgehub: renew-at must be between 0 and 1, got %g", c.RenewAt))
	}
	return errors.Join(errs...)
}

// Store is what the client needs of the edge store; *edgestore.Store implements it, and the
// simulator's light in-memory store does too.
type Store interface {
	// Cursor returns the cluster and revision through which the stored view is complete.
	Cursor() (cluster string, cursor uint64)
	// BeginSession abandons any half-applied reset and records the session's cluster.
	BeginSession(ctx context.Context, cluster string) error
	// Apply queues data messages; done is called once they are durable (or failed).
	Apply(ctx context.Context, msgs []protocol.Message, done func(error)) error
	// ReadOutbox returns reports after seq `after`, at most max of them and about maxBytes.
	ReadOutbox(after uint64, max, maxBytes int) ([]protocol.Report, error)
	// AckOutbox drops reports up to and including seq.
	AckOutbox(ctx context.Context, seq uint64) error
	// OutboxSignal is signalled when reports were appended.
	OutboxSignal() <-chan struct{}
}

// SentMarker is an optional interface of a Store: after a frame of reports is written, the
// client tells the store the highest seq sent, so the store knows which reports are still only
// local (and may, for instance, be coalesced with newer ones of the same subject).
type SentMarker interface {
	MarkSent(seq uint64)
}

// Identity is the node's certificate and key; the client reads it for every dial and replaces
// it when the hub renews the certificate.
type Identity interface {
	Current() *pki.NodeIdentity
	// Renewed stores a fresh certificate (PEM) for the current key and makes it current.
	Renewed(certPEM []byte) error
}

// State is the link's state, for /readyz and metrics.
type State int32

const (
	Disconnected State = iota
	Connecting
	Connected
)

func (s State) String() string {
	switch s {
	case Connecting:
		return "connecting"
	case Connected:
		return "connected"
	}
	return "disconnected"
}

// Client keeps the edge connected to the hub.
type Client struct {
	cfg     Config
	id      Identity
	store   Store
	log     zerolog.Logger
	metrics *metrics
	now     func() time.Time
	frames  *wsframe.Reader

	state     atomic.Int32
	live      atomic.Pointer[conn] // the session that is up, if any
	nextID    atomic.Uint64        // forwarded request IDs
	lastError atomic.Pointer[string]
	since     atomic.Int64 // unix nanos of the last change between Connected and not
	sessions  atomic.Int64 // sessions opened (Welcome received), for Sessions
}

// New returns a client.
func New(cfg Config, id Identity, store Store, log zerolog.Logger, reg prometheus.Registerer) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, id: id, store: store, log: log.With().Str("component", "edgehub").Logger(), now: time.Now, frames: cfg.Frames}
	if c.frames == nil {
		c.frames = new(wsframe.Reader)
	}
	c.metrics = newMetrics(reg, c)
	c.setState(Disconnected)
	return c, nil
}

// State returns the link's state, how long the link has been up (Connected) or down (the
// other two: a reconnect attempt does not restart the count) and the last error.
func (c *Client) State() (State, time.Duration, string) {
	var msg string
	if p := c.lastError.Load(); p != nil {
		msg = *p
	}
	return State(c.state.Load()), c.now().Sub(time.Unix(0, c.since.Load())), msg
}

// Sessions is how many sessions with the cloud the client has opened: a caller that keeps
// its own count of reconnects (tether-sim, which runs thousands of clients without a metrics
// registry each) reads it.
func (c *Client) Sessions() int64 { return c.sessions.Load() }

func (c *Client) setState(s State) {
	old := State(c.state.Swap(int32(s)))
	if (old == Connected) != (s == Connected) || c.since.Load() == 0 {
		c.since.Store(c.now().UnixNano())
	}
}

// Run connects and reconnects until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.cfg.BackoffMin
	for attempt := 0; ; attempt++ {
		addr := c.cfg.Cloud[attempt%len(c.cfg.Cloud)]
		c.setState(Connecting)
		started := c.now()
		err := c.session(ctx, addr)
		c.setState(Disconnected)
		if ctx.Err() != nil {
			return nil
		}
		msg := err.Error()
		c.lastError.Store(&msg)
		c.metrics.disconnects.Inc()
		c.log.Warn().Err(err).Str("cloud", addr).Msg("disconnected from the cloud")
		if c.now().Sub(started) > 2*c.cfg.BackoffMax {
			backoff = c.cfg.BackoffMin // the session had been up for a while: start over
		}
		// Full jitter: a fleet reconnecting after a cloud restart spreads itself out.
		wait := time.Duration(rand.Int64N(int64(backoff) + 1))
		if wait < c.cfg.BackoffMin {
			wait = c.cfg.BackoffMin
		}
		backoff = min(2*backoff, c.cfg.BackoffMax)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
	}
}

// conn is one session with the hub.
type conn struct {
	c       *Client
	ws      *websocket.Conn
	log     zerolog.Logger
	wake    chan struct{} // wakes the writer
	applied atomic.Uint64 // highest data seq committed to the store
	// applying is set while the read loop is inside Store.Apply: a commit reported then is
	// acknowledged by the read loop itself when Apply returns (ackInline), not by the writer.
	applying atomic.Bool
	failed   chan error  // first failure of the store callbacks
	broken   atomic.Bool // the store failed to apply some data: nothing after it is acked
	// wmu lets one goroutine write data frames at a time, as gorilla requires: the writer's
	// frames, the read loop's acks of data committed during Apply, and its last Error before it
	// ends the session. (Pings go through WriteControl, which gorilla lets run beside a writer.)
	wmu     sync.Mutex
	ackSent atomic.Uint64 // highest data seq acknowledged; written under wmu

	mu          sync.Mutex   // guards the fields below
	reportSent  uint64       // highest report seq written
	reportAcked uint64       // highest report seq the hub acknowledged
	unacked     []sentReport // reports written and not acknowledged yet, in seq order
	unackedSize int          // their payload bytes: at most protocol.MaxReportBytesInFlight, but for one report
	renewing    bool
	requests    []protocol.Message                 // forwarded requests to write
	pending     map[uint64]chan *protocol.Response // forwarded requests awaiting an answer
	closed      bool
}

// MaxReportWindow is the largest ReportWindow: a frame's reports, with the acks and requests
// sent beside them, stay under protocol.MaxFrameMessages.
const MaxReportWindow = 16384

// ErrOffline is returned by Forward when there is no session with the cloud (or it ended before
// the request was sent). The metaserver answers 503 at once: writes are never queued silently.
var ErrOffline = errors.New("edgehub: not connected to the cloud")

// ErrAnswerLost is returned by Forward when the session ended after the request was sent and
// before its answer came: the cloud may or may not have carried it out.
var ErrAnswerLost = errors.New("edgehub: the session with the cloud ended after the request was sent, before its answer")

// Forward relays an API request to the cloud and waits for its answer.
func (c *Client) Forward(ctx context.Context, req *protocol.Request) (*protocol.Response, error) {
	k := c.live.Load()
	if k == nil {
		return nil, ErrOffline
	}
	req.ID = c.nextID.Add(1)
	ch := make(chan *protocol.Response, 1)
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return nil, ErrOffline
	}
	k.pending[req.ID] = ch
	k.requests = append(k.requests, req)
	k.mu.Unlock()
	k.signal()
	select {
	case resp, ok := <-ch:
		switch {
		case !ok:
			return nil, ErrOffline
		case resp == nil:
			return nil, ErrAnswerLost
		}
		return resp, nil
	case <-ctx.Done():
		k.mu.Lock()
		delete(k.pending, req.ID)
		k.mu.Unlock()
		return nil, ctx.Err()
	}
}

// close fails every forwarded request still waiting: one not sent yet with ErrOffline (its
// channel closed), one sent with ErrAnswerLost (a nil answer).
func (k *conn) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	unsent := make(map[uint64]bool, len(k.requests))
	for _, m := range k.requests {
		if r, ok := m.(*protocol.Request); ok {
			unsent[r.ID] = true
		}
	}
	for id, ch := range k.pending {
		if !unsent[id] {
			ch <- nil // the channel holds one answer, and this is the only one it gets
		}
		close(ch)
		delete(k.pending, id)
	}
}

func (c *Client) dial(ctx context.Context, addr string) (*websocket.Conn, error) {
	id := c.id.Current()
	host, _, _ := net.SplitHostPort(addr)
	d := websocket.Dialer{
		TLSClientConfig:  id.ClientTLSConfig(host),
		HandshakeTimeout: c.cfg.DialTimeout,
		ReadBufferSize:   4096,
		WriteBufferSize:  4096,
		NetDialContext:   c.dialTCP,
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	ws, resp, err := d.DialContext(dctx, "wss://"+addr+ConnectPath, http.Header{})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %s)", addr, err, resp.Status)
		}
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	ws.SetReadLimit(c.cfg.MaxMessage)
	return ws, nil
}

// dialTCP opens the TCP connection under the websocket.
func (c *Client) dialTCP(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: c.cfg.DialTimeout, KeepAlive: -1}
	if c.cfg.LocalAddr != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.cfg.LocalAddr)}
	}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil || c.cfg.WrapConn == nil {
		return conn, err
	}
	return c.cfg.WrapConn(conn), nil
}

// session runs one connection until it fails or ctx ends.
func (c *Client) session(ctx context.Context, addr string) error {
	ws, err := c.dial(ctx, addr)
	if err != nil {
		return err
	}
	defer ws.Close()
	c.metrics.connects.Inc()
	cluster, cursor := c.store.Cursor()
	id := c.id.Current()
	hello := &protocol.Hello{Version: protocol.Version, Node: id.Name, ClusterID: cluster, Cursor: cursor, Agent: c.cfg.Agent}
	ws.SetWriteDeadline(c.now().Add(c.cfg.WriteTimeout))
	if err := ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(hello)); err != nil {
		return fmt.Errorf("send Hello: %w", err)
	}
	ws.SetReadDeadline(c.now().Add(c.cfg.HandshakeTimeout))
	welcome, rest, err := readWelcome(c.frames, ws)
	if err != nil {
		return err
	}
	if err := c.store.BeginSession(ctx, welcome.ClusterID); err != nil {
		return err
	}
	heartbeat := c.cfg.Heartbeat
	if welcome.HeartbeatMS > 0 {
		heartbeat = time.Duration(welcome.HeartbeatMS) * time.Millisecond
	}
	mode := "incremental"
	if welcome.Mode == protocol.ModeReset {
		mode = "reset"
	}
	c.log.Info().Str("cloud", addr).Uint64("cursor", cursor).Uint64("head", welcome.Head).Str("mode", mode).Msg("connected to the cloud")
	c.setState(Connected)
	c.sessions.Add(1)
	c.lastError.Store(nil)

	k := &conn{c: c, ws: ws, log: c.log.With().Str("cloud", addr).Logger(), wake: make(chan struct{}, 1), failed: make(chan error, 1),
		pending: map[uint64]chan *protocol.Response{}}
	c.live.Store(k)
	defer func() {
		c.live.CompareAndSwap(k, nil)
		k.close()
	}()
	first, _ := c.store.ReadOutbox(0, 1, 1)
	if len(first) > 0 {
		k.reportSent, k.reportAcked = first[0].Seq-1, first[0].Seq-1
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A read blocked on the socket does not see ctx; closing the connection ends it at once, so
	// the agent stops within its shutdown budget instead of waiting out the read deadline.
	stopClose := context.AfterFunc(sctx, func() { ws.Close() })
	defer stopClose()
	werr := make(chan error, 1)
	go func() { werr <- k.writeLoop(sctx, heartbeat) }()
	rerr := k.readLoop(sctx, heartbeat, rest)
	cancel()
	ws.Close()
	if err := <-werr; err != nil && rerr == nil {
		rerr = err
	}
	return rerr
}

// readWelcome reads the hub's first frame. The Welcome may share it with the first data
// messages; those are returned for the read loop.
func readWelcome(frames *wsframe.Reader, ws *websocket.Conn) (*protocol.Welcome, []protocol.Message, error) {
	typ, frame, err := frames.Read(ws)
	if err != nil {
		return nil, nil, fmt.Errorf("wait for Welcome: %w", err)
	}
	if typ != websocket.BinaryMessage {
		return nil, nil, errors.New("the hub sent a non-binary frame")
	}
	msgs, err := protocol.Decode(frame)
	if err != nil {
		return nil, nil, fmt.Errorf("the hub's first frame: %w", err)
	}
	switch m := msgs[0].(type) {
	case *protocol.Welcome:
		if m.Version != protocol.Version {
			return nil, nil, fmt.Errorf("the hub speaks protocol %d, this agent %d", m.Version, protocol.Version)
		}
		return m, msgs[1:], nil
	case *protocol.Error:
		return nil, nil, fmt.Errorf("the hub refused the session: %w", m)
	}
	return nil, nil, fmt.Errorf("the hub's first message is %s, not Welcome", msgs[0].Type())
}

// readLoop reads frames, hands data to the store and tracks report acknowledgements.
func (k *conn) readLoop(ctx context.Context, heartbeat time.Duration, first []protocol.Message) error {
	c := k.c
	deadline := wsframe.NewDeadline(k.ws, wsframe.SilenceLimit(heartbeat, c.cfg.WriteTimeout), c.now())
	k.ws.SetPongHandler(func(string) error {
		deadline.Alive(k.ws, c.now())
		return nil
	})
	var lastSeq uint64
	msgs := first
	for {
		if msgs == nil {
			select {
			case err := <-k.failed:
				return err
			default:
			}
			typ, frame, err := c.frames.Read(k.ws)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if k.broken.Load() {
					return k.storeFailure()
				}
				return fmt.Errorf("read: %w", err)
			}
			deadline.Alive(k.ws, c.now())
			c.metrics.bytesIn.Add(float64(len(frame)))
			if typ != websocket.BinaryMessage {
				return errors.New("the hub sent a non-binary frame")
			}
			if msgs, err = protocol.Decode(frame); err != nil {
				c.metrics.rejected.Inc()
				k.sendError(protocol.CodeBadFrame, err.Error())
				return fmt.Errorf("bad frame from the hub: %w", err)
			}
		}
		var data []protocol.Message
		for _, m := range msgs {
			if seq, ok := protocol.SeqOf(m); ok {
				if seq != lastSeq+1 {
					k.sendError(protocol.CodeProtocol, fmt.Sprintf("data seq %d after %d", seq, lastSeq))
					return fmt.Errorf("the hub skipped from seq %d to %d", lastSeq, seq)
				}
				lastSeq = seq
				data = append(data, m)
				c.metrics.countReceived(m.Type())
				continue
			}
			switch m := m.(type) {
			case *protocol.ReportAck:
				k.reportAck(ctx, m.Seq)
			case *protocol.Renewed:
				go k.renewed(m)
			case *protocol.Response:
				k.mu.Lock()
				ch := k.pending[m.ID]
				delete(k.pending, m.ID)
				k.mu.Unlock()
				if ch != nil {
					ch <- m
				}
			case *protocol.Error:
				return fmt.Errorf("the hub ended the session: %w", m)
			default:
				k.sendError(protocol.CodeProtocol, "a hub may not send "+m.Type().String())
				return fmt.Errorf("the hub sent %s", m.Type())
			}
		}
		if len(data) > 0 {
			upTo := lastSeq
			// Acknowledge only after the store has committed: the ack is the hub's signal that
			// the data is durable here.
			if k.broken.Load() {
				return k.storeFailure()
			}
			k.applying.Store(true)
			err := c.store.Apply(ctx, data, func(err error) {
				if err != nil {
					// Data after the gap must not be acknowledged, even if a store committed it:
					// the hub would resume past what is missing. End the session; the next one
					// catches up from the store's cursor.
					k.broken.Store(true)
					select {
					case k.failed <- fmt.Errorf("store: %w", err):
					default:
					}
					k.ws.Close() // wakes the read loop from its wait on the socket
					return
				}
				if !k.broken.Load() {
					k.applied.Store(upTo)
				}
				// A commit reported while the read loop is still in Apply (a store that commits
				// at once, as the simulator's does) is acknowledged by the read loop below,
				// which saves waking the writer for every frame. Stored applied first: the read
				// loop clears applying before it loads applied, so it sees this commit.
				if !k.applying.Load() {
					k.signal()
				}
			})
			k.applying.Store(false)
			if err != nil {
				return err
			}
			if err := k.ackInline(); err != nil {
				return err
			}
		}
		msgs = nil
	}
}

// storeFailure is the error that ended the session after the store failed to apply data.
func (k *conn) storeFailure() error {
	select {
	case err := <-k.failed:
		return err
	default:
		return errors.New("store: could not apply data from the hub")
	}
}

func (k *conn) signal() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// sentReport is a report written and not acknowledged yet: its seq and payload bytes.
type sentReport struct {
	seq  uint64
	size int
}

func (k *conn) reportAck(ctx context.Context, seq uint64) {
	k.mu.Lock()
	if seq <= k.reportAcked || seq > k.reportSent {
		k.mu.Unlock()
		return
	}
	k.reportAcked = seq
	n := 0
	for n < len(k.unacked) && k.unacked[n].seq <= seq {
		k.unackedSize -= k.unacked[n].size
		n++
	}
	k.unacked = k.unacked[n:]
	k.mu.Unlock()
	k.c.metrics.reportsAcked.Inc()
	go func() {
		if err := k.c.store.AckOutbox(ctx, seq); err != nil && ctx.Err() == nil {
			k.log.Warn().Err(err).Msg("could not trim the outbox")
		}
	}()
	k.signal()
}

// ackInline acknowledges, from the read loop, data committed while it was in Apply. If the
// writer holds wmu it is woken to send the ack with its frame instead: the read loop never waits
// behind a frame of reports.
func (k *conn) ackInline() error {
	if k.applied.Load() <= k.ackSent.Load() {
		return nil
	}
	if !k.wmu.TryLock() {
		k.signal()
		return nil
	}
	defer k.wmu.Unlock()
	a := k.applied.Load()
	if a <= k.ackSent.Load() {
		return nil
	}
	frame := protocol.Encode(&protocol.Ack{Seq: a})
	if err := k.writeLocked(frame); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	k.ackSent.Store(a)
	k.c.metrics.bytesOut.Add(float64(len(frame)))
	return nil
}

// writeLoop sends acks, reports and pings.
func (k *conn) writeLoop(ctx context.Context, heartbeat time.Duration) error {
	c := k.c
	ping := time.NewTicker(heartbeat)
	defer ping.Stop()
	k.maybeRenew()
	for {
		if err := k.flush(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-k.wake:
		case <-c.store.OutboxSignal():
		case <-ping.C:
			if err := k.ws.WriteControl(websocket.PingMessage, nil, c.now().Add(c.cfg.WriteTimeout)); err != nil {
				return fmt.Errorf("ping: %w", err)
			}
			k.maybeRenew()
		}
	}
}

// frameBudget bounds the request bodies and report payloads flush packs into one frame (but
// for a single one larger than that), under the hub's message limit (protocol.MaxReportPayload
// plus 64 KiB at least, 4 MiB by default).
const frameBudget = 3 << 20

// requestSize is about what a forwarded request adds to a frame.
func requestSize(m protocol.Message) int {
	if r, ok := m.(*protocol.Request); ok {
		return len(r.Body) + len(r.Path) + len(r.ContentType) + 64
	}
	return 64
}

// flush writes what is due: the ack of committed data and the next reports within the window.
func (k *conn) flush() error {
	c := k.c
	k.wmu.Lock()
	defer k.wmu.Unlock()
	var msgs []protocol.Message
	ack := k.applied.Load()
	if ack > k.ackSent.Load() {
		msgs = append(msgs, &protocol.Ack{Seq: ack})
	}
	k.mu.Lock()
	room := c.cfg.ReportWindow - int(k.reportSent-k.reportAcked)
	// The window is in bytes too, or a window of large uploads could pass what the hub queues
	// for a node (it ends the session, and the resend would do the same for ever).
	byteRoom := protocol.MaxReportBytesInFlight - k.unackedSize
	after := k.reportSent
	// Forwarded requests (bodies of up to 3 MiB) while their bodies stay within frameBudget,
	// the first whatever its size; reports only when one of the largest still fits beside
	// them. Otherwise the frame could pass the hub's message limit (4 MiB by default), which
	// ends the session and loses the answers of every request in it.
	n, size := 0, 0
	for n < len(k.requests) && (n == 0 || size+requestSize(k.requests[n]) <= frameBudget) {
		size += requestSize(k.requests[n])
		n++
	}
	msgs = append(msgs, k.requests[:n]...)
	k.requests = append([]protocol.Message(nil), k.requests[n:]...)
	again := len(k.requests) > 0
	k.mu.Unlock()
	if size+protocol.MaxReportPayload > frameBudget {
		again, room = true, 0 // the reports go in the next frame
	}
	if again {
		defer k.signal()
	}
	if room > 0 && byteRoom > 0 {
		entries, err := c.store.ReadOutbox(after, room, min(c.cfg.MaxReportBytes, byteRoom))
		if err != nil {
			return err
		}
		for i := range entries {
			msgs = append(msgs, &entries[i])
		}
		if len(entries) > 0 {
			k.mu.Lock()
			k.reportSent = entries[len(entries)-1].Seq
			for _, e := range entries {
				k.unacked = append(k.unacked, sentReport{e.Seq, len(e.Payload)})
				k.unackedSize += len(e.Payload)
			}
			k.mu.Unlock()
			c.metrics.reportsSent.Add(float64(len(entries)))
			if room == len(entries) {
				k.signal() // more may be waiting once the window opens or the frame limit let go
			}
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	frame := protocol.Encode(msgs...)
	if err := k.writeLocked(frame); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if ack > k.ackSent.Load() {
		k.ackSent.Store(ack)
	}
	c.metrics.bytesOut.Add(float64(len(frame)))
	if m, ok := c.store.(SentMarker); ok {
		k.mu.Lock()
		sent := k.reportSent
		k.mu.Unlock()
		m.MarkSent(sent)
	}
	return nil
}

// writeLocked sends one data frame, with the write deadline; the caller holds wmu.
func (k *conn) writeLocked(frame []byte) error {
	k.ws.SetWriteDeadline(k.c.now().Add(k.c.cfg.WriteTimeout))
	return k.ws.WriteMessage(websocket.BinaryMessage, frame)
}

// sendError tells the hub why the read loop is ending the session. Called from the read loop;
// if the writer is in the middle of a frame (perhaps stuck on a hub that does not read), the
// Error is left out: the session ends either way, and waiting could take the write timeout.
func (k *conn) sendError(code protocol.Code, msg string) {
	if !k.wmu.TryLock() {
		return
	}
	defer k.wmu.Unlock()
	k.ws.SetWriteDeadline(k.c.now().Add(k.c.cfg.WriteTimeout))
	k.ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Error{Code: code, Message: msg}))
}

// maybeRenew asks for a fresh certificate once the current one is past RenewAt of its life.
// Called on the writer goroutine.
func (k *conn) maybeRenew() {
	c := k.c
	k.mu.Lock()
	asked := k.renewing
	k.mu.Unlock()
	if asked {
		return
	}
	id := c.id.Current()
	life := id.Leaf.NotAfter.Sub(id.Leaf.NotBefore)
	if c.now().Before(id.Leaf.NotBefore.Add(time.Duration(float64(life) * c.cfg.RenewAt))) {
		return
	}
	csr, err := pki.CreateCSR(id.Key, id.Name)
	if err != nil {
		k.log.Warn().Err(err).Msg("cannot create a CSR for renewal")
		return
	}
	k.mu.Lock()
	k.renewing = true
	k.mu.Unlock()
	k.wmu.Lock()
	err = k.writeLocked(protocol.Encode(&protocol.Renew{CSR: csr}))
	k.wmu.Unlock()
	if err != nil {
		k.log.Warn().Err(err).Msg("cannot send the renewal request")
		return
	}
	k.log.Info().Time("not_after", id.Leaf.NotAfter).Msg("asked the cloud to renew the certificate")
}

func (k *conn) renewed(m *protocol.Renewed) {
	k.mu.Lock()
	asked := k.renewing
	k.renewing = false
	k.mu.Unlock()
	if !asked {
		k.log.Warn().Msg("ignoring a certificate the agent did not ask for")
		return
	}
	if len(m.Certificate) == 0 {
		k.log.Warn().Str("reason", m.Message).Msg("the cloud refused to renew the certificate")
		return
	}
	if err := k.c.id.Renewed(m.Certificate); err != nil {
		k.log.Warn().Err(err).Msg("the renewed certificate was not usable")
		return
	}
	k.log.Info().Msg("certificate renewed; the next connection uses it")
}
