package mapper

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tetherhub/tether/twin"
)

// Config says where a mapper connects and which devices it serves.
type Config struct {
	// Broker is the MQTT broker's URL, e.g. "tcp://127.0.0.1:1883".
	Broker string
	// ClientID is the MQTT client id; empty picks a random one.
	ClientID string
	// Node is the node name for Membership and OnMembership; empty leaves them unused.
	Node string
	// Devices are the ids (namespace/name) of the devices this mapper serves.
	Devices []string
	// QoS of what the mapper publishes and subscribes to.
	QoS byte
	// Timeout bounds the wait for the answer to one request when its ctx has no earlier
	// deadline, and the connect.
	Timeout time.Duration
	// FollowDesired makes the mapper do what a real mapper does with a delta: write the expected
	// values to the device and report them back as its actual values.
	FollowDesired bool
	// OnDelta, if set, is called with every delta received, before FollowDesired acts on it.
	OnDelta func(Delta)
	// OnMembership, if set, is called with every membership/updated of Node.
	OnMembership func(twin.MembershipUpdatedMsg)
}

// DefaultConfig returns a configuration for a mapper of devices on broker (QoS 1, 10 s).
func DefaultConfig(broker string, devices ...string) Config {
	return Config{Broker: broker, Devices: devices, QoS: 1, Timeout: 10 * time.Second}
}

// Delta is one twin/update/delta received.
type Delta struct {
	Device   string            // namespace/name
	Values   map[string]string // property → expected value still to reach the device
	Received time.Time
	Msg      twin.DeltaMsg
}

// ResultError is an error result from the edge: {event_id, timestamp, code, reason}.
type ResultError struct {
	Code   int
	Reason string
}

func (e *ResultError) Error() string { return fmt.Sprintf("edge answered %d: %s", e.Code, e.Reason) }

// Sentinel errors of requests.
var (
	// ErrClosed is returned by requests made after Close, or interrupted by it.
	ErrClosed = errors.New("mapper: closed")
	// ErrConnectionLost is returned by requests waiting for an answer when the connection to the
	// broker is lost; the mapper does not reconnect.
	ErrConnectionLost = errors.New("mapper: connection lost")
)

// Mapper is a connected simulated mapper. Its methods are safe for concurrent use.
type Mapper struct {
	cfg    Config
	client paho.Client
	ids    atomic.Uint64
	prefix string // event id prefix, unique per mapper

	mu      sync.Mutex
	pending map[string]chan []byte // event_id → where its answer goes
	actual  map[string]map[string]string
	closed  bool

	// serves holds the devices of cfg.Devices: past the subscription budget the mapper
	// subscribes with wildcards and hears other devices' deltas, which are not its to answer.
	serves map[string]bool

	deltaMu sync.Mutex
	deltas  map[string]Delta // device → newest delta not yet handled (a real mapper acts on the latest)
	wake    chan struct{}
	done    chan struct{} // closed by Close
	worker  sync.WaitGroup

	lost     chan struct{} // closed when the connection is lost
	lostOnce sync.Once
}

// Connect connects a mapper and subscribes to its devices' answer topics.
func Connect(ctx context.Context, cfg Config) (*Mapper, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.QoS > 2 {
		return nil, fmt.Errorf("mapper: qos %d", cfg.QoS)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	if cfg.ClientID == "" {
		cfg.ClientID = "mapper-" + hex.EncodeToString(rnd[:])
	}
	m := &Mapper{
		cfg: cfg, prefix: cfg.ClientID + "-" + hex.EncodeToString(rnd[:3]) + "-",
		pending: map[string]chan []byte{}, actual: map[string]map[string]string{},
		deltas: map[string]Delta{}, wake: make(chan struct{}, 1), done: make(chan struct{}),
		lost: make(chan struct{}), serves: map[string]bool{},
	}
	for _, id := range cfg.Devices {
		m.serves[id] = true
	}
	opts := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.ClientID).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(cfg.Timeout).
		SetKeepAlive(30 * time.Second).SetOrderMatters(true).SetWriteTimeout(cfg.Timeout).
		SetConnectionLostHandler(func(paho.Client, error) { m.lostOnce.Do(func() { close(m.lost) }) })
	m.client = paho.NewClient(opts)
	if err := wait(ctx, m.client.Connect(), cfg.Timeout); err != nil {
		return nil, fmt.Errorf("mapper: connect %s: %w", cfg.Broker, err)
	}
	if err := wait(ctx, m.client.SubscribeMultiple(m.filters(), m.route), cfg.Timeout); err != nil {
		m.client.Disconnect(0)
		return nil, fmt.Errorf("mapper: subscribe: %w", err)
	}
	m.worker.Add(1)
	go m.work()
	return m, nil
}

// subscriptionBudget keeps a mapper under the broker's per-client subscription limit: past it,
// one wildcard per topic replaces the per-device filters.
const subscriptionBudget = 90

func (m *Mapper) filters() map[string]byte {
	f := map[string]byte{}
	suffixes := []string{"/twin/update/result", "/twin/update/delta", "/twin/get/result", "/state/update/result"}
	if len(m.cfg.Devices)*len(suffixes) > subscriptionBudget {
		for _, s := range suffixes {
			f["$hw/events/device/+/+"+s] = m.cfg.QoS
		}
	} else {
		for _, id := range m.cfg.Devices {
			for _, s := range suffixes {
				f["$hw/events/device/"+id+s] = m.cfg.QoS
			}
		}
	}
	if m.cfg.Node != "" {
		f["$hw/events/node/"+m.cfg.Node+"/membership/get/result"] = m.cfg.QoS
		f["$hw/events/node/"+m.cfg.Node+"/membership/updated"] = m.cfg.QoS
	}
	return f
}

// route runs on paho's router goroutine: it must not block.
func (m *Mapper) route(_ paho.Client, msg paho.Message) {
	topic, payload := msg.Topic(), msg.Payload()
	var h twin.Header
	if err := json.Unmarshal(payload, &h); err != nil {
		return
	}
	switch {
	case hasSuffix(topic, "/twin/update/delta"):
		var d twin.DeltaMsg
		if json.Unmarshal(payload, &d) != nil {
			return
		}
		id := deviceOf(topic)
		if !m.serves[id] {
			return
		}
		m.deltaMu.Lock()
		m.deltas[id] = Delta{Device: id, Values: d.Delta, Received: time.Now(), Msg: d}
		m.deltaMu.Unlock()
		select {
		case m.wake <- struct{}{}:
		default:
		}
		return
	case hasSuffix(topic, "/membership/updated"):
		if m.cfg.OnMembership != nil {
			var u twin.MembershipUpdatedMsg
			if json.Unmarshal(payload, &u) == nil {
				m.cfg.OnMembership(u)
			}
		}
		return
	}
	m.mu.Lock()
	ch := m.pending[h.EventID]
	delete(m.pending, h.EventID)
	m.mu.Unlock()
	if ch != nil {
		ch <- payload // buffered 1, sent once
	}
}

// work handles deltas off paho's goroutine: a report waits for its result, which paho delivers.
func (m *Mapper) work() {
	defer m.worker.Done()
	for {
		select {
		case <-m.done:
			return
		case <-m.wake:
		}
		m.deltaMu.Lock()
		batch := m.deltas
		m.deltas = map[string]Delta{}
		m.deltaMu.Unlock()
		for _, d := range batch {
			if m.cfg.OnDelta != nil {
				m.cfg.OnDelta(d)
			}
			if m.cfg.FollowDesired && len(d.Values) > 0 {
				ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
				m.Report(ctx, d.Device, d.Values)
				cancel()
			}
		}
	}
}

// Close disconnects. Requests waiting for an answer fail with ErrClosed.
func (m *Mapper) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	m.mu.Unlock()
	close(m.done)
	m.worker.Wait()
	m.client.Disconnect(100)
}

// Report publishes actual values of one device on twin/update and returns the success result
// (the edge has stored them), or a *ResultError.
func (m *Mapper) Report(ctx context.Context, device string, values map[string]string) (*twin.ResultMsg, error) {
	u := twin.Update{Twin: make(map[string]*twin.Report, len(values))}
	for k, v := range values {
		u.Twin[k] = &twin.Report{Actual: &v}
	}
	res, err := m.update(ctx, device, u)
	if err == nil {
		m.mu.Lock()
		a := m.actual[device]
		if a == nil {
			a = map[string]string{}
			m.actual[device] = a
		}
		maps.Copy(a, values)
		m.mu.Unlock()
	}
	return res, err
}

// Delete reports a null twin for each property: the device no longer has them.
func (m *Mapper) Delete(ctx context.Context, device string, props ...string) (*twin.ResultMsg, error) {
	u := twin.Update{Twin: make(map[string]*twin.Report, len(props))}
	for _, p := range props {
		u.Twin[p] = nil
	}
	res, err := m.update(ctx, device, u)
	if err == nil {
		m.mu.Lock()
		for _, p := range props {
			delete(m.actual[device], p)
		}
		m.mu.Unlock()
	}
	return res, err
}

func (m *Mapper) update(ctx context.Context, device string, u twin.Update) (*twin.ResultMsg, error) {
	u.EventID, u.Timestamp = m.nextID(), time.Now().UnixMilli()
	var res twin.ResultMsg
	if err := m.request(ctx, "$hw/events/device/"+device+"/twin/update", u.EventID, twin.EncodeUpdate(u), &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Get asks for the device's twin (twin/get) and returns twin/get/result.
func (m *Mapper) Get(ctx context.Context, device string) (*twin.ResultMsg, error) {
	id := m.nextID()
	var res twin.ResultMsg
	if err := m.request(ctx, "$hw/events/device/"+device+"/twin/get", id, twin.EncodeGet(twin.Get{EventID: id, Timestamp: time.Now().UnixMilli()}), &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// SetState reports the device's state (online, offline, ok, unknown, unhealthy).
func (m *Mapper) SetState(ctx context.Context, device, state string) (*twin.StateResultMsg, error) {
	id := m.nextID()
	var res twin.StateResultMsg
	payload := twin.EncodeStateUpdate(twin.StateUpdate{EventID: id, Timestamp: time.Now().UnixMilli(), State: state})
	if err := m.request(ctx, "$hw/events/device/"+device+"/state/update", id, payload, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Membership asks for the node's devices (membership/get). Config.Node must be set.
func (m *Mapper) Membership(ctx context.Context) (*twin.MembershipMsg, error) {
	if m.cfg.Node == "" {
		return nil, errors.New("mapper: Membership needs Config.Node")
	}
	id := m.nextID()
	var res twin.MembershipMsg
	if err := m.request(ctx, "$hw/events/node/"+m.cfg.Node+"/membership/get", id, twin.EncodeGet(twin.Get{EventID: id, Timestamp: time.Now().UnixMilli()}), &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Upload publishes payload on topic ($hw/events/upload/... or SYS/dis/upload_records) and
// returns once the broker acknowledged it: at QoS 1, once the edge has made it durable.
func (m *Mapper) Upload(ctx context.Context, topic string, payload []byte) error {
	return m.wait(ctx, m.client.Publish(topic, m.cfg.QoS, false, payload))
}

// Actual returns the values this mapper last reported successfully for device.
func (m *Mapper) Actual(device string) map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.actual[device])
}

// request publishes payload on topic and decodes the answer carrying eventID into out; an
// error answer (with a code) becomes a *ResultError.
func (m *Mapper) request(ctx context.Context, topic, eventID string, payload []byte, out any) error {
	ch := make(chan []byte, 1)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	m.pending[eventID] = ch
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.pending, eventID)
		m.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	if err := m.wait(ctx, m.client.Publish(topic, m.cfg.QoS, false, payload)); err != nil {
		return fmt.Errorf("mapper: publish %s: %w", topic, err)
	}
	select {
	case b := <-ch:
		var e twin.ErrorMsg
		if json.Unmarshal(b, &e) == nil && e.Code != 0 {
			return &ResultError{Code: e.Code, Reason: e.Reason}
		}
		return json.Unmarshal(b, out)
	case <-ctx.Done():
		return fmt.Errorf("mapper: no answer to %s: %w", topic, ctx.Err())
	case <-m.done:
		return ErrClosed
	case <-m.lost:
		return ErrConnectionLost
	}
}

func (m *Mapper) nextID() string { return fmt.Sprint(m.prefix, m.ids.Add(1)) }

// wait waits for a paho token within ctx and the mapper's timeout, failing at once if the
// connection is lost (paho keeps a QoS 1 token open until a reconnect that never comes).
func (m *Mapper) wait(ctx context.Context, t paho.Token) error {
	timer := time.NewTimer(m.cfg.Timeout)
	defer timer.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-m.lost:
		return ErrConnectionLost
	case <-timer.C:
		return errors.New("timed out")
	}
}

// wait waits for a paho token within ctx and d.
func wait(ctx context.Context, t paho.Token, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return errors.New("timed out")
	}
}

func hasSuffix(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}

// deviceOf returns namespace/name of $hw/events/device/{ns}/{name}/...
func deviceOf(topic string) string {
	const p = "$hw/events/device/"
	if len(topic) <= len(p) {
		return ""
	}
	rest := topic[len(p):]
	slash := 0
	for i := 0; i < len(rest); i++ {
		if rest[i] == '/' {
			slash++
			if slash == 2 {
				return rest[:i]
			}
		}
	}
	return rest
}
