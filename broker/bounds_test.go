package broker

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	pahomqtt "github.com/eclipse/paho.mqtt.golang"
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
