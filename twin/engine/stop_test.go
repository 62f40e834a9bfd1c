package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/sim/mapper"
	"github.com/tetherhub/tether/twin"
)

// TestNothingAcknowledgedOnceTheEngineStops: a device's message the engine did not take care
// of gets no PUBACK. Before, an upload held for a full outbox was acknowledged when the engine
// stopped (the handler returned, and mochi acknowledged whatever returned), though it was never
// stored, and the device would not send it again.
func TestNothingAcknowledgedOnceTheEngineStops(t *testing.T) {
	r := newRig(t, nil, func(c *edgestore.Config) { c.OutboxLimit = 1 })
	c := paho.NewClient(paho.NewClientOptions().AddBroker(r.url).SetClientID("uploader").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(0)
	if tok := c.Publish("$hw/events/upload/a", 1, false, []byte("first")); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("first: %v", tok.Error())
	}
	tok := c.Publish("$hw/events/upload/a", 1, false, []byte("second"))
	if tok.WaitTimeout(300 * time.Millisecond) {
		t.Fatalf("second acknowledged while the outbox is full")
	}
	r.stopEngine()
	// The held upload is not acknowledged now (it is not stored), and neither is a twin/update
	// that arrives after the engine stopped: the device keeps both and sends them again.
	if tok.WaitTimeout(time.Second) {
		t.Fatalf("an upload that was never stored was acknowledged when the engine stopped (err %v)", tok.Error())
	}
	tu := c.Publish("$hw/events/device/default/x/twin/update", 1, false, []byte(`{"twin":{}}`))
	if tu.WaitTimeout(time.Second) {
		t.Fatalf("a twin/update was acknowledged after the engine stopped (err %v)", tu.Error())
	}
	for _, en := range r.outbox() {
		if en.Kind == protocol.ReportUpload && string(en.Payload) == "second" {
			t.Fatal("the held upload is in the outbox after all; the test's premise is wrong")
		}
	}
}

// cutStore is the edge store, except that once cut a WriteTwin waits for its ctx and fails
// without storing anything: what tether-edge's shutdown does to a twin write still queued when
// the engine's ctx ends and the store closes.
type cutStore struct {
	*edgestore.Store
	cut     chan struct{} // closed: WriteTwin waits
	entered chan struct{}
}

func (c *cutStore) WriteTwin(ctx context.Context, id string, state []byte, reports ...edgestore.Entry) (int, error) {
	select {
	case <-c.cut:
		c.entered <- struct{}{}
		<-ctx.Done()
		return 0, ctx.Err()
	default:
		return c.Store.WriteTwin(ctx, id, state, reports...)
	}
}

// TestUpdateInFlightAtStopNotAcknowledged: a twin/update whose store write the stop cut short
// is not stored, so it gets no PUBACK and the device sends it again. Before, the handler
// returned quietly and mochi acknowledged it.
func TestUpdateInFlightAtStopNotAcknowledged(t *testing.T) {
	cs := &cutStore{cut: make(chan struct{}), entered: make(chan struct{}, 1)}
	r := startRig(&rig{t: t, dir: t.TempDir(), wrap: func(st *edgestore.Store) Store { cs.Store = st; return cs }})
	r.model("m", "temp", "INT")
	r.device("thermo", "m")
	r.waitDevice("thermo")
	c := paho.NewClient(paho.NewClientOptions().AddBroker(r.url).SetClientID("dev").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(0)
	close(cs.cut)
	tok := c.Publish(dev+"twin/update", 1, false, []byte(`{"event_id":"1","timestamp":1,"twin":{"temp":{"actual":{"value":"21"}}}}`))
	select {
	case <-cs.entered:
	case <-time.After(waitFor):
		t.Fatal("the update never reached the store")
	}
	r.stopEngine() // the agent stops while the update waits for its commit
	if tok.WaitTimeout(time.Second) {
		t.Fatalf("PUBACK for a twin/update that was never stored (outbox: %d entries); the device will not send it again", len(r.outbox()))
	}
}

// TestDesiredChangeWaitsForRoomInTheOutbox: a desired change that arrives while the outbox is
// full cannot be stored with its report; it is applied once there is room. Before, it was
// dropped until the Device changed again or the agent restarted.
func TestDesiredChangeWaitsForRoomInTheOutbox(t *testing.T) {
	r := newRig(t, nil, func(c *edgestore.Config) { c.OutboxLimit = 1 })
	r.model("m", "temp", "INT")
	r.device("a", "m") // no desired: no report
	r.waitDevice("a")
	m := connectMapper(t, r.url, nil, ns+"/a")
	ctx := context.Background()
	if err := m.Upload(ctx, "$hw/events/upload/x", []byte("fill")); err != nil {
		t.Fatal(err)
	}
	r.device("a", "m", "temp", "20") // the cloud sets a desired value while the outbox is full
	time.Sleep(200 * time.Millisecond)
	// The cloud link drains the outbox.
	es := r.outbox()
	if err := r.store.AckOutbox(ctx, es[len(es)-1].Seq); err != nil {
		t.Fatal(err)
	}
	// Retried until it fits: the twin gets the expected value without the Device changing again.
	deadline := time.Now().Add(3 * desiredRetry)
	for {
		g, err := m.Get(ctx, ns+"/a")
		if err != nil {
			t.Fatal(err)
		}
		if p := g.Twin["temp"]; p != nil && p.Expected != nil && p.Expected.Value != nil && *p.Expected.Value == "20" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("desired 20 never reached the twin after the outbox drained: %s", mustJSON(g.Twin))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestHeldUploadIsGivenUp: an upload waiting for room in a full outbox holds its connection's
// goroutine (mochi reads nothing more from it, so a client that left is not noticed). It is
// given up after UploadHold, without a PUBACK. Before, each client that gave up, reconnected
// and sent again left one more goroutine, socket and payload behind, and once the outbox had
// room every copy was stored as an upload of its own.
func TestHeldUploadIsGivenUp(t *testing.T) {
	r := newRig(t, func(c *Config) { c.UploadRetry, c.UploadHold = 50*time.Millisecond, 300*time.Millisecond },
		func(c *edgestore.Config) { c.OutboxLimit = 1 })
	dial := func() paho.Client { return dialDevice(t, r.url, "same-id") }
	c := dial()
	if tok := c.Publish("$hw/events/upload/a", 1, false, []byte("fill")); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	const rounds = 5
	for i := 0; i < rounds; i++ {
		c.Publish("$hw/events/upload/a", 1, false, make([]byte, 200<<10))
		time.Sleep(100 * time.Millisecond)
		c.Disconnect(0)
		c = dial()
	}
	c.Disconnect(0)
	time.Sleep(time.Second) // past UploadHold
	buf := make([]byte, 1<<22)
	n := runtime.Stack(buf, true)
	if held := strings.Count(string(buf[:n]), "(*Engine).onUpload"); held > 0 {
		t.Fatalf("%d connection goroutines still held in onUpload after every client left", held)
	}
	for _, e := range r.outbox() {
		if e.Kind == protocol.ReportUpload && len(e.Payload) > 100 {
			t.Fatal("an upload given up is in the outbox")
		}
	}
}

// TestUnreadableDeviceKeepsItsStoredTwin: a Device that cannot be read when the agent starts is
// not served, but its stored twin is kept; when a readable version arrives, the device starts
// from that twin. Before, it started empty and its first write overwrote the stored actual
// values (and the next report removed them from the cloud's status).
func TestUnreadableDeviceKeepsItsStoredTwin(t *testing.T) {
	r := newRig(t, nil, nil)
	r.model("m", "temp", "INT")
	r.device("a", "m")
	r.waitDevice("a")
	ctx := context.Background()
	m := connectMapper(t, r.url, nil, ns+"/a")
	if _, err := m.Report(ctx, ns+"/a", map[string]string{"temp": "5"}); err != nil {
		t.Fatal(err)
	}
	r.put(resource.Devices, "a", map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "spec": "unreadable"})
	r.restart()
	r.device("a", "m")
	r.waitDevice("a")
	m = connectMapper(t, r.url, nil, ns+"/a")
	g, err := m.Get(ctx, ns+"/a")
	if err != nil {
		t.Fatal(err)
	}
	if p := g.Twin["temp"]; p == nil || p.Actual == nil || p.Actual.Value == nil || *p.Actual.Value != "5" {
		t.Fatalf("the stored actual value was lost: %s", mustJSON(g.Twin))
	}
}

// TestHeldUploadLeftWhenItsDeviceReconnects: an upload waiting for room is given up once its
// device's connection has ended. The device sends it again on its new connection; before, the
// copy held on the old connection was stored too once room came, a second time and possibly
// after what the device sent since.
func TestHeldUploadLeftWhenItsDeviceReconnects(t *testing.T) {
	r := newRig(t, func(c *Config) { c.UploadRetry, c.UploadHold = 50*time.Millisecond, 10*time.Second },
		func(c *edgestore.Config) { c.OutboxLimit = 1 })
	dial := func() paho.Client { return dialDevice(t, r.url, "same-id") }
	publish := func(c paho.Client, payload string) paho.Token {
		return c.Publish("$hw/events/upload/a", 1, false, []byte(payload))
	}
	old := dial()
	if tok := publish(old, "fill"); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	publish(old, "one")                // held: the outbox is full
	time.Sleep(200 * time.Millisecond) // a few retries on the old connection
	c := dial()                        // the device reconnects, and the old connection ends
	defer c.Disconnect(0)
	resent := publish(c, "one") // held too, on the new connection

	// The cloud link drains the outbox from now on, and records what it sent, in order.
	ctx := context.Background()
	var mu sync.Mutex
	var sent []string
	stop := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			if es := r.outbox(); len(es) > 0 {
				mu.Lock()
				for _, e := range es {
					sent = append(sent, string(e.Payload))
				}
				mu.Unlock()
				if err := r.store.AckOutbox(ctx, es[len(es)-1].Seq); err != nil {
					t.Error(err)
					return
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	if !resent.WaitTimeout(waitFor) || resent.Error() != nil {
		t.Fatalf("the upload sent again was not acknowledged: %v", resent.Error())
	}
	if tok := publish(c, "two"); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	time.Sleep(500 * time.Millisecond) // ten retry periods of the old connection's copy
	close(stop)
	<-drained
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"fill", "one", "two"}; !slices.Equal(sent, want) {
		t.Fatalf("sent upward %q, want %q", sent, want)
	}
}

// TestTwinBeyondReportBoundIs400: an update that would make the device's whole twin, reported
// as one snapshot, larger than a hub accepts (protocol.MaxReportPayload) is answered 400 and
// changes nothing; before, it was a 500 ("send it again"), which could only fail again.
func TestTwinBeyondReportBoundIs400(t *testing.T) {
	r := newRig(t, nil, nil)
	var props []string
	for i := range 800 {
		props = append(props, fmt.Sprintf("p%03d", i), "STRING")
	}
	r.model("m", props...)
	r.device("a", "m")
	r.waitDevice("a")
	m := connectMapper(t, r.url, nil, ns+"/a")
	ctx := context.Background()
	long := strings.Repeat("𝄞", twin.DefaultMaxValueLen) // 2 KiB of UTF-8
	stored := 0
	for batch := 0; batch < 8; batch++ {
		values := map[string]string{}
		for i := batch * 100; i < (batch+1)*100; i++ {
			values[fmt.Sprintf("p%03d", i)] = long
		}
		_, err := m.Report(ctx, ns+"/a", values)
		var re *mapper.ResultError
		switch {
		case err == nil:
			stored += len(values)
			continue
		case errors.As(err, &re) && re.Code == 400:
			t.Logf("refused after %d properties: %s", stored, re.Reason)
		default:
			t.Fatalf("after %d properties: %v, want 400", stored, err)
		}
		g, err := m.Get(ctx, ns+"/a")
		if err != nil {
			t.Fatal(err)
		}
		if len(g.Twin) != stored {
			t.Fatalf("the twin has %d properties after the refusal, want the %d stored before", len(g.Twin), stored)
		}
		return
	}
	t.Fatalf("%d properties of %d bytes stored, none refused", stored, len(long))
}

// dialDevice connects a paho client with a persistent session as device id, as a device that
// reconnects does.
func dialDevice(t *testing.T, url, id string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false).SetCleanSession(false))
	if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	return c
}
