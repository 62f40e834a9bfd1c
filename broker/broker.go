package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

var (
	// ErrAlreadyRun is returned by Run when the Broker has been run before; a Broker serves once.
	ErrAlreadyRun = errors.New("broker: Run called more than once")

	// ErrInvalidTopic is returned by Publish for a topic name a client could not subscribe to
	// exactly: empty, longer than 65535 bytes, not UTF-8, holding NUL or a wildcard, or under $SYS.
	ErrInvalidTopic = errors.New("broker: invalid topic name")

	// ErrInvalidFilter is returned by Handle for a filter that is not a valid MQTT topic filter
	// (empty, too long, not UTF-8, a wildcard that is not a whole level, '#' not last), or is a
	// shared subscription ($share/...), which has no meaning for an internal consumer.
	ErrInvalidFilter = errors.New("broker: invalid topic filter")

	// ErrInvalidQoS is returned by Publish for a QoS above 2.
	ErrInvalidQoS = errors.New("broker: invalid QoS")
)

// Broker is the edge agent's embedded MQTT broker. Create it with New, then Run it once.
type Broker struct {
	cfg     Config         // set at construction
	log     zerolog.Logger // set at construction
	sampled zerolog.Logger // set at construction; for per-connection events a client can provoke at will
	srv     *mqtt.Server   // set at construction; safe for concurrent use
	m       *metrics       // set at construction

	// handlers are Handle's consumers in registration order, matched from the OnPublish hook
	// (see hook.OnPublish for why not mochi's inline subscriptions). The slice is replaced, never
	// modified, so dispatch reads it without a lock; hmu serialises the replacements.
	hmu      sync.Mutex
	handlers atomic.Pointer[[]handler]

	// retained are the topics clients keep a retained message on, for MaxRetained (mochi's own
	// retained set also holds its $SYS topics). Kept in step by the hook: OnPublish adds and
	// clears, OnRetainedExpired drops.
	rmu      sync.Mutex
	retained map[string]struct{}

	subs subscribed // Subscribed's memory; its epoch is moved by hook

	offline offlineHeld // bytes held for disconnected sessions, kept by hook

	started atomic.Bool
	ready   chan struct{} // closed by Run once listening
	addr    net.Addr      // written by Run before ready is closed, read only after
}

// New builds a broker from cfg; it does not listen until Run. Metrics are registered on reg (nil
// skips registration); registering twice on one registry fails.
func New(cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With().Str("component", "mqtt").Logger()
	b := &Broker{
		cfg:     cfg,
		log:     log,
		sampled: log.Sample(&zerolog.BurstSampler{Burst: 20, Period: time.Second}),
		m:       newMetrics(),
		ready:   make(chan struct{}),
	}
	b.srv = newServer(cfg, log)
	if err := b.srv.AddHook(&hook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("broker: add hook: %w", err)
	}
	if err := b.m.register(reg, b.srv, &b.offline); err != nil {
		return nil, fmt.Errorf("broker: register metrics: %w", err)
	}
	return b, nil
}

func newServer(cfg Config, log zerolog.Logger) *mqtt.Server {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = mochiPacketLimit(cfg.MaxPacketSize) // mochi's default is unlimited (mochi-mqtt/server#502)
	caps.MaximumClients = int64(cfg.MaxClients)
	caps.ReceiveMaximum = cfg.MaxInflight
	caps.MaximumInflight = cfg.MaxInflight
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	caps.MaximumClientWritesPending = int32(cfg.MaxPendingWrites)
	caps.MaximumMessageExpiryInterval = int64(cfg.MaxMessageExpiry / time.Second)
	caps.TopicAliasMaximum = cfg.TopicAliasMaximum
	// The three flags mochi documents for the Eclipse paho interoperability suites (MQTT 3.1.1
	// and 5). PassiveClientDisconnect leaves a connection open after the broker's DISCONNECT so
	// the client can read the reason; conn closes it after disconnectLinger (hook.OnPacketSent).
	caps.Compatibilities.ObscureNotAuthorized = true
	caps.Compatibilities.PassiveClientDisconnect = true
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	return mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 newMochiLogger(log),
		SysTopicResendInterval: int64(cfg.SysTopicInterval / time.Second),
		InlineClient:           true, // Publish goes through mochi's inline client
	})
}

// mochiPacketLimit converts a maximum packet size as MQTT defines it (the whole packet, fixed
// header included) into the value for mochi's MaximumPacketSize, which mochi compares with the
// remaining length plus one, leaving out the 1 to 4 bytes that encode the length.
func mochiPacketLimit(max uint32) uint32 {
	rem := max - 2 // at least one header byte and one length byte
	for 1+varintLen(rem)+rem > max {
		rem--
	}
	return rem + 1
}

// varintLen is the size of n as an MQTT variable byte integer.
func varintLen(n uint32) uint32 {
	switch {
	case n < 128:
		return 1
	case n < 16_384:
		return 2
	case n < 2_097_152:
		return 3
	}
	return 4
}

// Run listens on cfg.Listen, serves until ctx is done, then stops: DISCONNECT to MQTT 5 clients,
// every connection closed within ShutdownTimeout, every connection and writer goroutine gone
// (mochi's housekeeping goroutine is told to stop and exits on its own moments later). It returns
// nil on a clean stop, an error if it could not listen, and ErrAlreadyRun on a second call.
func (b *Broker) Run(ctx context.Context) error {
	if !b.started.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}
	l := newListener(b, b.cfg.Listen)
	if err := b.srv.AddListener(l); err != nil {
		return fmt.Errorf("broker: listen on %s: %w", b.cfg.Listen, err)
	}
	if err := b.srv.Serve(); err != nil {
		_ = b.srv.Close()
		return fmt.Errorf("broker: serve: %w", err)
	}
	b.addr = l.ln.Addr()
	close(b.ready)
	b.log.Info().Str("addr", b.addr.String()).Msg("mqtt broker listening")

	<-ctx.Done()
	_ = b.srv.Close() // closes our listener, which waits for every connection goroutine
	b.log.Info().Msg("mqtt broker stopped")
	return nil
}

// Ready is closed once Run is listening.
func (b *Broker) Ready() <-chan struct{} { return b.ready }

// Addr is the address Run listens on, or nil before Ready is closed.
func (b *Broker) Addr() net.Addr {
	select {
	case <-b.ready:
		return b.addr
	default:
		return nil
	}
}

// Publish sends a message from the edge agent itself to every client subscribed to topic, at
// most at qos (each subscriber gets min(qos, its subscription's QoS)). It never blocks on a
// client: a subscriber whose queue (MaxPendingWrites) or window (MaxInflight) is full misses the
// message, counted in tether_edge_mqtt_messages_dropped_total. Handle consumers do not see it.
// Safe for concurrent use, from any goroutine, including from a Handle callback.
func (b *Broker) Publish(topic string, payload []byte, qos byte) error {
	if qos > 2 {
		return fmt.Errorf("%w: %d", ErrInvalidQoS, qos)
	}
	if !validTopic(topic) {
		return fmt.Errorf("%w: %q", ErrInvalidTopic, topic)
	}
	if err := b.srv.Publish(topic, payload, false, qos); err != nil {
		return fmt.Errorf("broker: publish %q: %w", topic, err)
	}
	return nil
}

// subscribed reports whether some client holds a subscription matching topic (see the type
// subscribed for how fresh the answer is).
func (b *Broker) subscribed(topic string) bool {
	return b.subs.get(topic, b.scanSubscribed)
}

// scanSubscribed asks mochi's topic index.
func (b *Broker) scanSubscribed(topic string) bool {
	s := b.srv.Topics.Subscribers(topic)
	return len(s.Subscriptions) > 0 || len(s.Shared) > 0 || len(s.InlineSubscriptions) > 0
}

// Topic is a topic the agent publishes on again and again, a device's result topic say: its name
// is checked once, and it remembers whether a client subscribed to it. Create it with
// Broker.Topic; it is safe for concurrent use.
type Topic struct {
	b    *Broker
	name string
	memo atomic.Uint64 // (subscribed's epoch + 1) << 1 | the answer; 0 until first asked
}

// Topic returns the Topic called name, or ErrInvalidTopic for a name Publish would refuse.
func (b *Broker) Topic(name string) (*Topic, error) {
	if !validTopic(name) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidTopic, name)
	}
	return &Topic{b: b, name: name}, nil
}

// Name is the topic's name.
func (t *Topic) Name() string { return t.name }

// Subscribed reports whether some client holds a subscription matching the topic, so that the
// caller can skip building a message nobody would receive. A client that has received its SUBACK
// is counted by every call made after that; a "yes" may outlive the subscription for a moment
// (the message then goes to nobody, as any publish to a topic without subscribers does). It costs
// an atomic load unless the broker's subscriptions changed since the last call.
func (t *Topic) Subscribed() bool {
	e := t.b.subs.epoch.Load() + 1 // so that a memo of 0 is never current
	if m := t.memo.Load(); m>>1 == e {
		return m&1 == 1
	}
	yes := t.b.scanSubscribed(t.name)
	m := e << 1
	if yes {
		m |= 1
	}
	t.memo.Store(m)
	return yes
}

// Publish is Broker.Publish on the topic.
func (t *Topic) Publish(payload []byte, qos byte) error {
	if qos > 2 {
		return fmt.Errorf("%w: %d", ErrInvalidQoS, qos)
	}
	if err := t.b.srv.Publish(t.name, payload, false, qos); err != nil {
		return fmt.Errorf("broker: publish %q: %w", t.name, err)
	}
	return nil
}

// ErrNoRoom is what a Handle consumer returns (wrapped) when it cannot take a message for lack of
// room (a full outbox) and has given up waiting for some.
var ErrNoRoom = errors.New("broker: no room for the message")

// ErrRefused is what a Handle consumer returns (wrapped) for a message it will never take, as
// it breaks one of the consumer's own bounds: sent again, it would only be refused again.
var ErrRefused = errors.New("broker: message refused by its consumer")

// Handle registers h to receive every PUBLISH a client sends on a topic matching filter, and
// every client's will message on such a topic. See the package documentation for the goroutine h
// runs on, ordering, and what blocking in h does. There is no way to remove a handler: consumers
// live as long as the broker.
//
// h returns nil once it has taken care of the message (stored it, or answered it). An error
// means it could not (the consumer is stopping): the PUBLISH is then neither acknowledged nor
// routed, and the client sends it again after it reconnects. An error wrapping ErrNoRoom means
// the consumer has no room for it now: an MQTT 5 client's QoS 1 PUBLISH is answered with
// PUBACK 0x97 (quota exceeded), and any other client's connection is closed, which is how MQTT
// 3.1.1 tells a client its message was not taken; the client sends it again after it reconnects.
// An error wrapping ErrRefused means the consumer will never take it: an MQTT 5 client's QoS 1
// PUBLISH is answered with PUBACK 0x83 (implementation specific error: the receiver is not
// willing to accept it), and any other is acknowledged as usual, so that the client does not
// send it again for ever, but not routed to subscribers.
func (b *Broker) Handle(filter string, h func(topic string, payload []byte) error) error {
	if h == nil {
		return errors.New("broker: Handle: nil handler")
	}
	return b.HandleFrom(filter, func(_ Publisher, topic string, payload []byte) error { return h(topic, payload) })
}

// Publisher is the client a message came from, as a consumer sees it. Closed reports whether its
// connection has ended (closed, or taken over by the same client connecting again); the client
// then sends what it had not seen acknowledged again, on its new connection. For a will message
// Closed is always false: nobody will send it again.
type Publisher interface{ Closed() bool }

// client is the Publisher of a client's message. mochi's Closed alone would not do: with
// PassiveClientDisconnect a taken-over client is stopped only once its reader, the goroutine
// the consumer holds, gets back to reading.
type client struct{ cl *mqtt.Client }

func (c client) Closed() bool { return c.cl.Closed() || c.cl.IsTakenOver() }

// willSender is the Publisher of will messages.
type willSender struct{}

func (willSender) Closed() bool { return false }

// HandleFrom is Handle for a consumer that may hold its publisher a long time (waiting for room,
// say): it is also given the publisher, so that it can give up once the publisher's connection
// has ended, instead of taking the message after the client sent it again on a new connection,
// out of order with what the client sent since. Giving up is returning an error, as for a
// consumer that is stopping.
func (b *Broker) HandleFrom(filter string, h func(from Publisher, topic string, payload []byte) error) error {
	if h == nil {
		return errors.New("broker: Handle: nil handler")
	}
	if !validFilter(filter) {
		return fmt.Errorf("%w: %q", ErrInvalidFilter, filter)
	}
	b.hmu.Lock()
	defer b.hmu.Unlock()
	var hs []handler
	if cur := b.handlers.Load(); cur != nil {
		hs = slices.Clone(*cur)
	}
	hs = append(hs, handler{filter: filter, fn: h})
	b.handlers.Store(&hs)
	return nil
}

// handler is one Handle consumer.
type handler struct {
	filter string
	fn     func(from Publisher, topic string, payload []byte) error
}

// disconnectAll sends every client connected through our listener a DISCONNECT "server shutting
// down" (MQTT 5; 3.1.1 clients are just closed, see hook.OnPacketSent).
func (b *Broker) disconnectAll() {
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Listener == listenerID && !cl.Closed() {
			_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// dispatch hands a client's message to every matching handler, in registration order, on the
// calling goroutine, and reports whether one matched. A panicking handler is not recovered
// here: see hook.OnPublish.
//
// It runs at the bottom of mochi's read path, whose frames pass 800-byte packets by value, and a
// handler may block there for a store commit: nothing here copies a packet, so the connection's
// stack stays in the smaller size class while it waits (see TestHandlerStack).
func (b *Broker) dispatch(from Publisher, topic string, payload []byte) (matched bool, err error) {
	hs := b.handlers.Load()
	if hs == nil {
		return false, nil
	}
	for _, h := range *hs {
		if matchFilter(h.filter, topic) {
			matched = true
			if herr := h.fn(from, topic, payload); herr != nil && err == nil {
				err = herr
			}
		}
	}
	return matched, err
}

// matchFilter reports whether topic matches the valid topic filter filter as MQTT defines it: '+'
// matches one whole level, '#' the rest of the levels including none ("a/#" matches "a"), and a
// filter starting with a wildcard does not match a topic starting with '$' [MQTT-4.7.2-1].
func matchFilter(filter, topic string) bool {
	if topic != "" && topic[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		switch {
		case !fmore:
			return !tmore
		case !tmore:
			return frest == "#"
		}
		filter, topic = frest, trest
	}
}

// dispatchContained is dispatch for callers that are not a connection's goroutine (a delayed will
// sent from mochi's event loop), where nothing above would contain a panic.
func (b *Broker) dispatchContained(topic string, payload []byte) {
	defer func() {
		if r := recover(); r != nil {
			b.m.panics.Inc()
			b.sampled.Error().Str("topic", topic).Str("panic", fmt.Sprint(r)).Msg("mqtt: Handle callback panicked on a will message; contained")
		}
	}()
	if _, err := b.dispatch(willSender{}, topic, payload); err != nil {
		b.sampled.Warn().Err(err).Str("topic", topic).Msg("mqtt: a will message was not taken by its consumer")
	}
}

// containPanic runs on the connection's goroutine after its establish function panicked, once
// mochi's deferred clean-up has run: mochi's deferred cl.Stop has closed the socket and ended the
// client's write loop, and its connected-clients count is back down. What the panic skipped is
// mochi's non-deferred clean-up at the end of its attachClient: the will, and dropping the
// session (subscriptions in the topic index, inflight messages, the entry in Server.Clients).
// Without that every panic would leave a session behind for good.
func (b *Broker) containPanic(c *conn, r any, stack []byte) {
	c.rejected.Store(true)
	b.m.panics.Inc()
	b.m.rejected.WithLabelValues(reasonPanic).Inc()
	cl := c.client.Load()
	ev := b.sampled.Error().Str("remote", c.remote).Str("panic", fmt.Sprint(r)).Bytes("stack", stack)
	if cl != nil {
		ev = ev.Str("client", cl.ID)
	}
	ev.Msg("mqtt: panic while serving a client contained; its connection is closed and its session dropped")

	_ = c.Conn.Close()
	if cl == nil {
		return // CONNECT was not accepted: mochi holds nothing for this connection
	}
	cl.Stop(errPanic) // idempotent; mochi's deferred Stop normally got here first
	b.contained("drop session after panic", func() { b.dropSession(cl) })
}

// dropSession does for a client whose goroutine panicked what mochi does for a client that
// disconnected with an expiring session, and also for a persistent one: a client that made the
// broker panic is not trusted with a session to come back to.
func (b *Broker) dropSession(cl *mqtt.Client) {
	if cl.IsTakenOver() {
		return // another connection with this client id owns the session now
	}
	b.contained("publish will after panic", func() { b.publishWill(cl) })
	cl.ClearInflights()
	b.srv.UnsubscribeClient(cl)
	// Delete only our own entry: a client that reconnected with the same id in the meantime has
	// replaced it. (mochi's own clean-up checks only IsTakenOver; a take-over racing between Get
	// and Delete remains possible, as it is there.)
	if cur, ok := b.srv.Clients.Get(cl.ID); ok && cur == cl {
		b.srv.Clients.Delete(cl.ID)
	}
}

// publishWill publishes the client's will, as mochi does when a connection ends without
// DISCONNECT. A will delay is not honoured on this path (mochi's delayed-will queue is not
// reachable from outside); the will goes out at once.
func (b *Broker) publishWill(cl *mqtt.Client) {
	if !atomic.CompareAndSwapUint32(&cl.Properties.Will.Flag, 1, 0) {
		return
	}
	w := cl.Properties.Will
	if err := b.srv.Publish(w.TopicName, w.Payload, w.Retain, w.Qos); err != nil {
		b.log.Warn().Err(err).Str("client", cl.ID).Msg("mqtt: publish will after panic")
	}
	if _, err := b.dispatch(willSender{}, w.TopicName, w.Payload); err != nil {
		b.log.Warn().Err(err).Str("client", cl.ID).Msg("mqtt: a will message was not taken by its consumer")
	}
}

// contained runs f, logging instead of propagating a panic: used for clean-up that already runs
// inside a recover, where a second panic would take the process down.
func (b *Broker) contained(what string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			b.m.panics.Inc()
			b.sampled.Error().Str("panic", fmt.Sprint(r)).Msgf("mqtt: %s panicked; contained", what)
		}
	}()
	f()
}

// connEnded classifies how a connection ended and counts it if it was refused.
func (b *Broker) connEnded(c *conn, err error) {
	if err == nil || errors.Is(err, errPanic) {
		return
	}
	reason := classify(c, err)
	if reason == "" {
		b.log.Debug().Err(err).Str("remote", c.remote).Msg("mqtt: connection ended")
		return
	}
	b.reject(reason, c, c.client.Load(), err)
}

// reject counts a refused connection (once per connection) and logs it, sampled.
func (b *Broker) reject(reason string, c *conn, cl *mqtt.Client, err error) {
	if !c.rejected.CompareAndSwap(false, true) {
		return
	}
	b.m.rejected.WithLabelValues(reason).Inc()
	ev := b.sampled.Warn().Str("reason", reason).Str("remote", c.remote)
	if cl != nil {
		ev = ev.Str("client", cl.ID)
	}
	if err != nil {
		ev = ev.Err(err)
	}
	ev.Msg("mqtt: client refused")
}

// classify maps the error mochi's establish function returned to a rejection reason, or "" for
// an ordinary end (the client left, the network failed, the keepalive expired, the broker stopped).
func classify(c *conn, err error) string {
	switch {
	case errors.Is(err, packets.ErrPacketTooLarge):
		return reasonOversize
	case errors.Is(err, packets.ErrServerBusy):
		return reasonClientLimit // mochi returns it only for MaximumClients
	case errors.Is(err, packets.ErrClientIdentifierNotValid):
		return reasonClientID
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed), errors.Is(err, mqtt.ErrConnectionClosed):
		return ""
	}
	if ne := net.Error(nil); errors.As(err, &ne) {
		if ne.Timeout() && c.client.Load() == nil && c.pinned.Load() == 0 {
			return reasonConnectTimeout
		}
		return ""
	}
	var code packets.Code
	if errors.As(err, &code) && code.Code < packets.ErrUnspecifiedError.Code {
		return "" // a success or disconnect code, not a refusal
	}
	return reasonProtocol // a decode error or protocol violation mochi closed the connection for
}

// validTopic reports whether topic may be published to by the broker itself.
func validTopic(topic string) bool {
	return topic != "" && len(topic) <= 65535 && utf8.ValidString(topic) &&
		!strings.ContainsRune(topic, 0) && mqtt.IsValidFilter(topic, true)
}

// validFilter reports whether filter is a topic filter a client could subscribe with, excluding
// shared subscriptions. mochi's IsValidFilter accepts "a+/b"; MQTT requires a wildcard to fill
// its level, so each level is checked here.
func validFilter(filter string) bool {
	if filter == "" || len(filter) > 65535 || !utf8.ValidString(filter) || strings.ContainsRune(filter, 0) {
		return false
	}
	if mqtt.IsSharedFilter(filter) || !mqtt.IsValidFilter(filter, false) {
		return false
	}
	levels := strings.Split(filter, "/")
	for i, lv := range levels {
		if strings.ContainsAny(lv, "+#") && len(lv) != 1 {
			return false
		}
		if lv == "#" && i != len(levels)-1 {
			return false
		}
	}
	return true
}

// keepRetained reports whether a client's retained PUBLISH on topic may be kept, and counts it:
// clearing (an empty payload) and replacing always may, a new topic only below MaxRetained.
func (b *Broker) keepRetained(topic string, set bool) bool {
	b.rmu.Lock()
	defer b.rmu.Unlock()
	if !set {
		delete(b.retained, topic)
		return true
	}
	if _, ok := b.retained[topic]; ok {
		return true
	}
	if len(b.retained) >= b.cfg.MaxRetained {
		return false
	}
	if b.retained == nil {
		b.retained = map[string]struct{}{}
	}
	b.retained[topic] = struct{}{}
	return true
}
