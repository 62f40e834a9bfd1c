package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// listenerID names our listener inside mochi; clients record it as the listener they came from.
const listenerID = "tether-tcp"

// disconnectLinger is how long an MQTT 5 connection stays open after the broker wrote a
// DISCONNECT to it. mochi runs with PassiveClientDisconnect (see newServer), which leaves the
// connection open so the client can read the reason instead of losing it to a TCP reset; this
// bound restores the spec's "the server closes the connection" [MQTT-3.14.4-2].
const disconnectLinger = time.Second

// errPanic marks a connection whose serving goroutine panicked.
var errPanic = errors.New("broker: panic while serving client")

// listener is our implementation of mochi's listeners.Listener for plain TCP. It exists for three
// things mochi's own TCP listener does not do:
//
//   - each connection's EstablishFn runs under recover, so a panic in mochi while serving one
//     client (mochi-mqtt/server#501) ends that client and not the process;
//   - a CONNECT deadline and a per-write deadline on every connection, and a cap on open sockets;
//   - a bounded shutdown that also closes connections mochi does not know about yet (those
//     still before CONNECT), so Close returns within ShutdownTimeout unless a Handle callback
//     is still running.
//
// Fields are set at construction or by Init (before Serve), except those under mu.
type listener struct {
	b       *Broker
	address string
	ln      net.Listener // set by Init

	done chan struct{} // closed by Close; stops the accept back-off

	mu     sync.Mutex
	closed bool               // guarded by mu; once true no goroutine is added to wg
	conns  map[*conn]struct{} // guarded by mu; every connection whose goroutine is running
	wg     sync.WaitGroup     // the accept loop and one per connection
}

var _ listeners.Listener = (*listener)(nil)

func newListener(b *Broker, address string) *listener {
	return &listener{b: b, address: address, done: make(chan struct{}), conns: make(map[*conn]struct{})}
}

func (l *listener) ID() string       { return listenerID }
func (l *listener) Protocol() string { return "tcp" }

func (l *listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init opens the socket. mochi calls it from AddListener, so a bad address fails Run at once.
func (l *listener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

// Serve accepts until Close. mochi runs it in a goroutine of its own.
func (l *listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed || l.ln == nil {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()

	var backoff time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off as net/http does rather than spin
			// or give up listening for good.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.b.log.Warn().Err(err).Dur("retry_in", backoff).Msg("mqtt: accept failed")
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		l.admit(nc, establish)
	}
}

func (l *listener) admit(nc net.Conn, establish listeners.EstablishFn) {
	c := &conn{Conn: nc, l: l, remote: nc.RemoteAddr().String()}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = nc.Close()
		return
	}
	if len(l.conns) >= l.b.cfg.MaxClients+l.b.cfg.MaxPendingConnections {
		l.mu.Unlock()
		_ = nc.Close()
		l.b.reject(reasonConnectionLimit, c, nil, nil)
		return
	}
	l.conns[c] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	l.b.m.connections.Inc()
	go l.serve(c, establish)
}

// serve runs one connection: mochi's whole client life (CONNECT, session, read loop, clean-up)
// happens inside establish, on this goroutine.
func (l *listener) serve(c *conn, establish listeners.EstablishFn) {
	defer l.wg.Done()
	defer func() {
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
		l.b.m.connections.Dec()
	}()

	_ = c.Conn.SetReadDeadline(time.Now().Add(l.b.cfg.ConnectTimeout))
	err := l.establish(c, establish)
	_ = c.Conn.Close() // mochi closes it too on every path it finishes; this covers the rest
	l.b.connEnded(c, err)
}

func (l *listener) establish(c *conn, establish listeners.EstablishFn) (err error) {
	defer func() {
		if r := recover(); r != nil {
			stack := debug.Stack()
			err = fmt.Errorf("%w: %v", errPanic, r)
			l.b.containPanic(c, r, stack)
		}
	}()
	return establish(listenerID, c)
}

// Close stops accepting and ends every connection within ShutdownTimeout. mochi calls it from
// Server.Close. Its closeClients callback is not used: it lists clients with
// Clients.GetByListener, which takes the clients' read lock twice, and a client connecting or
// leaving in between (a writer waiting for that lock) would deadlock the stop. disconnectAll does
// the same job from one snapshot.
func (l *listener) Close(listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	close(l.done)
	conns := l.snapshot()
	l.mu.Unlock()

	if l.ln != nil {
		_ = l.ln.Close()
	}

	// Bound every read and write from here on, including writes already blocked on a client that
	// stopped reading, so the DISCONNECTs below cannot stall the stop one client at a time.
	deadline := time.Now().Add(l.b.cfg.ShutdownTimeout)
	for _, c := range conns {
		c.pin(deadline)
	}
	l.b.disconnectAll()
	// Connections that have not completed CONNECT are unknown to mochi and got no DISCONNECT.
	for _, c := range conns {
		if c.client.Load() == nil {
			_ = c.Conn.Close()
		}
	}

	waited := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(waited)
	}()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-waited:
	case <-t.C:
		// Reads and writes are past their deadlines; whatever still runs is blocked elsewhere (a
		// Handle callback, say). Cut the sockets so clients see the stop, then wait for it.
		l.mu.Lock()
		rest := l.snapshot()
		l.mu.Unlock()
		for _, c := range rest {
			_ = c.Conn.Close()
		}
		<-waited
	}
}

// snapshot must be called with mu held.
func (l *listener) snapshot() []*conn {
	cs := make([]*conn, 0, len(l.conns))
	for c := range l.conns {
		cs = append(cs, c)
	}
	return cs
}

// conn is the net.Conn mochi is handed. It embeds the socket (so mochi reads and writes it as
// usual) and adds what the broker needs per connection.
// disconnectHeader is the first byte of a DISCONNECT; mochi encodes one for an MQTT 3.1.1 client
// as this byte and a zero length.
const disconnectHeader = packets.Disconnect << 4

type conn struct {
	net.Conn
	l      *listener
	remote string // set at accept

	// client is the mochi client serving this connection, stored by the OnConnect hook once the
	// CONNECT is accepted; nil before. The panic clean-up and the shutdown read it.
	client atomic.Pointer[mqtt.Client]

	// pinned is a deadline (Unix ns, 0 = none) that overrides mochi's own: set at shutdown and
	// after the broker sent a DISCONNECT, so the connection ends by then whatever mochi does.
	pinned atomic.Int64

	rejected atomic.Bool // a rejection was already counted for this connection

	mu      sync.Mutex
	refused map[uint16][]int // guarded by mu; SUBSCRIBE packet id → filter indexes refused by the subscription limit
}

// Write gives every write a deadline (WriteTimeout, or the pinned deadline if sooner). A write
// that fails may have put part of a packet on the wire, so the connection is closed: the stream
// can no longer be framed, and closing makes mochi's reader end the client normally.
//
// mochi sends a DISCONNECT whatever the client's version (at shutdown, on a session takeover).
// MQTT 3.1.1 has no DISCONNECT from a server, and libmosquitto clients treat one as a protocol
// error and exit instead of reconnecting; for them it is not written (mochi writes each packet
// in one call), and hook.OnPacketSent closes the connection, which is how 3.1.1 ends a session.
func (c *conn) Write(p []byte) (int, error) {
	if len(p) == 2 && p[0] == disconnectHeader && p[1] == 0 {
		if cl := c.client.Load(); cl != nil && cl.Properties.ProtocolVersion < 5 {
			return len(p), nil
		}
	}
	d := time.Now().Add(c.l.b.cfg.WriteTimeout)
	if pin := c.pinned.Load(); pin != 0 && pin < d.UnixNano() {
		d = time.Unix(0, pin)
	}
	_ = c.Conn.SetWriteDeadline(d)
	n, err := c.Conn.Write(p)
	if err != nil {
		_ = c.Conn.Close()
	}
	return n, err
}

// SetDeadline is what mochi calls to apply the keepalive before each packet it reads. Only the
// read side takes it (Write sets its own deadline), and not once a deadline is pinned.
func (c *conn) SetDeadline(t time.Time) error {
	if c.pinned.Load() != 0 {
		return nil
	}
	err := c.Conn.SetReadDeadline(t)
	if pin := c.pinned.Load(); pin != 0 {
		// pin ran while we set mochi's deadline and may have been overwritten: the pin wins.
		_ = c.Conn.SetReadDeadline(time.Unix(0, pin))
	}
	return err
}

// pin makes t the last moment this connection is served, unless an earlier one is pinned.
func (c *conn) pin(t time.Time) {
	ns := t.UnixNano()
	for {
		cur := c.pinned.Load()
		if cur != 0 && cur <= ns {
			return
		}
		if c.pinned.CompareAndSwap(cur, ns) {
			break
		}
	}
	_ = c.Conn.SetReadDeadline(t)
	_ = c.Conn.SetWriteDeadline(t)
}

func (c *conn) noteRefused(packetID uint16, idx []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refused == nil {
		c.refused = make(map[uint16][]int)
	}
	c.refused[packetID] = idx
}

func (c *conn) takeRefused(packetID uint16) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	idx, ok := c.refused[packetID]
	if ok {
		delete(c.refused, packetID)
	}
	return idx
}

// connOf returns our conn behind a mochi client, or nil for the inline client.
func connOf(cl *mqtt.Client) *conn {
	if cl == nil {
		return nil
	}
	c, _ := cl.Net.Conn.(*conn)
	return c
}
