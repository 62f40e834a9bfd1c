package engine

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/broker"
	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/twin"
)

// Config configures the engine.
type Config struct {
	// Node is this node's name: the {node} of the membership topics.
	Node string
	// Limits bound what a device may send (SPEC §10).
	Limits twin.Limits
	// MaxDevices bounds the devices the engine serves. Devices routed to the node beyond it are
	// not served (their topics are answered with 500, and the condition is logged and counted).
	MaxDevices int
	// QoS is the QoS of every message the engine publishes to devices.
	QoS byte
	// UploadRetry is the longest wait between attempts to queue an upload while the outbox is
	// full. The publisher gets no PUBACK meanwhile (backpressure), so nothing is dropped.
	UploadRetry time.Duration
	// UploadHold is how long an upload waits for room in the outbox before it is given up
	// without a PUBACK: the device keeps it and sends it again, while its connection (which
	// cannot be read meanwhile, and may be gone) is freed.
	UploadHold time.Duration
	// StatusEvery and StatusRate bound how often the devices' twins and state are written into
	// the edge's copies of their Devices (see status.go): at most one commit per StatusEvery,
	// and StatusRate Devices written a second.
	StatusEvery time.Duration
	StatusRate  int
}

// DefaultConfig returns the defaults for node.
func DefaultConfig(node string) Config {
	return Config{
		Node:        node,
		Limits:      twin.DefaultLimits(),
		MaxDevices:  10_000,
		QoS:         1,
		UploadRetry: time.Second,
		UploadHold:  30 * time.Second,
		StatusEvery: time.Second,
		StatusRate:  100,
	}
}

// Validate reports the first unusable setting, naming it as a config key.
func (c Config) Validate() error {
	switch {
	case c.Node == "" || strings.ContainsAny(c.Node, "/+#"):
		return fmt.Errorf("twin: node name %q cannot be a topic level", c.Node)
	case c.MaxDevices < 1:
		return fmt.Errorf("twin: maxDevices must be at least 1, got %d", c.MaxDevices)
	case c.QoS > 2:
		return fmt.Errorf("twin: qos must be 0, 1 or 2, got %d", c.QoS)
	case c.UploadRetry <= 0:
		return fmt.Errorf("twin: uploadRetry must be positive, got %s", c.UploadRetry)
	case c.StatusEvery <= 0:
		return fmt.Errorf("twin: statusEvery must be positive, got %s", c.StatusEvery)
	case c.StatusRate < 1:
		return fmt.Errorf("twin: statusRate must be at least 1, got %d", c.StatusRate)
	case c.UploadHold < c.UploadRetry:
		return fmt.Errorf("twin: uploadHold must be at least uploadRetry (%s), got %s", c.UploadRetry, c.UploadHold)
	}
	return c.Limits.Validate()
}

// Store is what the engine needs of the edge store (*edgestore.Store).
type Store interface {
	// Subscribe registers fn for every commit's changes; called before the first write.
	Subscribe(fn func([]edgestore.Change))
	Get(storeKey string) (*edgestore.Record, error)
	List(prefix string) ([]*edgestore.Record, uint64, error)
	Twins() (map[string][]byte, error)
	WriteTwin(ctx context.Context, id string, state []byte, reports ...edgestore.Entry) (int, error)
	Enqueue(ctx context.Context, entries ...edgestore.Entry) error
	SetStatus(ctx context.Context, writes []edgestore.StatusWrite) (int, error)
}

// Broker is what the engine needs of the MQTT broker (*broker.Broker).
type Broker interface {
	Handle(filter string, h func(topic string, payload []byte) error) error
	// HandleFrom is Handle with the publisher, for handlers that may hold it a long time.
	HandleFrom(filter string, h func(from broker.Publisher, topic string, payload []byte) error) error
	// Topic returns the topic the engine publishes on; it remembers whether a client subscribed
	// to it, and messages nobody would receive are neither encoded nor published.
	Topic(name string) (*broker.Topic, error)
}

// Deps are the engine's collaborators.
type Deps struct {
	Store   Store
	Broker  Broker
	Log     zerolog.Logger
	Metrics prometheus.Registerer // nil: not registered
	Now     func() time.Time      // nil: time.Now
	EventID func() string         // ids of unsolicited messages; nil: random UUIDs
}

// Engine keeps the twins of the node's devices. Create it with New before the store's first
// write, then Run it.
type Engine struct {
	cfg     Config
	store   Store
	broker  Broker
	log     zerolog.Logger
	sampled zerolog.Logger // for events a device can provoke at will
	m       *metrics
	now     func() time.Time
	eventID func() string

	membershipResult, membershipUpdated *broker.Topic // set at construction

	// pubs are the publishers' queues (see publish); a device's messages all go through one.
	pubs []chan pubJob // set at construction
	seed maphash.Seed  // set at construction; picks a device's publisher

	ready chan struct{}   // closed by Run once the stored devices are loaded
	done  chan struct{}   // closed when Run returns
	ctx   context.Context // Run's context; written before ready is closed, read after

	mu      sync.RWMutex                 // guards devices, models and device.refused; taken before a device's mu, never while waiting on one
	devices map[string]*device           // id (namespace/name) → device
	models  map[string]map[string]string // namespace/name → property → type

	shelved map[string]*stored // stored twins of devices not served yet (see shelve); Run's goroutine only

	pmu     sync.Mutex          // guards pending
	pending map[string]struct{} // store keys of Devices and DeviceModels changed since last looked at
	wake    chan struct{}       // capacity 1: pending has keys

	smu   sync.Mutex          // guards dirty
	dirty map[string]statusOf // devices whose stored Device should show a newer twin or state (status.go)
	order []string            // dirty's devices, the longest waiting first
	swake chan struct{}       // capacity 1: dirty has devices
}

// device is one served device.
type device struct {
	id, ns, name string
	topics       deviceTopics // set at construction

	refused bool // guarded by Engine.mu: beyond MaxDevices, known but not served

	// mu guards everything below. It is held across the store write of a change, so one
	// device's changes are stored, answered and published in the order they were accepted.
	mu   sync.Mutex
	gone bool // removed from the node; its topics answer 404
	spec deviceSpec
	// uidJSON is spec.UID as a JSON string, kept with the stored twin (nil if none).
	uidJSON []byte
	types   map[string]string // the DeviceModel's property types
	tw      twin.Twin
	state   twin.DeviceState
}

// stored is a device's state in the edge store.
type stored struct {
	Twin  twin.Twin        `json:"twin"`
	State twin.DeviceState `json:"state"`
	// UID is the uid of the Device the twin belongs to ("" before it was kept): a Device
	// made again under the same name while the agent was down does not inherit the twin.
	UID string `json:"uid,omitempty"`
}

// New builds the engine: it subscribes to the store's changes and registers the MQTT handlers,
// so it must be called before the store's first write and the broker's Run.
func New(cfg Config, d Deps) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Store == nil || d.Broker == nil {
		return nil, errors.New("twin: engine needs a store and a broker")
	}
	e := &Engine{
		cfg: cfg, store: d.Store, broker: d.Broker, now: d.Now, eventID: d.EventID,
		log:     d.Log.With().Str("component", "twin").Logger(),
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		devices: map[string]*device{},
		models:  map[string]map[string]string{},
		pending: map[string]struct{}{},
		wake:    make(chan struct{}, 1),
		dirty:   map[string]statusOf{},
		swake:   make(chan struct{}, 1),
		seed:    maphash.MakeSeed(),
	}
	for range publishers {
		e.pubs = append(e.pubs, make(chan pubJob, publishQueue))
	}
	e.sampled = e.log.Sample(&zerolog.BurstSampler{Burst: 20, Period: time.Second})
	var err error
	if e.membershipResult, err = d.Broker.Topic(nodePrefix + cfg.Node + suffixMembershipGet + suffixResult); err != nil {
		return nil, fmt.Errorf("twin: %w", err)
	}
	if e.membershipUpdated, err = d.Broker.Topic(nodePrefix + cfg.Node + suffixMembershipUpd); err != nil {
		return nil, fmt.Errorf("twin: %w", err)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.eventID == nil {
		e.eventID = twin.NewEventID(rand.Reader)
	}
	e.m = newMetrics(d.Metrics, e)
	d.Store.Subscribe(e.onStoreChanges)
	for filter, h := range map[string]func(string, []byte) error{
		filterTwinUpdate:    e.onDevice(e.onTwinUpdate),
		filterTwinGet:       e.onDevice(e.onTwinGet),
		filterStateUpdate:   e.onDevice(e.onStateUpdate),
		filterMembershipGet: e.onDevice(e.onMembershipGet),
	} {
		if err := d.Broker.Handle(filter, h); err != nil {
			return nil, fmt.Errorf("twin: %w", err)
		}
	}
	for _, filter := range []string{filterUpload, topicUploadRecords} {
		if err := d.Broker.HandleFrom(filter, e.onUpload); err != nil {
			return nil, fmt.Errorf("twin: %w", err)
		}
	}
	return e, nil
}

// Ready is closed once the engine has loaded the stored devices and answers devices.
func (e *Engine) Ready() <-chan struct{} { return e.ready }

var (
	devicesPrefix = resource.Prefix(resource.Devices, "")
	modelsPrefix  = resource.Prefix(resource.DeviceModels, "")
)

// onStoreChanges runs on the store's writer goroutine: it only notes which keys changed.
func (e *Engine) onStoreChanges(changes []edgestore.Change) {
	noted := false
	e.pmu.Lock()
	for _, c := range changes {
		if c.StatusOnly {
			continue // the engine's own write (status.go)
		}
		if strings.HasPrefix(c.Key, devicesPrefix) || strings.HasPrefix(c.Key, modelsPrefix) {
			e.pending[c.Key] = struct{}{}
			noted = true
		}
	}
	e.pmu.Unlock()
	if noted {
		signal(e.wake)
	}
}

// signal wakes the one goroutine that waits on ch (capacity 1), unless a wake is pending already.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run loads the devices the store holds, then follows the store's changes to them until ctx
// ends. Messages from devices wait (without a PUBACK) until the load is done.
func (e *Engine) Run(ctx context.Context) error {
	defer close(e.done)
	e.ctx = ctx
	var pubs sync.WaitGroup
	defer pubs.Wait() // before done: a handler's answer being queued is taken or given up
	for _, q := range e.pubs {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			e.publisher(ctx, q)
		}()
	}
	if err := e.load(ctx); err != nil {
		return err
	}
	pubs.Add(1)
	go func() {
		defer pubs.Done()
		e.statusLoop(ctx)
	}()
	close(e.ready)
	e.log.Info().Int("devices", e.deviceCount()).Msg("twins loaded")
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-e.wake:
		}
		e.pmu.Lock()
		keys := slices.Collect(maps.Keys(e.pending))
		clear(e.pending)
		e.pmu.Unlock()
		// Models first, so a Device arriving with its model is typed by it at once.
		slices.SortFunc(keys, func(a, b string) int {
			am, bm := strings.HasPrefix(a, modelsPrefix), strings.HasPrefix(b, modelsPrefix)
			switch {
			case am && !bm:
				return -1
			case bm && !am:
				return 1
			}
			return strings.Compare(a, b)
		})
		for _, k := range keys {
			if ctx.Err() != nil {
				return nil
			}
			e.sync(ctx, k)
		}
	}
}

// load reads the stored twins, DeviceModels and Devices, and brings every twin in line with
// its Device: after a crash between a Device's commit and the engine's own write, this is
// where the expected values and the delta catch up.
func (e *Engine) load(ctx context.Context) error {
	states, err := e.store.Twins()
	if err != nil {
		return fmt.Errorf("twin: load twins: %w", err)
	}
	models, _, err := e.store.List(modelsPrefix)
	if err != nil {
		return fmt.Errorf("twin: load device models: %w", err)
	}
	for _, rec := range models {
		e.syncModel(ctx, rec.Key.Namespace+"/"+rec.Key.Name, rec, false)
	}
	devs, _, err := e.store.List(devicesPrefix)
	if err != nil {
		return fmt.Errorf("twin: load devices: %w", err)
	}
	// Devices with a stored twin were served before the restart: they are admitted first, so
	// that at the device limit the same devices are served after it (not the first by name).
	slices.SortStableFunc(devs, func(a, b *edgestore.Record) int {
		_, sa := states[a.Key.Namespace+"/"+a.Key.Name]
		_, sb := states[b.Key.Namespace+"/"+b.Key.Name]
		switch {
		case sa && !sb:
			return -1
		case sb && !sa:
			return 1
		}
		return 0
	})
	for _, rec := range devs {
		id := rec.Key.Namespace + "/" + rec.Key.Name
		var loaded *stored // nil: none stored
		if b, ok := states[id]; ok {
			loaded = new(stored)
			if err := json.Unmarshal(b, loaded); err != nil {
				// Only this engine writes these bytes; a damaged record costs the device its
				// actual values (the devices report them again), not the whole node.
				e.log.Error().Err(err).Str("device", id).Msg("stored twin is damaged; starting it empty")
				*loaded = stored{}
			}
		}
		delete(states, id)
		e.upsert(ctx, id, rec, loaded, false)
	}
	for id := range states {
		if _, err := e.store.WriteTwin(ctx, id, nil); err != nil {
			return fmt.Errorf("twin: drop the twin of removed device %s: %w", id, err)
		}
	}
	return nil
}

// sync brings the engine in line with the store's current form of one key.
func (e *Engine) sync(ctx context.Context, key string) {
	rec, err := e.store.Get(key)
	if err != nil {
		e.log.Error().Err(err).Str("key", key).Msg("cannot read a changed object; it is retried on its next change")
		return
	}
	if strings.HasPrefix(key, modelsPrefix) {
		ns, name := splitKey(strings.TrimPrefix(key, modelsPrefix))
		e.syncModel(ctx, ns+"/"+name, rec, true)
		return
	}
	ns, name := splitKey(strings.TrimPrefix(key, devicesPrefix))
	id := ns + "/" + name
	if rec == nil {
		e.remove(ctx, id)
		return
	}
	e.upsert(ctx, id, rec, nil, true)
}

// madeAgain says whether a Device of uid is another than the one the engine serves as id.
func (e *Engine) madeAgain(id, uid string) bool {
	e.mu.Lock()
	d := e.devices[id]
	e.mu.Unlock()
	if d == nil || uid == "" {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.spec.UID != "" && d.spec.UID != uid
}

func splitKey(s string) (ns, name string) {
	ns, name, _ = strings.Cut(s, "/")
	return ns, name
}

// syncModel records a DeviceModel's types and, when live, re-types the devices that use it.
func (e *Engine) syncModel(ctx context.Context, id string, rec *edgestore.Record, live bool) {
	var types map[string]string
	if rec != nil {
		var err error
		if types, err = twin.ModelTypes(rec.Object); err != nil {
			e.log.Warn().Err(err).Str("model", id).Msg("ignoring a device model that cannot be read")
			return
		}
	}
	e.mu.Lock()
	if types == nil {
		delete(e.models, id)
	} else {
		e.models[id] = types
	}
	var users []*device
	for _, d := range e.devices {
		if !d.refused {
			users = append(users, d)
		}
	}
	e.mu.Unlock()
	if !live {
		return
	}
	for _, d := range users {
		d.mu.Lock()
		if !d.gone && d.spec.Model == id {
			d.types = types
			e.applyDesired(ctx, d)
		}
		d.mu.Unlock()
	}
}

// upsert adds or updates a device from its stored Device. loaded is its stored twin at start.
func (e *Engine) upsert(ctx context.Context, id string, rec *edgestore.Record, loaded *stored, live bool) {
	spec, err := parseDevice(rec.Object, rec.Rev)
	if err != nil {
		e.m.desired.WithLabelValues("unreadable").Inc()
		e.log.Warn().Err(err).Str("device", id).Msg("ignoring a device that cannot be read")
		e.shelve(id, loaded)
		return
	}
	if e.madeAgain(id, spec.UID) {
		// A delete and a create of the same name can come as one change (one batch, or a
		// catch-up that sends the last form only): the new Device starts from nothing, and
		// the mappers hear of one leaving and one coming.
		e.remove(ctx, id)
	}
	e.mu.Lock()
	d, exists := e.devices[id]
	if !exists && loaded == nil {
		loaded = e.shelved[id] // its stored twin, kept while its Device could not be read
	}
	admitted := false
	if !exists {
		topics, err := e.topicsOf(id)
		if err != nil {
			e.mu.Unlock()
			e.m.desired.WithLabelValues("unreadable").Inc()
			e.log.Warn().Err(err).Str("device", id).Msg("ignoring a device whose name cannot be a topic level")
			e.shelve(id, loaded)
			return
		}
		delete(e.shelved, id)
		d = &device{id: id, ns: spec.Namespace, name: spec.Name, topics: topics}
		if loaded != nil && loaded.UID != "" && spec.UID != "" && loaded.UID != spec.UID {
			e.log.Info().Str("device", id).Msg("the device was made again under its name; its old twin is dropped")
			loaded = nil
		}
		if loaded != nil {
			d.tw, d.state = loaded.Twin, loaded.State
		}
		d.refused = e.served() >= e.cfg.MaxDevices
		e.devices[id] = d
		admitted = !d.refused
		// Handlers find the device now but wait on its mu until it is set up.
		d.mu.Lock()
	} else if d.refused && e.served() < e.cfg.MaxDevices {
		d.refused, admitted = false, true // room was made since it was refused
	}
	refused := d.refused
	types := e.models[spec.Model]
	e.mu.Unlock()
	if exists {
		d.mu.Lock()
	}
	defer d.mu.Unlock()
	if refused {
		if !exists {
			e.m.rejected.WithLabelValues("device_limit").Inc()
			e.log.Error().Str("device", id).Int("limit", e.cfg.MaxDevices).
				Msg("the node serves its limit of devices; this device is not served until one leaves and it changes")
		}
		return
	}
	d.spec, d.types = spec, types
	if spec.UID != "" {
		d.uidJSON, _ = json.Marshal(spec.UID)
	}
	if !e.applyDesired(ctx, d) && admitted && loaded == nil {
		// A stored twin marks the device as served: at the next start, the devices that have
		// one are admitted first, so the limit keeps serving the same ones. (A device with
		// desired values got one from applyDesired already.)
		if _, err := e.store.WriteTwin(ctx, id, storedForm(d, d.tw, d.state)); err != nil {
			e.log.Warn().Err(err).Str("device", id).Msg("cannot store the new device's empty twin")
		}
	}
	// The stored Device is the cloud's copy now, which may show an older status than the twin.
	e.markStatus(id, d.tw, d.state)
	if admitted && live {
		if t := e.membershipUpdated; e.subscribed(t, pubMembershipUpdated) {
			e.publish(e.cfg.Node, t, pubMembershipUpdated, twin.EncodeMembershipUpdated(e.eventID(), []twin.Member{d.member()}, nil, e.nowMs()))
		}
	}
}

// shelve keeps the stored twin of a device the engine cannot serve yet, so that when its Device
// becomes readable it starts from that twin, not an empty one that would overwrite it. Only at
// load (loaded non-nil). Called on Run's goroutine, like every upsert.
func (e *Engine) shelve(id string, loaded *stored) {
	if loaded == nil {
		return
	}
	if e.shelved == nil {
		e.shelved = map[string]*stored{}
	}
	e.shelved[id] = loaded
}

// served counts the devices that are served; the caller holds e.mu.
func (e *Engine) served() int {
	n := 0
	for _, d := range e.devices {
		if !d.refused {
			n++
		}
	}
	return n
}

// applyDesired applies the device's current spec to its twin, stores the result and tells the
// device. It says whether it stored the twin. The caller holds d.mu.
func (e *Engine) applyDesired(ctx context.Context, d *device) (stored bool) {
	now := e.nowMs()
	des := d.spec.desired(d.types)
	next, changed, err := twin.ApplyDesired(d.tw, des, now)
	if errors.Is(err, twin.ErrStale) {
		// The edge store orders a Device's versions already and its copy is the cloud's word,
		// so an older version here means the cloud's history was reset (a new cluster): the
		// stored copy wins, and the versions start again from it.
		e.m.desired.WithLabelValues("reset").Inc()
		e.log.Warn().Str("device", d.id).Err(err).Msg("desired state is older than the twin's; the cloud was reset, taking it as is")
		base := d.tw.Clone()
		base.DesiredVersion = twin.Version{}
		for name, p := range base.Props {
			p.ExpectedVersion = twin.Version{}
			base.Props[name] = p
		}
		next, changed, err = twin.ApplyDesired(base, des, now)
	}
	if err != nil {
		e.m.desired.WithLabelValues("invalid").Inc()
		e.log.Warn().Str("device", d.id).Err(err).Msg("the device's desired state is refused whole; the twin keeps the previous one")
		return false
	}
	if next.DesiredVersion == d.tw.DesiredVersion && len(changed) == 0 {
		e.m.desired.WithLabelValues("unchanged").Inc()
		return false
	}
	var reports []edgestore.Entry
	if len(changed) > 0 {
		reports = append(reports, twinReport(d, next))
	}
	if err := e.write(ctx, d, next, d.state, reports); err != nil {
		e.m.desired.WithLabelValues("failed").Inc()
		e.sampled.Warn().Err(err).Str("device", d.id).Dur("retry_in", desiredRetry).Msg("cannot store the device's desired state; retrying")
		if ctx.Err() == nil {
			e.retryLater(resource.StoreKey(resource.Key{Resource: resource.Devices, Namespace: d.ns, Name: d.name}))
		}
		return false
	}
	d.tw = next
	if len(changed) == 0 {
		e.m.desired.WithLabelValues("unchanged").Inc()
		return true
	}
	e.m.desired.WithLabelValues("applied").Inc()
	if e.subscribed(d.topics.document, pubDocument) {
		e.publish(d.id, d.topics.document, pubDocument, twin.EncodeDocument(e.eventID(), changed, now))
	}
	e.publishDelta(d, next, now)
	return true
}

// desiredRetry is how long a desired change the store could not take (a full outbox) waits
// before it is applied again: it must not wait for the Device's next change.
const desiredRetry = 2 * time.Second

// retryLater looks at the store key again after desiredRetry, as if it had changed.
func (e *Engine) retryLater(key string) {
	time.AfterFunc(desiredRetry, func() {
		e.pmu.Lock()
		e.pending[key] = struct{}{}
		e.pmu.Unlock()
		signal(e.wake)
	})
}

// remove forgets a device that left the node and tells the mappers.
func (e *Engine) remove(ctx context.Context, id string) {
	e.mu.Lock()
	d := e.devices[id]
	delete(e.devices, id)
	refused := d != nil && d.refused
	e.mu.Unlock()
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gone = true
	if _, err := e.store.WriteTwin(ctx, id, nil); err != nil {
		// Left behind, it is dropped at the next start (load).
		e.log.Warn().Err(err).Str("device", id).Msg("cannot drop the twin of a removed device")
	}
	if refused {
		return
	}
	if t := e.membershipUpdated; e.subscribed(t, pubMembershipUpdated) {
		e.publish(e.cfg.Node, t, pubMembershipUpdated, twin.EncodeMembershipUpdated(e.eventID(), nil, []twin.Member{d.member()}, e.nowMs()))
	}
}

// write makes a device's new state durable with its reports. The caller holds d.mu.
func (e *Engine) write(ctx context.Context, d *device, tw twin.Twin, st twin.DeviceState, reports []edgestore.Entry) error {
	// No deadline of its own: the store answers every operation (committed or failed), and a
	// caller that stopped waiting could not tell whether the change became durable.
	n, err := e.store.WriteTwin(ctx, d.id, storedForm(d, tw, st), reports...)
	if n > 0 {
		e.m.coalesced.Add(float64(n))
	}
	if err == nil {
		e.markStatus(d.id, tw, st)
	}
	return err
}

// storedForm is stored's JSON for d with tw and st, appended by hand: it is written on every
// change.
func storedForm(d *device, tw twin.Twin, st twin.DeviceState) []byte {
	b := make([]byte, 0, 256)
	b = append(b, `{"twin":`...)
	b = tw.AppendJSON(b)
	b = append(b, `,"state":`...)
	b = st.AppendJSON(b)
	if d.uidJSON != nil {
		b = append(b, `,"uid":`...)
		b = append(b, d.uidJSON...)
	}
	return append(b, '}')
}

// twinReport is the outbox entry reporting d's twin t; it names the Device's uid, so that the
// cloud drops it if the Device was made again meanwhile. The caller holds d.mu.
func twinReport(d *device, t twin.Twin) edgestore.Entry {
	return edgestore.Entry{Kind: protocol.ReportTwin, Subject: d.id, Payload: twin.EncodeTwinReport(t, d.spec.UID)}
}

// stateReport is twinReport for d's state s.
func stateReport(d *device, s twin.DeviceState) edgestore.Entry {
	return edgestore.Entry{Kind: protocol.ReportDeviceState, Subject: d.id, Payload: twin.EncodeStateReport(s, d.spec.UID)}
}

// member describes the device for membership messages. The caller holds d.mu.
func (d *device) member() twin.Member {
	return twin.Member{Namespace: d.ns, Name: d.name, Description: d.spec.Description, State: d.state, Twin: d.tw}
}

// lookup returns device id and whether it is served; nil if the node has no such device.
func (e *Engine) lookup(id string) (d *device, served bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	d = e.devices[id]
	return d, d != nil && !d.refused
}

func (e *Engine) deviceCount() int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.served()
}

func (e *Engine) nowMs() int64 { return e.now().UnixMilli() }

// publishDelta publishes the delta of t if some expected value differs from its actual and the
// device's delta topic has a subscriber.
func (e *Engine) publishDelta(d *device, t twin.Twin, now int64) {
	if !twin.HasDelta(t) || !e.subscribed(d.topics.delta, pubDelta) {
		return // no event id spent on a delta that is not sent
	}
	if b, ok := twin.EncodeDelta(e.eventID(), t, now); ok {
		e.publish(d.id, d.topics.delta, pubDelta, b)
	}
}

// subscribed reports whether a message of kind what on topic would reach a client; one that
// would not is counted and neither encoded nor published.
func (e *Engine) subscribed(topic *broker.Topic, what pubKind) bool {
	if topic.Subscribed() {
		return true
	}
	e.m.unsubscribed[what].Inc()
	return false
}

// Publishing. A handler publishes its answers from the publisher's connection goroutine, whose
// stack mochi's frames already fill to within a few hundred bytes of 32 KiB once a publish
// through mochi is added on top: an answer published there would, now and then, move the stack
// to 64 KiB for that connection's life. So answers go through a few publisher goroutines with
// stacks of their own. A device's messages all go through the same one, in the order they were
// queued: its result, document and delta, and its next update's, keep their order.
const (
	publishers   = 4
	publishQueue = 256 // per publisher; a full queue holds the handler (and its PUBACK) until there is room
)

// pubJob is one message for a publisher.
type pubJob struct {
	topic   *broker.Topic
	what    pubKind
	payload []byte
}

// publisher publishes the jobs of q until ctx ends, then what is left in q.
func (e *Engine) publisher(ctx context.Context, q chan pubJob) {
	for {
		select {
		case j := <-q:
			e.publishNow(j)
		case <-ctx.Done():
			for {
				select {
				case j := <-q:
					e.publishNow(j)
				default:
					return
				}
			}
		}
	}
}

// publish queues a message to devices for the publisher of key (a device id, or the node's
// name), waiting while that publisher's queue is full. The broker never blocks on a client,
// so the wait is bounded by the publishers' own work.
func (e *Engine) publish(key string, topic *broker.Topic, what pubKind, payload []byte) {
	q := e.pubs[maphash.String(e.seed, key)%publishers]
	select {
	case q <- pubJob{topic: topic, what: what, payload: payload}:
	case <-e.ctx.Done():
	}
}

// publishNow sends a message to devices; the broker never blocks on a client.
func (e *Engine) publishNow(j pubJob) {
	if err := j.topic.Publish(j.payload, e.cfg.QoS); err != nil {
		e.m.publishErrors.Inc()
		e.sampled.Warn().Err(err).Str("topic", j.topic.Name()).Msg("cannot publish to devices")
		return
	}
	e.m.published[j.what].Inc()
}
