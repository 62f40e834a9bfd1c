package broker

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"
)

type handled struct {
	filter, topic, payload string
}

// TestHandleKubeEdgeTopics registers the consumers the twin engine and the outbox use and checks
// each gets exactly the client publishes its filter matches.
func TestHandleKubeEdgeTopics(t *testing.T) {
	b := startBroker(t, nil)
	got := make(chan handled, 16)
	filters := []string{
		"$hw/events/device/+/+/twin/update",
		"$hw/events/device/+/+/state/update",
		"$hw/events/upload/#",
		"SYS/dis/upload_records",
	}
	for _, f := range filters {
		if err := b.Handle(f, func(topic string, payload []byte) error {
			got <- handled{f, topic, string(payload)}
			return nil
		}); err != nil {
			t.Fatalf("Handle(%q): %v", f, err)
		}
	}

	mapper := dialPaho3(t, b.addr, "mapper")
	// Topics no consumer matches go first: if one were dispatched it would arrive before the rest.
	publish3(t, mapper, "$hw/events/device/default/dev1/twin/get", 1, `{"event_id":"0"}`)
	publish3(t, mapper, "$hw/events/device/default/dev1/twin/update/result", 1, `{}`)
	publish3(t, mapper, "$hw/events/device/dev1/twin/update", 1, `{}`) // one level short
	want := []handled{
		{filters[0], "$hw/events/device/default/dev1/twin/update", `{"event_id":"1"}`},
		{filters[1], "$hw/events/device/default/dev1/state/update", `{"event_id":"2","state":"online"}`},
		{filters[2], "$hw/events/upload/default/dev1/temp", `21.5`},
		{filters[3], "SYS/dis/upload_records", `{"records":[]}`},
	}
	for i, w := range want {
		qos := byte(i % 2)
		publish3(t, mapper, w.topic, qos, w.payload)
		select {
		case h := <-got:
			if h != w {
				t.Fatalf("handler got %+v, want %+v", h, w)
			}
		case <-time.After(waitLong):
			t.Fatalf("no handler call for %s", w.topic)
		}
	}
}

// TestHandleThenPublishResult is the twin engine's round trip: a consumer answers a device's
// update with Publish on the result topic, from inside the callback. The consumer does not see
// the broker's own publishes, even on a topic its filter matches.
func TestHandleThenPublishResult(t *testing.T) {
	b := startBroker(t, nil)
	seen := make(chan string, 8)
	if err := b.Handle("$hw/events/device/+/+/twin/#", func(topic string, payload []byte) error {
		seen <- topic
		if strings.HasSuffix(topic, "/update") {
			if err := b.Publish(topic+"/result", append([]byte("ack:"), payload...), 1); err != nil {
				t.Errorf("Publish from a handler: %v", err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	device := dialPaho5(t, b.addr, "device")
	device.subscribe(t, 1, "$hw/events/device/ns/d/twin/update/result")
	device.publish(t, "$hw/events/device/ns/d/twin/update", 1, "v1")
	if m := expectMsg(t, device.msgs, "$hw/events/device/ns/d/twin/update/result", "ack:v1"); m.qos != 1 {
		t.Errorf("result delivered at qos %d, want 1", m.qos)
	}
	if topic := recv(t, seen); topic != "$hw/events/device/ns/d/twin/update" {
		t.Errorf("handler saw %s first", topic)
	}
	// The result published above matched the filter too; had it been dispatched it would be next.
	device.publish(t, "$hw/events/device/ns/d/twin/get", 1, "")
	if topic := recv(t, seen); topic != "$hw/events/device/ns/d/twin/get" {
		t.Errorf("handler saw the broker's own publish %s", topic)
	}
}

// TestHandleBlockingIsPublisherBackpressure: while a consumer blocks, the publishing client gets
// no PUBACK (so a consumer that persists before returning gives at-least-once), and other clients
// are served normally.
func TestHandleBlockingIsPublisherBackpressure(t *testing.T) {
	b := startBroker(t, nil)
	entered := make(chan struct{})
	release := make(chan struct{})
	if err := b.Handle("slow/#", func(string, []byte) error {
		entered <- struct{}{}
		<-release
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slow := dialPaho5(t, b.addr, "slow")
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		slow.publish(t, "slow/x", 1, "v")
	}()
	<-entered

	other := dialPaho3(t, b.addr, "other")
	ch := subscribe3(t, other, "fast/#", 1)
	publish3(t, other, "fast/y", 1, "served")
	expectMsg(t, ch, "fast/y", "served")

	select {
	case <-acked:
		t.Fatal("PUBACK sent before the consumer returned")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-acked:
	case <-time.After(waitLong):
		t.Fatal("no PUBACK after the consumer returned")
	}
}

// TestHandlerPanicIsContained: a panicking consumer costs the publisher its connection (and its
// PUBACK) like any panic while serving it, and nothing else.
func TestHandlerPanicIsContained(t *testing.T) {
	b := startBroker(t, nil)
	if err := b.Handle("boom", func(string, []byte) error { panic("consumer bug") }); err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, b.addr)
	r.mustConnect(4, "trigger")
	r.sendPacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "boom", PacketID: 7})
	for _, pk := range r.expectClosed() {
		if pk.FixedHeader.Type == packets.Puback {
			t.Error("PUBACK sent although the consumer panicked")
		}
	}
	waitValue(t, "panics_total", 1, func() float64 { return metric(t, b.reg, "tether_edge_mqtt_panics_total") })
	c := dialPaho3(t, b.addr, "after")
	ch := subscribe3(t, c, "fine", 0)
	publish3(t, c, "fine", 0, "yes")
	expectMsg(t, ch, "fine", "yes")
}

// TestWillReachesHandler: a mapper's will (often its "offline" state report) reaches consumers
// when its connection drops.
func TestWillReachesHandler(t *testing.T) {
	b := startBroker(t, nil)
	got := make(chan handled, 1)
	if err := b.Handle("$hw/events/device/+/+/state/update", func(topic string, payload []byte) error {
		got <- handled{topic: topic, payload: string(payload)}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, b.addr)
	cp := connectPacket(4, "mapper")
	cp.Connect.WillFlag = true
	cp.Connect.WillTopic = "$hw/events/device/ns/d/state/update"
	cp.Connect.WillPayload = []byte(`{"state":"offline"}`)
	if ack := r.connect(cp); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %#x", ack.ReasonCode)
	}
	_ = r.nc.Close()
	select {
	case h := <-got:
		if h.topic != cp.Connect.WillTopic || h.payload != `{"state":"offline"}` {
			t.Errorf("got %+v", h)
		}
	case <-time.After(waitLong):
		t.Fatal("will not dispatched")
	}
}

func TestHandleAndPublishValidation(t *testing.T) {
	b, err := New(DefaultConfig(), zerologNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	noop := func(string, []byte) error { return nil }
	for _, f := range []string{"", "a/#/b", "a+/b", "a/b#", "$share/g/a", "bad\x00", string([]byte{0xff})} {
		if err := b.Handle(f, noop); !errors.Is(err, ErrInvalidFilter) {
			t.Errorf("Handle(%q) = %v, want ErrInvalidFilter", f, err)
		}
	}
	for _, f := range []string{"#", "+", "a/+/b", "$hw/events/upload/#", "SYS/dis/upload_records"} {
		if err := b.Handle(f, noop); err != nil {
			t.Errorf("Handle(%q) = %v", f, err)
		}
	}
	if err := b.Handle("a", nil); err == nil {
		t.Error("Handle with a nil func accepted")
	}
	for _, topic := range []string{"", "a/+", "a/#", "$SYS/x", "nul\x00"} {
		if err := b.Publish(topic, nil, 0); !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("Publish(%q) = %v, want ErrInvalidTopic", topic, err)
		}
	}
	if err := b.Publish("a/b", nil, 3); !errors.Is(err, ErrInvalidQoS) {
		t.Errorf("Publish qos 3 = %v, want ErrInvalidQoS", err)
	}
	// Before Run there are no subscribers, but publishing is not an error.
	if err := b.Publish("a/b", []byte("x"), 1); err != nil {
		t.Errorf("Publish before Run: %v", err)
	}
}

// TestShutdown: cancelling Run's context ends every kind of connection (MQTT 5 and 3.1.1 clients,
// a socket that never sent CONNECT) within ShutdownTimeout, Run returns nil, and no goroutine of
// the broker is left.
func TestShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b := startBroker(t, func(c *Config) { c.ShutdownTimeout = 3 * time.Second })

	v5 := dialPaho5(t, b.addr, "v5")
	v3 := dialPaho3(t, b.addr, "v3")
	idle := dialRaw(t, b.addr)
	raw5 := dialRaw(t, b.addr)
	raw5.mustConnect(5, "raw5")
	raw3 := dialRaw(t, b.addr)
	raw3.mustConnect(4, "raw3")
	waitFor(t, "five connections", func() bool { return metric(t, b.reg, "tether_edge_mqtt_connections_open") == 5 })

	start := time.Now()
	if err := b.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second+500*time.Millisecond {
		t.Errorf("stop took %s", d)
	}
	idle.expectClosed()
	got := raw5.expectClosed()
	if len(got) != 1 || got[0].FixedHeader.Type != packets.Disconnect || got[0].ReasonCode != packets.ErrServerShuttingDown.Code {
		t.Errorf("MQTT 5 client got %+v, want one DISCONNECT 0x8B", got)
	}
	// MQTT 3.1.1 has no DISCONNECT from a server (libmosquitto exits on one): the connection
	// just closes.
	if got := raw3.expectClosed(); len(got) != 0 {
		t.Errorf("MQTT 3.1.1 client got %+v, want the connection closed and nothing sent", got)
	}
	select {
	case <-v5.Done():
	case <-time.After(waitLong):
		t.Error("paho v5 client not disconnected")
	}
	waitFor(t, "paho 3.1.1 client to notice", func() bool { return !v3.IsConnectionOpen() })
	if _, err := net.DialTimeout("tcp", b.addr, time.Second); err == nil {
		t.Error("still accepting after Run returned")
	}
	// t.Cleanup runs after the deferred leak check, so the clients are closed here.
	v5.close(t)
	v3.Disconnect(0)
}

func recv[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLong):
		t.Fatal("nothing received")
	}
	var zero T
	return zero
}

// TestSessionTakeover: a second CONNECT with a client's id takes its session over. The first
// connection ends as its version allows: an MQTT 5 client gets DISCONNECT 0x8E, an MQTT 3.1.1
// client only sees the connection close (a DISCONNECT from the server would make libmosquitto
// clients exit instead of reconnecting).
func TestSessionTakeover(t *testing.T) {
	b := startBroker(t, nil)
	for _, version := range []byte{4, 5} {
		id := fmt.Sprintf("dup-v%d", version)
		first := dialRaw(t, b.addr)
		first.mustConnect(version, id)
		second := dialRaw(t, b.addr)
		second.mustConnect(version, id)
		got := first.expectClosed()
		switch {
		case version == 5 && (len(got) != 1 || got[0].FixedHeader.Type != packets.Disconnect || got[0].ReasonCode != packets.ErrSessionTakenOver.Code):
			t.Errorf("MQTT 5: the first connection got %+v, want one DISCONNECT 0x8E", got)
		case version == 4 && len(got) != 0:
			t.Errorf("MQTT 3.1.1: the first connection got %+v, want nothing before the close", got)
		}
	}
}

// TestHandleNoRoomTellsTheClient: a consumer with no room for a message (ErrNoRoom) does not
// leave the client waiting for a PUBACK that never comes: an MQTT 5 client gets PUBACK 0x97
// (quota exceeded) and keeps its connection; an MQTT 3.1.1 client, which has no way to hear a
// refusal, has its connection closed, and sends the message again after it reconnects.
func TestHandleNoRoomTellsTheClient(t *testing.T) {
	b := startBroker(t, nil)
	if err := b.Handle("full/#", func(string, []byte) error { return fmt.Errorf("outbox: %w", ErrNoRoom) }); err != nil {
		t.Fatal(err)
	}
	pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "full/x", PacketID: 7, Payload: []byte("v")}

	v5 := dialRaw(t, b.addr)
	v5.mustConnect(5, "nr5")
	v5.sendPacket(pub)
	ack, err := v5.read(waitLong)
	if err != nil || ack.FixedHeader.Type != packets.Puback || ack.PacketID != 7 || ack.ReasonCode != packets.ErrQuotaExceeded.Code {
		t.Fatalf("MQTT 5: got %v (type %d, id %d, reason %#x), want PUBACK 7 with 0x97", err, ack.FixedHeader.Type, ack.PacketID, ack.ReasonCode)
	}
	v5.sendPacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	if pk, err := v5.read(waitLong); err != nil || pk.FixedHeader.Type != packets.Pingresp {
		t.Fatalf("MQTT 5: the connection did not go on after the refusal: %v", err)
	}

	v3 := dialRaw(t, b.addr)
	v3.mustConnect(4, "nr3")
	v3.sendPacket(pub)
	if got := v3.expectClosed(); len(got) != 0 {
		t.Fatalf("MQTT 3.1.1: got %d packets, want the connection closed without a PUBACK", len(got))
	}
}

// TestHandleRefusedIsAnsweredOnce: a consumer that will never take a message (ErrRefused) has
// the client answered, so that it does not send it again for ever: an MQTT 5 client gets PUBACK
// 0x83, an MQTT 3.1.1 client an ordinary PUBACK; both keep their connections, and the message
// reaches no subscriber.
func TestHandleRefusedIsAnsweredOnce(t *testing.T) {
	b := startBroker(t, nil)
	calls := make(chan string, 4)
	if err := b.Handle("big/#", func(topic string, _ []byte) error {
		calls <- topic
		return fmt.Errorf("too long: %w", ErrRefused)
	}); err != nil {
		t.Fatal(err)
	}
	sub := dialRaw(t, b.addr)
	sub.mustConnect(4, "watcher")
	sub.subscribe(1, "big/#")

	for _, c := range []struct {
		version byte
		reason  byte
	}{{5, packets.ErrImplementationSpecificError.Code}, {4, 0}} {
		pub := dialRaw(t, b.addr)
		pub.mustConnect(c.version, fmt.Sprintf("big%d", c.version))
		pub.sendPacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "big/x", PacketID: 9, Payload: []byte("v")})
		ack, err := pub.read(waitLong)
		if err != nil || ack.FixedHeader.Type != packets.Puback || ack.PacketID != 9 || ack.ReasonCode != c.reason {
			t.Fatalf("MQTT v%d: got %v (type %d, id %d, reason %#x), want PUBACK 9 with %#x", c.version, err, ack.FixedHeader.Type, ack.PacketID, ack.ReasonCode, c.reason)
		}
		pub.sendPacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
		if pk, err := pub.read(waitLong); err != nil || pk.FixedHeader.Type != packets.Pingresp {
			t.Fatalf("MQTT v%d: the connection did not go on after the refusal: %v", c.version, err)
		}
		if got := <-calls; got != "big/x" {
			t.Fatalf("the consumer saw %q", got)
		}
	}
	if pk, err := sub.read(300 * time.Millisecond); err == nil {
		t.Fatalf("a subscriber got a message on %q, which its consumer refused", pk.TopicName)
	}
}
