package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/broker"
	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/sim/mapper"
	"github.com/tetherhub/tether/twin"
)

const (
	node    = "edge-1"
	ns      = "default"
	waitFor = 10 * time.Second
)

// rig is an engine on a real edge store and a real broker, fed Devices the way the hub feeds
// the store.
type rig struct {
	t      *testing.T
	dir    string
	store  *edgestore.Store
	engine *Engine
	reg    *prometheus.Registry
	url    string
	stop   func()
	// stopEngine stops the engine alone, leaving the broker and the store running.
	stopEngine func()
	rev        uint64
	edit       func(*Config)
	storeC     func(*edgestore.Config)
	wrap       func(*edgestore.Store) Store // what the engine gets instead of the store itself
}

func newRig(t *testing.T, edit func(*Config), storeEdit func(*edgestore.Config)) *rig {
	return startRig(&rig{t: t, dir: t.TempDir(), edit: edit, storeC: storeEdit})
}

// startRig starts r, configured by its fields, until the test ends.
func startRig(r *rig) *rig {
	r.start()
	r.t.Cleanup(r.close)
	return r
}

func (r *rig) start() {
	t := r.t
	t.Helper()
	scfg := edgestore.DefaultConfig(filepath.Join(r.dir, "edge.db"))
	if r.storeC != nil {
		r.storeC(&scfg)
	}
	st, err := edgestore.Open(scfg, resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	bcfg := broker.DefaultConfig()
	bcfg.Listen = "127.0.0.1:0"
	reg := prometheus.NewRegistry()
	b, err := broker.New(bcfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig(node)
	if r.edit != nil {
		r.edit(&cfg)
	}
	var es Store = st
	if r.wrap != nil {
		es = r.wrap(st)
	}
	e, err := New(cfg, Deps{Store: es, Broker: b, Log: zerolog.Nop(), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ectx, ecancel := context.WithCancel(ctx)
	edone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); b.Run(ctx) }()
	go func() {
		defer wg.Done()
		defer close(edone)
		if err := e.Run(ectx); err != nil {
			t.Errorf("engine Run: %v", err)
		}
	}()
	r.stopEngine = func() { ecancel(); <-edone }
	<-b.Ready()
	select {
	case <-e.Ready():
	case <-time.After(waitFor):
		t.Fatal("engine not ready")
	}
	r.store, r.engine, r.reg, r.url = st, e, reg, "tcp://"+b.Addr().String()
	r.stop = func() {
		cancel()
		wg.Wait()
		// A write the engine gave up waiting for as it stopped may still be committing: one
		// more write after it, waited for, orders the check after it.
		if _, err := st.WriteTwin(context.Background(), "rig/sync", nil); err != nil {
			t.Errorf("store sync: %v", err)
		}
		if err := st.Check(); err != nil {
			t.Errorf("store check: %v", err)
		}
		st.Close()
	}
}

func (r *rig) close() {
	if r.stop != nil {
		r.stop()
		r.stop = nil
	}
}

// restart stops the engine, broker and store and starts them again on the same file.
func (r *rig) restart() {
	r.close()
	r.start()
}

func (r *rig) apply(msgs ...protocol.Message) {
	r.t.Helper()
	done := make(chan error, 1)
	if err := r.store.Apply(context.Background(), msgs, func(err error) { done <- err }); err != nil {
		r.t.Fatal(err)
	}
	if err := <-done; err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) put(res, name string, obj map[string]any) {
	r.t.Helper()
	r.rev++
	obj["metadata"] = map[string]any{"name": name, "namespace": ns, "resourceVersion": fmt.Sprint(r.rev)}
	b, _ := json.Marshal(obj)
	r.apply(&protocol.Upsert{Rev: r.rev, Key: resource.Key{Resource: res, Namespace: ns, Name: name}, Object: b})
}

func (r *rig) del(res, name string) {
	r.t.Helper()
	r.rev++
	r.apply(&protocol.Delete{Rev: r.rev, Key: resource.Key{Resource: res, Namespace: ns, Name: name}})
}

func (r *rig) model(name string, props ...string) {
	var ps []any
	for i := 0; i < len(props); i += 2 {
		ps = append(ps, map[string]any{"name": props[i], "type": props[i+1], "accessMode": "ReadWrite"})
	}
	r.put(resource.DeviceModels, name, map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
		"spec": map[string]any{"properties": ps}})
}

// device puts a Device of model with desired values (name, value, ...).
func (r *rig) device(name, model string, desired ...string) {
	var ps []any
	for i := 0; i < len(desired); i += 2 {
		ps = append(ps, map[string]any{"name": desired[i], "desired": map[string]any{"value": desired[i+1]}})
	}
	r.put(resource.Devices, name, map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
		"spec": map[string]any{"nodeName": node, "deviceModelRef": map[string]any{"name": model}, "properties": ps}})
}

// waitDevice waits until the engine serves device name.
func (r *rig) waitDevice(name string) {
	r.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		if _, ok := r.engine.lookup(ns + "/" + name); ok {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("device %s never served", name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *rig) outbox() []edgestore.Entry {
	r.t.Helper()
	es, err := r.store.ReadOutbox(0, 1<<20, 1<<30)
	if err != nil {
		r.t.Fatal(err)
	}
	return es
}

// client is a raw paho client recording what it receives, for payload shapes.
type client struct {
	t  *testing.T
	c  paho.Client
	mu sync.Mutex
	in map[string][][]byte
}

func newClient(t *testing.T, url string, filters ...string) *client {
	t.Helper()
	cl := &client{t: t, in: map[string][][]byte{}}
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("raw-%d", time.Now().UnixNano())).SetAutoReconnect(false)
	cl.c = paho.NewClient(opts)
	if tok := cl.c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	f := map[string]byte{}
	for _, s := range filters {
		f[s] = 1
	}
	if tok := cl.c.SubscribeMultiple(f, func(_ paho.Client, m paho.Message) {
		cl.mu.Lock()
		cl.in[m.Topic()] = append(cl.in[m.Topic()], m.Payload())
		cl.mu.Unlock()
	}); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { cl.c.Disconnect(0) })
	return cl
}

func (c *client) publish(topic string, payload []byte) {
	c.t.Helper()
	if tok := c.c.Publish(topic, 1, false, payload); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		c.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// next waits for the n-th message (1-based) on topic and decodes it into a map.
func (c *client) next(topic string, n int) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		c.mu.Lock()
		got := c.in[topic]
		c.mu.Unlock()
		if len(got) >= n {
			var m map[string]any
			if err := json.Unmarshal(got[n-1], &m); err != nil {
				c.t.Fatalf("%s: %v: %s", topic, err, got[n-1])
			}
			return m
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no message %d on %s (have %d)", n, topic, len(got))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func keys(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

func sub(m map[string]any, path ...string) map[string]any {
	for _, p := range path {
		m, _ = m[p].(map[string]any)
	}
	return m
}

func connectMapper(t *testing.T, url string, edit func(*mapper.Config), devices ...string) *mapper.Mapper {
	t.Helper()
	cfg := mapper.DefaultConfig(url, devices...)
	cfg.Node = node
	if edit != nil {
		edit(&cfg)
	}
	m, err := mapper.Connect(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

const dev = "$hw/events/device/" + ns + "/thermo/"

// TestTopicsAndShapes walks every topic of SPEC §6 with a raw client and checks each payload's
// fields.
func TestTopicsAndShapes(t *testing.T) {
	r := newRig(t, nil, nil)
	r.model("thermo-model", "temp", "INT", "humid", "FLOAT", "label", "STRING")
	c := newClient(t, r.url, "$hw/events/device/+/+/#", "$hw/events/node/"+node+"/#")
	r.device("thermo", "thermo-model", "temp", "20")
	r.waitDevice("thermo")

	// membership/updated: added.
	up := c.next("$hw/events/node/"+node+"/membership/updated", 1)
	if keys(up) != "added_devices,event_id,removed_devices,timestamp" {
		t.Fatalf("membership/updated fields: %v", up)
	}
	added := up["added_devices"].([]any)
	if len(added) != 1 || added[0].(map[string]any)["id"] != ns+"/thermo" || added[0].(map[string]any)["name"] != "thermo" {
		t.Fatalf("added_devices: %v", added)
	}
	// The desired value made a delta at once.
	d := c.next(dev+"twin/update/delta", 1)
	if keys(d) != "delta,event_id,timestamp,twin" || fmt.Sprint(d["delta"]) != "map[temp:20]" {
		t.Fatalf("delta: %v", d)
	}
	if v := sub(d, "twin", "temp", "expected")["value"]; v != "20" {
		t.Fatalf("delta twin: %v", d["twin"])
	}

	// twin/update → result, document, delta.
	c.publish(dev+"twin/update", []byte(`{"event_id":"u1","timestamp":1,"twin":{"temp":{"actual":{"value":"19"},"metadata":{"type":"int"}},"humid":{"actual":{"value":"40.5"}}}}`))
	res := c.next(dev+"twin/update/result", 1)
	if keys(res) != "event_id,timestamp,twin" || res["event_id"] != "u1" {
		t.Fatalf("result: %v", res)
	}
	if v := sub(res, "twin", "temp", "actual")["value"]; v != "19" {
		t.Fatalf("result echo: %v", res["twin"])
	}
	if e := sub(res, "twin", "temp"); e["expected_version"] != nil || e["actual_version"] != nil || e["expected"] != nil {
		t.Fatalf("result carries versions or expected: %v", e)
	}
	doc := c.next(dev+"twin/update/document", 2) // 1 was the desired change
	if keys(doc) != "event_id,timestamp,twin" || doc["event_id"] != "u1" {
		t.Fatalf("document: %v", doc)
	}
	if h := sub(doc, "twin", "humid"); keys(h) != "current,last" || h["last"] != nil || sub(h, "current", "actual")["value"] != "40.5" {
		t.Fatalf("document humid: %v", h)
	}
	if tm := sub(doc, "twin", "temp"); sub(tm, "last", "expected")["value"] != "20" || sub(tm, "current", "actual")["value"] != "19" {
		t.Fatalf("document temp: %v", tm)
	}
	if d := c.next(dev+"twin/update/delta", 2); fmt.Sprint(d["delta"]) != "map[temp:20]" {
		t.Fatalf("delta after report: %v", d)
	}

	// twin/get → get/result with expected and actual.
	c.publish(dev+"twin/get", []byte(`{"event_id":"g1"}`))
	g := c.next(dev+"twin/get/result", 1)
	if keys(g) != "event_id,timestamp,twin" || g["event_id"] != "g1" {
		t.Fatalf("get result: %v", g)
	}
	tm := sub(g, "twin", "temp")
	if sub(tm, "expected")["value"] != "20" || sub(tm, "actual")["value"] != "19" || sub(tm, "metadata")["type"] != "int" {
		t.Fatalf("get temp: %v", tm)
	}
	if _, ok := sub(tm, "actual", "metadata")["timestamp"].(float64); !ok {
		t.Fatalf("actual without a timestamp: %v", tm)
	}

	// A null twin deletes the device's property.
	c.publish(dev+"twin/update", []byte(`{"event_id":"u2","timestamp":2,"twin":{"humid":null}}`))
	res = c.next(dev+"twin/update/result", 2)
	if tw := res["twin"].(map[string]any); len(tw) != 1 || tw["humid"] != nil {
		t.Fatalf("delete result: %v", res)
	}
	c.publish(dev+"twin/get", []byte(`{"event_id":"g2"}`))
	if g := c.next(dev+"twin/get/result", 2); sub(g, "twin")["humid"] != nil {
		t.Fatalf("humid still in the twin: %v", g)
	}

	// state/update → state/update/result.
	c.publish(dev+"state/update", []byte(`{"event_id":"s1","timestamp":3,"state":"Online"}`))
	s := c.next(dev+"state/update/result", 1)
	if keys(s) != "device,event_id,timestamp" || sub(s, "device")["name"] != "thermo" || sub(s, "device")["state"] != "online" {
		t.Fatalf("state result: %v", s)
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(sub(s, "device")["lastOnlineTime"])); err != nil {
		t.Fatalf("lastOnlineTime: %v", s)
	}

	// membership/get → get/result.
	c.publish("$hw/events/node/"+node+"/membership/get", []byte(`{"event_id":"m1"}`))
	mg := c.next("$hw/events/node/"+node+"/membership/get/result", 1)
	if keys(mg) != "devices,event_id,timestamp" || mg["event_id"] != "m1" {
		t.Fatalf("membership result: %v", mg)
	}
	devs := mg["devices"].([]any)
	if len(devs) != 1 || devs[0].(map[string]any)["id"] != ns+"/thermo" || devs[0].(map[string]any)["state"] != "online" {
		t.Fatalf("membership devices: %v", devs)
	}

	// The cloud changes desired: delta with the new value.
	// (Deltas so far: the first desired, after u1, after u2.)
	r.device("thermo", "thermo-model", "temp", "25")
	if d := c.next(dev+"twin/update/delta", 4); fmt.Sprint(d["delta"]) != "map[temp:25]" {
		t.Fatalf("delta after desired change: %v", d)
	}

	// Device removed: membership/updated removed, then its topics answer 404.
	r.del(resource.Devices, "thermo")
	up = c.next("$hw/events/node/"+node+"/membership/updated", 2)
	if rm := up["removed_devices"].([]any); len(rm) != 1 || rm[0].(map[string]any)["id"] != ns+"/thermo" || len(up["added_devices"].([]any)) != 0 {
		t.Fatalf("removed: %v", up)
	}
	c.publish(dev+"twin/update", []byte(`{"event_id":"u3","twin":{"temp":{"actual":{"value":"1"}}}}`))
	if res := c.next(dev+"twin/update/result", 3); res["code"] != float64(404) || res["event_id"] != "u3" || keys(res) != "code,event_id,reason,timestamp" {
		t.Fatalf("removed device: %v", res)
	}
	if twins, _ := r.store.Twins(); len(twins) != 0 {
		t.Fatalf("twin of a removed device kept: %v", twins)
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestBadInputChangesNothing sends every kind of bad payload: each gets an error result with
// its code, and neither the twin, the stored state nor the outbox changes.
func TestBadInputChangesNothing(t *testing.T) {
	r := newRig(t, func(c *Config) { c.Limits.MaxValueLen = 16 }, nil)
	r.model("m", "temp", "INT", "on", "BOOLEAN", "label", "STRING")
	r.device("thermo", "m")
	r.device("other", "m")
	r.waitDevice("thermo")
	r.waitDevice("other")
	m := connectMapper(t, r.url, nil, ns+"/thermo", ns+"/other", ns+"/ghost")
	ctx := context.Background()
	if _, err := m.Report(ctx, ns+"/thermo", map[string]string{"temp": "19", "on": "true"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Report(ctx, ns+"/other", map[string]string{"temp": "7"}); err != nil {
		t.Fatal(err)
	}
	before, _ := r.store.Twins()
	outBefore := r.outbox()

	c := newClient(t, r.url, dev+"twin/update/result", "$hw/events/device/"+ns+"/ghost/twin/update/result")
	cases := []struct {
		name, topic, payload string
		code                 float64
		reason               string
	}{
		{"not JSON", dev + "twin/update", `{"event_id":"a","twin":`, 400, "not valid JSON"},
		{"not an object", dev + "twin/update", `[1,2]`, 400, "must be a JSON object"},
		{"null body", dev + "twin/update", `null`, 400, "must be a JSON object"},
		{"twin of wrong type", dev + "twin/update", `{"event_id":"b","twin":"temp"}`, 400, "twin must be an object"},
		{"value of wrong JSON type", dev + "twin/update", `{"event_id":"c","twin":{"temp":{"actual":{"value":19}}}}`, 400, "must be a string"},
		{"key outside the pattern", dev + "twin/update", `{"event_id":"d","twin":{"te mp":{"actual":{"value":"1"}}}}`, 400, "property name"},
		{"value too long", dev + "twin/update", `{"event_id":"e","twin":{"label":{"actual":{"value":"` + strings.Repeat("x", 17) + `"}}}}`, 400, "more than the limit of 16"},
		{"bad value for INT", dev + "twin/update", `{"event_id":"f","twin":{"temp":{"actual":{"value":"warm"}}}}`, 400, "not a valid int"},
		{"bad value for BOOLEAN", dev + "twin/update", `{"event_id":"g","twin":{"on":{"actual":{"value":"yes"}}}}`, 400, "not a valid boolean"},
		{"all or nothing", dev + "twin/update", `{"event_id":"h","twin":{"label":{"actual":{"value":"ok"}},"temp":{"actual":{"value":"1.5"}}}}`, 400, "not a valid int"},
		{"not in the model", dev + "twin/update", `{"event_id":"i","twin":{"pressure":{"actual":{"value":"1"}}}}`, 400, "not a property of the device model"},
		{"unknown device", "$hw/events/device/" + ns + "/ghost/twin/update", `{"event_id":"j","twin":{"temp":{"actual":{"value":"1"}}}}`, 404, "is not on node"},
	}
	for i, tc := range cases {
		c.publish(tc.topic, []byte(tc.payload))
		res := c.next(tc.topic+"/result", countBefore(cases[:i], tc.topic)+1)
		reason, _ := res["reason"].(string)
		if res["code"] != tc.code || !strings.Contains(reason, tc.reason) {
			t.Errorf("%s: got %v, want code %v and a reason with %q", tc.name, res, tc.code, tc.reason)
		}
	}
	after, _ := r.store.Twins()
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("stored twins changed:\n%s\n%s", before, after)
	}
	if outAfter := r.outbox(); len(outAfter) != len(outBefore) {
		t.Fatalf("outbox changed: %d → %d entries", len(outBefore), len(outAfter))
	}
	g, err := m.Get(ctx, ns+"/thermo")
	if err != nil {
		t.Fatal(err)
	}
	if *g.Twin["temp"].Actual.Value != "19" || *g.Twin["on"].Actual.Value != "true" || g.Twin["label"] != nil {
		t.Fatalf("twin changed: %s", mustJSON(g.Twin))
	}
	if g, _ := m.Get(ctx, ns+"/other"); *g.Twin["temp"].Actual.Value != "7" {
		t.Fatal("another device's twin changed")
	}
	if n := value(r.engine.m.updates.WithLabelValues("400")); n != 11 {
		t.Fatalf("400 results counted: %v", n)
	}
	// A bad get or state is answered on its own result topic.
	var re *mapper.ResultError
	if _, err := m.SetState(ctx, ns+"/thermo", "dancing"); !asResult(err, &re) || re.Code != 400 {
		t.Fatalf("bad state: %v", err)
	}
	if _, err := m.Get(ctx, ns+"/ghost"); !asResult(err, &re) || re.Code != 404 {
		t.Fatalf("get of unknown device: %v", err)
	}
}

func countBefore(cases []struct {
	name, topic, payload string
	code                 float64
	reason               string
}, topic string) int {
	n := 0
	for _, c := range cases {
		if c.topic == topic {
			n++
		}
	}
	return n
}

func asResult(err error, re **mapper.ResultError) bool {
	e, ok := err.(*mapper.ResultError)
	if ok {
		*re = e
	}
	return ok
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestReportsCoalesceAndSurviveRestart checks what goes up: one twin report per device holding
// its latest values, and the twin reloaded from the store after a restart.
func TestReportsCoalesceAndSurviveRestart(t *testing.T) {
	r := newRig(t, nil, nil)
	r.model("m", "temp", "INT", "label", "STRING")
	r.device("a", "m", "temp", "20")
	r.device("b", "m")
	r.waitDevice("a")
	r.waitDevice("b")
	m := connectMapper(t, r.url, nil, ns+"/a", ns+"/b")
	ctx := context.Background()
	for i := 1; i <= 50; i++ {
		if _, err := m.Report(ctx, ns+"/a", map[string]string{"temp": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			if _, err := m.Report(ctx, ns+"/b", map[string]string{"label": fmt.Sprint("b", i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := m.SetState(ctx, ns+"/a", "online"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetState(ctx, ns+"/a", "unhealthy"); err != nil {
		t.Fatal(err)
	}
	var twins, states []string
	for _, e := range r.outbox() {
		switch e.Kind {
		case protocol.ReportTwin:
			rep, err := twin.DecodeTwinReport(e.Payload)
			if err != nil {
				t.Fatal(err)
			}
			var vals []string
			for _, st := range rep.Twins {
				v := st.PropertyName + "="
				if st.Reported != nil {
					v += st.Reported.Value
				}
				if st.ObservedDesired != nil {
					v += "/" + st.ObservedDesired.Value
				}
				vals = append(vals, v)
			}
			twins = append(twins, e.Subject+":"+strings.Join(vals, ","))
		case protocol.ReportDeviceState:
			s, _ := twin.DecodeStateReport(e.Payload)
			states = append(states, e.Subject+":"+s.State+":"+s.LastOnline)
		}
	}
	slices.Sort(twins)
	if fmt.Sprint(twins) != "[default/a:temp=50/20 default/b:label=b50]" {
		t.Fatalf("twin reports: %v", twins)
	}
	if len(states) != 1 || !strings.HasPrefix(states[0], "default/a:unhealthy:20") {
		t.Fatalf("state reports: %v (want one, unhealthy, keeping the online time)", states)
	}
	if n := value(r.engine.m.coalesced); n < 50 {
		t.Fatalf("coalesced %v", n)
	}

	r.restart()
	m = connectMapper(t, r.url, nil, ns+"/a")
	g, err := m.Get(ctx, ns+"/a")
	if err != nil {
		t.Fatal(err)
	}
	if *g.Twin["temp"].Actual.Value != "50" || *g.Twin["temp"].Expected.Value != "20" {
		t.Fatalf("after restart: %s", mustJSON(g.Twin))
	}
	// An equal report after the restart is no change: nothing new goes up.
	n := len(r.outbox())
	if _, err := m.Report(ctx, ns+"/a", map[string]string{"temp": "50"}); err != nil {
		t.Fatal(err)
	}
	if len(r.outbox()) != n {
		t.Fatal("an unchanged report was queued")
	}
}

// TestDesiredFollowedByMapper: a desired change reaches a mapper that follows it, and the twin
// settles with actual = expected and no more deltas.
func TestDesiredFollowedByMapper(t *testing.T) {
	r := newRig(t, nil, nil)
	r.model("m", "temp", "INT")
	r.device("a", "m", "temp", "20")
	r.waitDevice("a")
	deltas := make(chan mapper.Delta, 16)
	m := connectMapper(t, r.url, func(c *mapper.Config) {
		c.FollowDesired = true
		c.OnDelta = func(d mapper.Delta) { deltas <- d }
	}, ns+"/a")
	r.device("a", "m", "temp", "23")
	for seen := false; !seen; {
		select {
		case d := <-deltas: // the delta of the first desired value may come first
			if d.Device != ns+"/a" || (d.Values["temp"] != "23" && d.Values["temp"] != "20") {
				t.Fatalf("delta %+v", d)
			}
			seen = d.Values["temp"] == "23"
		case <-time.After(waitFor):
			t.Fatal("no delta")
		}
	}
	waitUntil(t, "actual follows desired", func() bool {
		g, err := m.Get(context.Background(), ns+"/a")
		return err == nil && g.Twin["temp"].Actual != nil && *g.Twin["temp"].Actual.Value == "23"
	})
	// A stale desired (older revision) never reaches the twin: the next delta the mapper sees
	// is the fresh one.
	cur := r.rev
	r.rev = 1
	r.device("a", "m", "temp", "1")
	r.rev = cur
	r.device("a", "m", "temp", "30")
	for {
		select {
		case d := <-deltas:
			switch d.Values["temp"] {
			case "30":
				return
			case "1":
				t.Fatal("an older desired reached the device")
			}
		case <-time.After(waitFor):
			t.Fatal("no delta for the fresh desired")
		}
	}
}

// TestOutboxFullAnswers500 checks that a refused write is an error result and no change.
func TestOutboxFullAnswers500(t *testing.T) {
	r := newRig(t, nil, func(c *edgestore.Config) { c.OutboxLimit = 2 })
	r.model("m", "temp", "INT")
	r.device("a", "m")
	r.device("b", "m")
	r.device("c", "m")
	for _, d := range []string{"a", "b", "c"} {
		r.waitDevice(d)
	}
	m := connectMapper(t, r.url, nil, ns+"/a", ns+"/b", ns+"/c")
	ctx := context.Background()
	for _, d := range []string{"a", "b"} {
		if _, err := m.Report(ctx, ns+"/"+d, map[string]string{"temp": "1"}); err != nil {
			t.Fatal(err)
		}
	}
	var re *mapper.ResultError
	if _, err := m.Report(ctx, ns+"/c", map[string]string{"temp": "1"}); !asResult(err, &re) || re.Code != 500 || !strings.Contains(re.Reason, "outbox is full") {
		t.Fatalf("full outbox: %v", err)
	}
	if g, _ := m.Get(ctx, ns+"/c"); g.Twin["temp"] != nil {
		t.Fatal("refused value applied")
	}
	// A device whose report is still unsent replaces it: no room needed.
	if _, err := m.Report(ctx, ns+"/a", map[string]string{"temp": "2"}); err != nil {
		t.Fatal(err)
	}
}

// TestDeviceLimit: a device beyond MaxDevices is answered 500 and served once another leaves.
func TestDeviceLimit(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxDevices = 1 }, nil)
	r.model("m", "temp", "INT")
	r.device("a", "m")
	r.waitDevice("a")
	r.device("b", "m")
	m := connectMapper(t, r.url, nil, ns+"/a", ns+"/b")
	ctx := context.Background()
	var re *mapper.ResultError
	waitUntil(t, "b refused", func() bool {
		_, err := m.Report(ctx, ns+"/b", map[string]string{"temp": "1"})
		return asResult(err, &re) && re.Code == 500 && strings.Contains(re.Reason, "limit")
	})
	if _, err := m.Report(ctx, ns+"/a", map[string]string{"temp": "1"}); err != nil {
		t.Fatal(err)
	}
	r.del(resource.Devices, "a")
	r.device("b", "m")
	r.waitDevice("b")
	if _, err := m.Report(ctx, ns+"/b", map[string]string{"temp": "1"}); err != nil {
		t.Fatal(err)
	}
}

// TestUploadsInOrder: uploads from several publishers are durable when acknowledged and keep
// each publisher's order.
func TestUploadsInOrder(t *testing.T) {
	r := newRig(t, nil, nil)
	const n = 200
	var wg sync.WaitGroup
	for p := range 3 {
		m := connectMapper(t, r.url, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("$hw/events/upload/p%d", p)
			if p == 2 {
				topic = "SYS/dis/upload_records"
			}
			for i := range n {
				if err := m.Upload(context.Background(), topic, fmt.Appendf(nil, "%d:%d", p, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	next := map[string]int{}
	count := 0
	for _, e := range r.outbox() {
		if e.Kind != protocol.ReportUpload {
			continue
		}
		count++
		var p, i int
		fmt.Sscanf(string(e.Payload), "%d:%d", &p, &i)
		key := fmt.Sprint(p)
		if i != next[key] {
			t.Fatalf("publisher %d: upload %d after %d", p, i, next[key]-1)
		}
		next[key]++
		if (p == 2) != (e.Subject == "SYS/dis/upload_records") {
			t.Fatalf("subject %q for publisher %d", e.Subject, p)
		}
	}
	if count != 3*n {
		t.Fatalf("%d uploads queued, want %d", count, 3*n)
	}
}

// TestManyDevicesConcurrently runs many mappers at once, each checking that every result
// answers its own update; the race detector watches the engine.
func TestManyDevicesConcurrently(t *testing.T) {
	r := newRig(t, nil, nil)
	r.model("m", "temp", "INT")
	const devices, updates = 20, 30
	for i := range devices {
		r.device(fmt.Sprint("d", i), "m", "temp", "0")
	}
	for i := range devices {
		r.waitDevice(fmt.Sprint("d", i))
	}
	var wg sync.WaitGroup
	for i := range devices {
		id := fmt.Sprint(ns, "/d", i)
		m := connectMapper(t, r.url, nil, id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := 1; u <= updates; u++ {
				res, err := m.Report(context.Background(), id, map[string]string{"temp": fmt.Sprint(u)})
				if err != nil {
					t.Error(err)
					return
				}
				if v := *res.Twin["temp"].Actual.Value; v != fmt.Sprint(u) {
					t.Errorf("%s: result echoes %s for %d", id, v, u)
				}
			}
		}()
	}
	wg.Wait()
	states, _ := r.store.Twins()
	for i := range devices {
		var st stored
		json.Unmarshal(states[fmt.Sprint(ns, "/d", i)], &st)
		if v := st.Twin.Props["temp"].Actual; v == nil || v.Value != fmt.Sprint(updates) {
			t.Fatalf("d%d stored %+v", i, v)
		}
	}
}

// value reads a counter.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
