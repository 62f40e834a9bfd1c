package broker

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// truncatedSubscribe is an MQTT 5 SUBSCRIBE whose only filter ("a") lacks its options byte. mochi
// v2.7.9 indexes past the end of the packet decoding it and panics (mochi-mqtt/server#501).
var truncatedSubscribe = []byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, 0x61}

// TestTruncatedSubscribePanicContained sends the packet that panics mochi, 50 times, each from a
// fresh MQTT 5 client that has a subscription and a will. Each time only the sender is dropped:
// its session, subscription and goroutines go, its will is published, and the broker goes on
// serving a client that was connected all along and accepting new ones.
func TestTruncatedSubscribePanicContained(t *testing.T) {
	const rounds = 50
	b := startBroker(t, nil)

	bystander := dialPaho3(t, b.addr, "bystander")
	msgs := subscribe3(t, bystander, "news/#", 1)
	wills := subscribe3(t, bystander, "will/#", 1)
	pub := dialPaho3(t, b.addr, "publisher")
	publish3(t, pub, "news/before", 1, "before")
	expectMsg(t, msgs, "news/before", "before")

	sessions := sessionCount(b.srv)
	subs := metric(t, b.reg, "tether_edge_mqtt_subscriptions")
	goroutines := runtime.NumGoroutine()

	var firstRemote string
	for i := range rounds {
		r := dialRaw(t, b.addr)
		if i == 0 {
			firstRemote = r.nc.LocalAddr().String()
		}
		cp := connectPacket(5, fmt.Sprintf("victim-%d", i))
		cp.Connect.WillFlag = true
		cp.Connect.WillTopic = fmt.Sprintf("will/%d", i)
		cp.Connect.WillPayload = []byte("gone")
		cp.Connect.WillQos = 1
		if ack := r.connect(cp); ack.ReasonCode != 0 {
			t.Fatalf("round %d: CONNACK %#x", i, ack.ReasonCode)
		}
		if ack := r.subscribe(1, fmt.Sprintf("victim/%d", i)); ack.ReasonCodes[0] != 1 {
			t.Fatalf("round %d: SUBACK %v", i, ack.ReasonCodes)
		}
		r.send(truncatedSubscribe)
		r.expectClosed()
		expectMsg(t, wills, fmt.Sprintf("will/%d", i), "gone")
		_ = r.nc.Close()
	}

	if got := metric(t, b.reg, "tether_edge_mqtt_panics_total"); got != rounds {
		t.Errorf("panics_total = %v, want %d", got, rounds)
	}
	if got := rejected(t, b, reasonPanic); got != rounds {
		t.Errorf("rejected{panic} = %v, want %d", got, rounds)
	}
	// The panic skipped mochi's session clean-up; ours must have done it.
	waitFor(t, "sessions back to the bystanders", func() bool { return sessionCount(b.srv) == sessions })
	if got := metric(t, b.reg, "tether_edge_mqtt_subscriptions"); got != subs {
		t.Errorf("subscriptions = %v, want %v (victims' subscriptions leaked)", got, subs)
	}
	for i := range rounds {
		if topic := fmt.Sprintf("victim/%d", i); b.subscribed(topic) {
			t.Fatalf("subscription %s still in the topic index", topic)
		}
	}
	if got := metric(t, b.reg, "tether_edge_mqtt_clients_connected"); got != 2 {
		t.Errorf("clients_connected = %v, want 2", got)
	}
	// Every victim's goroutines (its connection goroutine and mochi's write loop) are gone.
	waitFor(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= goroutines })

	// The bystander kept its session and its subscription.
	publish3(t, pub, "news/after", 1, "after")
	expectMsg(t, msgs, "news/after", "after")
	if !bystander.IsConnectionOpen() {
		t.Error("bystander was disconnected")
	}
	// New clients are still accepted.
	late := dialPaho5(t, b.addr, "late")
	late.subscribe(t, 1, "news/#")
	publish3(t, pub, "news/late", 0, "late")
	expectMsg(t, late.msgs, "news/late", "late")

	logs := b.logs.String()
	if !strings.Contains(logs, "panic while serving a client contained") || !strings.Contains(logs, firstRemote) {
		t.Errorf("panic not logged with the client's remote address %s:\n%.2000s", firstRemote, logs)
	}
}

// hugeLength is the largest remaining length MQTT can encode: 268,435,455 bytes (256 MiB).
var hugeLength = []byte{0xff, 0xff, 0xff, 0x7f}

func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// TestOversizePacketRefusedBeforeAllocation announces a 256 MiB packet, as the first packet and
// after a CONNECT, in both protocol versions. The sender is dropped before the body is read, the
// process allocates nowhere near the announced size (TotalAlloc counts every allocation, even one
// freed at once), and a connected client is unaffected.
func TestOversizePacketRefusedBeforeAllocation(t *testing.T) {
	b := startBroker(t, nil)
	bystander := dialPaho5(t, b.addr, "bystander")
	bystander.subscribe(t, 1, "ok/#")
	pub := dialPaho3(t, b.addr, "publisher")

	cases := []struct {
		name    string
		version byte // 0: no CONNECT first
		header  byte
	}{
		{"first packet CONNECT", 0, 0x10},
		{"PUBLISH after 3.1.1 CONNECT", 4, 0x30},
		{"PUBLISH after 5 CONNECT", 5, 0x30},
		{"SUBSCRIBE after 5 CONNECT", 5, 0x82},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, b.addr)
			if tc.version != 0 {
				r.mustConnect(tc.version, fmt.Sprintf("big-%d", i))
			}
			before := totalAlloc()
			r.send(append([]byte{tc.header}, hugeLength...))
			r.send([]byte("some of the body"))
			r.expectClosed()
			if grew := totalAlloc() - before; grew > 32<<20 {
				t.Errorf("process allocated %d MiB while refusing the packet", grew>>20)
			}
			waitRejected(t, b, reasonOversize, float64(i+1))
			payload := "still here " + tc.name
			publish3(t, pub, "ok/"+tc.name, 1, payload)
			expectMsg(t, bystander.msgs, "ok/"+tc.name, payload)
		})
	}

	// The limit is on the packet, header included: a PUBLISH just under it goes through, one
	// byte over it ends the publisher's connection.
	t.Run("boundary", func(t *testing.T) {
		r := dialRaw(t, b.addr)
		r.mustConnect(4, "edge")
		topic := "ok/edge"
		body := 2 + len(topic)
		// 256 KiB packets carry a 3-byte remaining length after the 1-byte header.
		fit := int(b.cfg.MaxPacketSize) - 1 - 3 - body
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: make([]byte, fit)}
		r.sendPacket(pk)
		select {
		case m := <-bystander.msgs:
			if len(m.payload) != fit {
				t.Fatalf("got %d bytes, want %d", len(m.payload), fit)
			}
		case <-time.After(waitLong):
			t.Fatal("a packet of exactly MaxPacketSize was not delivered")
		}
		pk.Payload = make([]byte, fit+1)
		r.sendPacket(pk)
		r.expectClosed()
	})
}

// TestConnectTimeout: a connection that never sends CONNECT is closed after ConnectTimeout.
func TestConnectTimeout(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.ConnectTimeout = 200 * time.Millisecond })
	r := dialRaw(t, b.addr)
	start := time.Now()
	r.expectClosed()
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("closed after %s, before the timeout", d)
	}
	waitRejected(t, b, reasonConnectTimeout, 1)
}

// TestProtocolErrorsCounted: a first packet that is not CONNECT, and a malformed packet after
// CONNECT, each end the connection and are counted.
func TestProtocolErrorsCounted(t *testing.T) {
	b := startBroker(t, nil)
	r := dialRaw(t, b.addr)
	r.send([]byte{0xc0, 0x00}) // PINGREQ before CONNECT
	r.expectClosed()

	r = dialRaw(t, b.addr)
	r.mustConnect(4, "bad-flags")
	r.send([]byte{0x8f, 0x00}) // SUBSCRIBE with reserved flags 1111
	r.expectClosed()
	waitRejected(t, b, reasonProtocol, 2)
}
