package broker

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pahomqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestRetainedMessagesAreBounded: one client could leave any number of retained messages,
// which outlive it. Past MaxRetained a retained PUBLISH on a new topic is delivered but not
// kept; replacing a retained message still works.
func TestRetainedMessagesAreBounded(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.MaxRetained = 20 })
	c := dialPaho3(t, b.addr, "hoarder")
	for i := 0; i < 50; i++ {
		if tok := c.Publish(fmt.Sprintf("junk/%d", i), 1, true, "x"); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	if tok := c.Publish("junk/0", 1, true, "replaced"); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	c.Disconnect(100)
	kept := 0
	for topic := range b.srv.Topics.Retained.GetAll() {
		if len(topic) > 5 && topic[:5] == "junk/" {
			kept++
		}
	}
	if kept != 20 {
		t.Fatalf("%d retained messages kept, want the limit of 20", kept)
	}
	if pk, ok := b.srv.Topics.Retained.Get("junk/0"); !ok || string(pk.Payload) != "replaced" {
		t.Fatalf("replacing a retained message past the limit: %q %v", pk.Payload, ok)
	}
	if got := metric(t, b.reg, "tether_edge_mqtt_rejected_total", "reason", "retained_limit"); got != 30 {
		t.Fatalf("retained_limit counted %v, want 30", got)
	}
}

// TestSessionsAreBounded: MaxClients bounds connections, and kept sessions of departed clients
// (clean-session=false) counted against nothing. Past MaxSessions a new client is refused in
// CONNACK; one resuming its own session is let in.
func TestSessionsAreBounded(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.MaxSessions = 5 })
	persistent := func(o *pahomqtt.ClientOptions) { o.SetCleanSession(false) }
	for i := 0; i < 5; i++ {
		dialPaho3(t, b.addr, fmt.Sprintf("s%d", i), persistent).Disconnect(50)
	}
	waitFor(t, "disconnects", func() bool { return atomic.LoadInt64(&b.srv.Info.ClientsConnected) == 0 })
	o := pahomqtt.NewClientOptions().AddBroker("tcp://" + b.addr).SetClientID("one-more").SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).SetCleanSession(false)
	extra := pahomqtt.NewClient(o)
	if tok := extra.Connect(); tok.WaitTimeout(waitLong) && tok.Error() == nil {
		extra.Disconnect(0)
		t.Fatalf("a sixth session was let in with MaxSessions 5 (%d sessions)", b.srv.Clients.Len())
	}
	dialPaho3(t, b.addr, "s0", persistent).Disconnect(50) // resumes its own session
	if got := metric(t, b.reg, "tether_edge_mqtt_rejected_total", "reason", "session_limit"); got != 1 {
		t.Fatalf("session_limit counted %v, want 1", got)
	}
}

// TestTopicLevelsBounded: a topic name, filter or will topic of more than maxTopicLevels levels
// is refused before mochi's topic index sees it. In a review, one retained PUBLISH on a topic of
// 60,000 levels held every other client's SUBSCRIBE for 12.9 s (the index walks a topic in time
// that grows with the square of its levels, under one lock for the whole broker).
func TestTopicLevelsBounded(t *testing.T) {
	b := startBroker(t, nil)
	deep := strings.Repeat("/", 60_000) + "x"

	v5 := dialRaw(t, b.addr)
	v5.mustConnect(5, "deep5")
	v5.sendPacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, TopicName: deep, PacketID: 7, Payload: []byte("v")})
	if ack, err := v5.read(waitLong); err != nil || ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != packets.ErrTopicNameInvalid.Code {
		t.Fatalf("MQTT 5 PUBLISH on a %d-level topic: %v (type %d, reason %#x), want PUBACK 0x90", strings.Count(deep, "/"), err, ack.FixedHeader.Type, ack.ReasonCode)
	}
	if ack := v5.subscribe(8, deep+"/#", "fine/#"); len(ack.ReasonCodes) != 2 || ack.ReasonCodes[0] != packets.ErrTopicFilterInvalid.Code || ack.ReasonCodes[1] != 1 {
		t.Fatalf("SUBACK for a deep filter and a fine one: %#v, want [0x8F 0x01]", ack.ReasonCodes)
	}

	v3 := dialRaw(t, b.addr)
	v3.mustConnect(4, "deep3")
	v3.sendPacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, TopicName: deep, PacketID: 9, Payload: []byte("v")})
	v3.expectClosed()

	will := dialRaw(t, b.addr)
	cp := connectPacket(5, "deepwill")
	cp.Connect.WillFlag, cp.Connect.WillTopic, cp.Connect.WillRetain, cp.Connect.WillPayload = true, deep, true, []byte("gone")
	if ack := will.connect(cp); ack.ReasonCode != packets.ErrTopicNameInvalid.Code {
		t.Fatalf("CONNACK for a will on a deep topic: %#x, want 0x90", ack.ReasonCode)
	}

	for topic := range b.srv.Topics.Retained.GetAll() {
		if len(topic) > 1000 {
			t.Fatalf("a retained message on a %d-byte topic was kept", len(topic))
		}
	}
	start := time.Now()
	other := dialRaw(t, b.addr)
	other.mustConnect(4, "other")
	other.subscribe(1, "a/b")
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("another client's CONNECT and SUBSCRIBE took %s", d)
	}
	if got := metric(t, b.reg, "tether_edge_mqtt_rejected_total", "reason", "topic_levels"); got != 4 {
		t.Fatalf("topic_levels counted %v, want 4", got)
	}
}

// TestRetainedBoundHoldsForWillsAndRefusals: retained wills count against MaxRetained like
// retained PUBLISHes, and a retained PUBLISH a consumer refused takes no slot. Before, 50 retained
// wills were all kept with MaxRetained 5, and refused uploads used up the slots for good.
func TestRetainedBoundHoldsForWillsAndRefusals(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.MaxRetained = 5 })
	if err := b.Handle("refused/#", func(string, []byte) error { return ErrRefused }); err != nil {
		t.Fatal(err)
	}
	pub := dialRaw(t, b.addr)
	pub.mustConnect(5, "refused")
	for i := range 10 {
		pub.sendPacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, TopicName: fmt.Sprintf("refused/%d", i), PacketID: uint16(i + 1), Payload: []byte("v")})
		if _, err := pub.read(waitLong); err != nil {
			t.Fatal(err)
		}
	}
	keep := dialPaho3(t, b.addr, "keeper")
	if tok := keep.Publish("legit/config", 1, true, "keep me"); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	keep.Disconnect(100)
	if _, ok := b.srv.Topics.Retained.Get("legit/config"); !ok {
		t.Fatal("a retained message was not kept after refused ones took the slots")
	}

	for i := range 10 {
		c := dialRaw(t, b.addr)
		cp := connectPacket(4, fmt.Sprintf("mortal%d", i))
		cp.Connect.WillFlag, cp.Connect.WillTopic, cp.Connect.WillRetain, cp.Connect.WillPayload = true, fmt.Sprintf("wills/%d", i), true, []byte("gone")
		if ack := c.connect(cp); ack.ReasonCode != 0 {
			t.Fatalf("CONNACK %#x", ack.ReasonCode)
		}
		_ = c.nc.Close() // no DISCONNECT: the will is sent
	}
	waitFor(t, "the wills sent", func() bool {
		return metric(t, b.reg, "tether_edge_mqtt_rejected_total", "reason", "retained_limit") >= 6
	})
	var kept []string
	for topic := range b.srv.Topics.Retained.GetAll() {
		if !strings.HasPrefix(topic, "$SYS/") { // mochi's own
			kept = append(kept, topic)
		}
	}
	if len(kept) > 5 {
		t.Fatalf("%d retained messages kept, want at most MaxRetained (5): %v", len(kept), kept)
	}
}
