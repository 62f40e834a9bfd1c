package broker

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahomqtt "github.com/eclipse/paho.mqtt.golang"
	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestClientLimit: with MaxClients connected, the next CONNECT gets a CONNACK refusal in the
// client's protocol version and its connection is closed; once a client leaves, one more fits.
func TestClientLimit(t *testing.T) {
	const max = 3
	b := startBroker(t, func(c *Config) { c.MaxClients = max })
	var first *rawClient
	for i := range max {
		r := dialRaw(t, b.addr)
		r.mustConnect(4, fmt.Sprintf("c%d", i))
		if i == 0 {
			first = r
		}
	}

	r := dialRaw(t, b.addr)
	if ack := r.connect(connectPacket(4, "over-311")); ack.ReasonCode != packets.Err3ServerUnavailable.Code {
		t.Errorf("3.1.1 CONNACK code %#x, want %#x (server unavailable)", ack.ReasonCode, packets.Err3ServerUnavailable.Code)
	}
	r.expectClosed()

	r = dialRaw(t, b.addr)
	if ack := r.connect(connectPacket(5, "over-5")); ack.ReasonCode != packets.ErrServerBusy.Code {
		t.Errorf("5 CONNACK code %#x, want %#x (server busy)", ack.ReasonCode, packets.ErrServerBusy.Code)
	}
	r.expectClosed()

	// A real client sees the refusal as such.
	o := pahomqtt.NewClientOptions().AddBroker("tcp://" + b.addr).SetClientID("over-paho").SetProtocolVersion(4).SetAutoReconnect(false)
	c := pahomqtt.NewClient(o)
	tok := c.Connect()
	tok.WaitTimeout(waitLong)
	if !errors.Is(tok.Error(), pahopackets.ErrorRefusedServerUnavailable) {
		t.Errorf("paho connect error %v, want %v", tok.Error(), pahopackets.ErrorRefusedServerUnavailable)
	}

	waitRejected(t, b, reasonClientLimit, 3)
	if got := metric(t, b.reg, "tether_edge_mqtt_clients_connected"); got != max {
		t.Errorf("clients_connected = %v, want %d", got, max)
	}

	_ = first.nc.Close()
	waitFor(t, "a slot to free up", func() bool { return metric(t, b.reg, "tether_edge_mqtt_clients_connected") == max-1 })
	dialRaw(t, b.addr).mustConnect(5, "fits-again")
}

// TestConnectionLimit: sockets beyond MaxClients+MaxPendingConnections are closed at accept.
func TestConnectionLimit(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.MaxClients = 1; c.MaxPendingConnections = 1 })
	dialRaw(t, b.addr) // idle, before CONNECT
	dialRaw(t, b.addr)
	waitFor(t, "two open connections", func() bool { return metric(t, b.reg, "tether_edge_mqtt_connections_open") == 2 })
	dialRaw(t, b.addr).expectClosed()
	waitRejected(t, b, reasonConnectionLimit, 1)
}

// TestSubscriptionLimit: filters past MaxSubscriptionsPerClient are refused in SUBACK with a
// failure code per protocol version, are not subscribed, and the client stays connected.
func TestSubscriptionLimit(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.MaxSubscriptionsPerClient = 3 })
	pub := dialPaho3(t, b.addr, "pub")

	t.Run("mqtt5", func(t *testing.T) {
		c := dialPaho5(t, b.addr, "sub5")
		sa := c.subscribe(t, 1, "s5/a", "s5/b", "s5/c", "s5/d", "s5/e")
		want := []byte{1, 1, 1, packets.ErrQuotaExceeded.Code, packets.ErrQuotaExceeded.Code}
		if string(sa.Reasons) != string(want) {
			t.Fatalf("SUBACK %x, want %x", sa.Reasons, want)
		}
		// Re-subscribing to a held filter does not count against the limit; a new one does.
		if sa := c.subscribe(t, 1, "s5/a"); sa.Reasons[0] != 1 {
			t.Errorf("re-subscribe SUBACK %x", sa.Reasons)
		}
		if sa := c.subscribe(t, 0, "s5/f"); sa.Reasons[0] != packets.ErrQuotaExceeded.Code {
			t.Errorf("fourth filter SUBACK %x", sa.Reasons)
		}
		// Refused filters get nothing: d is published before c, and only c arrives.
		publish3(t, pub, "s5/d", 1, "refused")
		publish3(t, pub, "s5/c", 1, "granted")
		expectMsg(t, c.msgs, "s5/c", "granted")
		// After unsubscribing one, there is room again.
		ctx, cancel := contextTimeout()
		defer cancel()
		if _, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"s5/a"}}); err != nil {
			t.Fatal(err)
		}
		if sa := c.subscribe(t, 1, "s5/d"); sa.Reasons[0] != 1 {
			t.Errorf("after unsubscribe SUBACK %x", sa.Reasons)
		}
	})

	t.Run("mqtt311", func(t *testing.T) {
		c := dialPaho3(t, b.addr, "sub311")
		tok := c.SubscribeMultiple(map[string]byte{"s3/a": 1, "s3/b": 1, "s3/c": 1, "s3/d": 1}, func(pahomqtt.Client, pahomqtt.Message) {})
		if !tok.WaitTimeout(waitLong) {
			t.Fatal("no SUBACK")
		}
		granted, refused := 0, 0
		for _, code := range tok.(*pahomqtt.SubscribeToken).Result() {
			switch code {
			case 1:
				granted++
			case 0x80:
				refused++
			default:
				t.Errorf("SUBACK code %#x", code)
			}
		}
		if granted != 3 || refused != 1 {
			t.Errorf("granted %d refused %d, want 3 and 1", granted, refused)
		}
		if !c.IsConnectionOpen() {
			t.Error("client disconnected after a refused subscription")
		}
	})

	if got := rejected(t, b, reasonSubscriptionLimit); got != 4 {
		t.Errorf("rejected{subscription_limit} = %v, want 4", got)
	}
}

// TestReceiveMaximum: the broker announces MaxInflight as Receive Maximum, and an MQTT 5 client
// that keeps more QoS 2 messages unreleased is disconnected with 0x93 and its connection closed.
func TestReceiveMaximum(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.MaxInflight = 2 })
	r := dialRaw(t, b.addr)
	ack := r.connect(connectPacket(5, "greedy"))
	if ack.ReasonCode != 0 || ack.Properties.ReceiveMaximum != 2 {
		t.Fatalf("CONNACK code %#x, Receive Maximum %d", ack.ReasonCode, ack.Properties.ReceiveMaximum)
	}
	for id := uint16(1); id <= 3; id++ {
		r.sendPacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, TopicName: "q2", PacketID: id, Payload: []byte("x")})
	}
	got := r.expectClosed()
	var pubrecs int
	var disconnect *packets.Packet
	for i := range got {
		switch got[i].FixedHeader.Type {
		case packets.Pubrec:
			pubrecs++
		case packets.Disconnect:
			disconnect = &got[i]
		}
	}
	if pubrecs != 2 || disconnect == nil || disconnect.ReasonCode != packets.ErrReceiveMaximum.Code {
		t.Fatalf("got %d PUBREC and DISCONNECT %+v, want 2 and 0x93", pubrecs, disconnect)
	}
	if got := rejected(t, b, reasonReceiveMaximum); got != 1 {
		t.Errorf("rejected{receive_maximum} = %v, want 1", got)
	}
}

// TestSessionExpiryCapped: a client asking for an hour gets SessionExpiry, and when its session
// expires it is gone entirely, including its subscriptions in the topic index (which mochi alone
// leaves behind).
func TestSessionExpiryCapped(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.SessionExpiry = time.Second })
	hour := uint32(3600)
	c := dialPaho5(t, b.addr, "persistent", func(cp *paho.Connect) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &hour}
	})
	if p := c.connack.Properties; p == nil || p.SessionExpiryInterval == nil || *p.SessionExpiryInterval != 1 {
		t.Fatalf("CONNACK Session Expiry Interval = %v, want 1", p.SessionExpiryInterval)
	}
	c.subscribe(t, 1, "exp/t")
	c.close(t)

	waitFor(t, "the disconnect", func() bool { return metric(t, b.reg, "tether_edge_mqtt_clients_connected") == 0 })
	if !b.subscribed("exp/t") {
		t.Fatal("session dropped at disconnect; it should outlive the connection for SessionExpiry")
	}
	waitFor(t, "the session to expire", func() bool { return sessionCount(b.srv) == 0 })
	waitFor(t, "its subscription to go", func() bool { return !b.subscribed("exp/t") })
	if got := metric(t, b.reg, "tether_edge_mqtt_subscriptions"); got != 0 {
		t.Errorf("subscriptions = %v, want 0", got)
	}
}

// TestInlineClientIDRefused: mochi's reserved client id would take over the broker's own
// publishing identity; it is refused with "client identifier not valid".
func TestInlineClientIDRefused(t *testing.T) {
	b := startBroker(t, nil)
	r := dialRaw(t, b.addr)
	if ack := r.connect(connectPacket(5, "inline")); ack.ReasonCode != packets.ErrClientIdentifierNotValid.Code {
		t.Errorf("5: CONNACK %#x", ack.ReasonCode)
	}
	r.expectClosed()
	r = dialRaw(t, b.addr)
	if ack := r.connect(connectPacket(4, "inline")); ack.ReasonCode != packets.Err3ClientIdentifierNotValid.Code {
		t.Errorf("3.1.1: CONNACK %#x", ack.ReasonCode)
	}
	r.expectClosed()
	waitRejected(t, b, reasonClientID, 2)
	// The broker's own publishing still works.
	c := dialPaho3(t, b.addr, "watcher")
	ch := subscribe3(t, c, "still/mine", 0)
	if err := b.Publish("still/mine", []byte("ok"), 0); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, ch, "still/mine", "ok")
}

// TestOfflineSessionsBoundedInBytes: QoS 1 messages kept for disconnected sessions stay within
// MaxOfflineSessionBytes per session and MaxOfflineBytes in all; the rest are dropped and
// counted, and a session that comes back gets what was kept. Before, only the count was bounded
// (MaxInflight): 4 sessions × 200 messages of 128 KiB took 127 MiB of heap.
func TestOfflineSessionsBoundedInBytes(t *testing.T) {
	const size, msgs = 8 << 10, 20
	b := startBroker(t, func(c *Config) { c.MaxOfflineSessionBytes, c.MaxOfflineBytes = 64<<10, 128<<10 })
	persistent := func(o *pahomqtt.ClientOptions) { o.SetCleanSession(false) }
	for i := range 3 {
		c := dialPaho3(t, b.addr, fmt.Sprintf("sleeper%d", i), persistent)
		subscribe3(t, c, "q/#", 1)
		c.Disconnect(50)
	}
	waitFor(t, "disconnects", func() bool { return atomic.LoadInt64(&b.srv.Info.ClientsConnected) == 0 })
	pub := dialPaho3(t, b.addr, "pub")
	payload := strings.Repeat("p", size)
	for range msgs {
		publish3(t, pub, "q/x", 1, payload)
	}
	var total int64
	for i := range 3 {
		cl, ok := b.srv.Clients.Get(fmt.Sprintf("sleeper%d", i))
		if !ok {
			t.Fatalf("session sleeper%d is gone", i)
		}
		var held int64
		for _, p := range cl.State.Inflight.GetAll(false) {
			held += int64(len(p.Payload))
		}
		if held > 64<<10+size {
			t.Errorf("sleeper%d holds %d bytes; the limit is %d (plus one message being dropped)", i, held, 64<<10)
		}
		total += held
	}
	if total > 128<<10+3*size || total == 0 {
		t.Errorf("disconnected sessions hold %d bytes in all; the limit is %d", total, 128<<10)
	}
	if got := metric(t, b.reg, "tether_edge_mqtt_offline_held_bytes"); got > 128<<10+3*size {
		t.Errorf("offline_held_bytes %v", got)
	}
	if d := metric(t, b.reg, "tether_edge_mqtt_messages_dropped_total", "reason", "offline_bytes"); d < 3*msgs-(128<<10)/size-3 {
		t.Errorf("%v messages counted as dropped for offline_bytes, want at least %d", d, 3*msgs-(128<<10)/size-3)
	}
	// A session that comes back gets what was kept for it.
	var got atomic.Int64
	back := dialPaho3(t, b.addr, "sleeper0", persistent, func(o *pahomqtt.ClientOptions) {
		o.SetDefaultPublishHandler(func(pahomqtt.Client, pahomqtt.Message) { got.Add(1) })
	})
	waitFor(t, "kept messages delivered", func() bool { return got.Load() > 0 })
	back.Disconnect(50)
	if got.Load() > (64<<10)/size+1 {
		t.Errorf("sleeper0 got %d messages, more than its %d bytes allowed", got.Load(), 64<<10)
	}
}

// TestCleanSessionsHoldNothingOffline: QoS 1 messages routed to clean-session subscribers as
// they disconnect are not counted as held for an offline session (the session is deleted with
// them): before, those counts stayed for good, and once they reached MaxOfflineBytes every
// persistent session's messages were dropped.
func TestCleanSessionsHoldNothingOffline(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.MaxOfflineSessionBytes, c.MaxOfflineBytes = 64<<10, 256<<10 })
	payload := []byte(strings.Repeat("x", 1000))
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				b.Publish("flood/a", payload, 1)
			}
		}()
	}
	for i := range 200 {
		version := byte(4)
		if i%2 == 1 {
			version = 5 // session expiry 0
		}
		r := dialRaw(t, b.addr)
		r.mustConnect(version, fmt.Sprintf("sub-%d", i))
		r.sendPacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "flood/#", Qos: 1}}})
		time.Sleep(2 * time.Millisecond)
		r.nc.Close()
	}
	stop.Store(true)
	wg.Wait()
	waitFor(t, "the clean sessions gone", func() bool { return atomic.LoadInt64(&b.srv.Info.ClientsConnected) == 0 })
	waitFor(t, "nothing held offline", func() bool { return b.offline.bytes() == 0 })

	// A persistent session away gets all ten of its messages kept.
	r := dialRaw(t, b.addr)
	pk := connectPacket(4, "keeper")
	pk.Connect.Clean = false
	r.connect(pk)
	r.subscribe(1, "keep/#")
	r.nc.Close()
	waitFor(t, "keeper offline", func() bool { cl, ok := b.srv.Clients.Get("keeper"); return ok && cl.Closed() })
	d0 := b.offline.dropped.Load()
	for range 10 {
		b.Publish("keep/x", payload, 1)
	}
	if d := b.offline.dropped.Load() - d0; d != 0 {
		t.Fatalf("%d of the persistent session's 10 messages dropped; %d bytes counted as held", d, b.offline.bytes())
	}
	if got := b.offline.bytes(); got != 10*int64(len(payload)) {
		t.Fatalf("held %d bytes for the persistent session, want %d", got, 10*len(payload))
	}
}

// TestDelayedWillDoesNotHoldTheEventLoop: a delayed will goes to its consumer off mochi's event
// loop, which also expires sessions: a consumer that takes its time (the upload handler waits
// up to 30 s for room in a full outbox) held every other session's expiry while it did.
func TestDelayedWillDoesNotHoldTheEventLoop(t *testing.T) {
	// Sessions outlive a second's will delay (mochi sends a delayed will only while its
	// session is there), and expire soon after.
	b := startBroker(t, func(c *Config) { c.SessionExpiry = 3 * time.Second })
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	entered := make(chan struct{}, 1)
	if err := b.Handle("w/#", func(string, []byte) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A client whose will is delayed a second, gone without a DISCONNECT.
	r := dialRaw(t, b.addr)
	pk := connectPacket(5, "willer")
	pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload = true, "w/x", []byte("gone")
	pk.Connect.WillProperties.WillDelayInterval = 1
	pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 60, true
	if ack := r.connect(pk); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %#x", ack.ReasonCode)
	}
	r.nc.Close()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the delayed will never reached its consumer")
	}
	// Another session, which expires three seconds after its client leaves.
	hour := uint32(3600)
	c := dialPaho5(t, b.addr, "sleeper", func(cp *paho.Connect) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &hour}
	})
	c.close(t)
	deadline := time.Now().Add(8 * time.Second)
	for {
		if _, ok := b.srv.Clients.Get("sleeper"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a session did not expire while a delayed will's consumer was busy")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
