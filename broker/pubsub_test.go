package broker

import (
	"context"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

func TestPaho311PubSub(t *testing.T) {
	b := startBroker(t, nil)
	sub := dialPaho3(t, b.addr, "sub311")
	pub := dialPaho3(t, b.addr, "pub311")
	msgs := subscribe3(t, sub, "t/311/#", 1)

	publish3(t, pub, "t/311/a", 0, "qos0")
	if m := expectMsg(t, msgs, "t/311/a", "qos0"); m.qos != 0 {
		t.Errorf("qos0 delivered at qos %d", m.qos)
	}
	publish3(t, pub, "t/311/b", 1, "qos1")
	if m := expectMsg(t, msgs, "t/311/b", "qos1"); m.qos != 1 {
		t.Errorf("qos1 delivered at qos %d", m.qos)
	}
}

func TestPaho5PubSub(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.MaxInflight = 77 })
	sub := dialPaho5(t, b.addr, "sub5")
	pub := dialPaho5(t, b.addr, "pub5")

	// mochi announces Receive Maximum itself; the packet size and alias limits are added by us.
	props := sub.connack.Properties
	if props == nil || props.ReceiveMaximum == nil || *props.ReceiveMaximum != 77 {
		t.Errorf("CONNACK Receive Maximum = %v, want 77", props.ReceiveMaximum)
	}
	if props.MaximumPacketSize == nil || *props.MaximumPacketSize != b.cfg.MaxPacketSize {
		t.Errorf("CONNACK Maximum Packet Size = %v, want %d", props.MaximumPacketSize, b.cfg.MaxPacketSize)
	}
	if props.TopicAliasMaximum == nil || *props.TopicAliasMaximum != b.cfg.TopicAliasMaximum {
		t.Errorf("CONNACK Topic Alias Maximum = %v, want %d", props.TopicAliasMaximum, b.cfg.TopicAliasMaximum)
	}

	if sa := sub.subscribe(t, 1, "t/5/#"); sa.Reasons[0] != 1 {
		t.Fatalf("SUBACK %v", sa.Reasons)
	}
	pub.publish(t, "t/5/a", 0, "qos0")
	if m := expectMsg(t, sub.msgs, "t/5/a", "qos0"); m.qos != 0 {
		t.Errorf("qos0 delivered at qos %d", m.qos)
	}
	pub.publish(t, "t/5/b", 1, "qos1")
	if m := expectMsg(t, sub.msgs, "t/5/b", "qos1"); m.qos != 1 {
		t.Errorf("qos1 delivered at qos %d", m.qos)
	}

	// Across protocol versions, both ways.
	p3 := dialPaho3(t, b.addr, "x311")
	in3 := subscribe3(t, p3, "x/to3", 1)
	publish3(t, p3, "t/5/from3", 1, "hello from 3.1.1")
	expectMsg(t, sub.msgs, "t/5/from3", "hello from 3.1.1")
	pub.publish(t, "x/to3", 1, "hello from 5")
	expectMsg(t, in3, "x/to3", "hello from 5")
}

func TestAutopahoPubSub(t *testing.T) {
	b := startBroker(t, nil)
	u, err := url.Parse("mqtt://" + b.addr)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan msg, 16)
	subscribed := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		ConnectTimeout:                5 * time.Second,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			// Must not block: subscribe from a goroutine.
			go func() {
				sctx, scancel := context.WithTimeout(ctx, waitLong)
				defer scancel()
				_, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "auto/#", QoS: 1}}})
				subscribed <- err
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID: "autopaho",
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){
				func(pr paho.PublishReceived) (bool, error) {
					got <- msg{pr.Packet.Topic, string(pr.Packet.Payload), pr.Packet.QoS}
					return true, nil
				},
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), waitLong)
		defer dcancel()
		_ = cm.Disconnect(dctx)
		<-cm.Done()
	}()
	actx, acancel := context.WithTimeout(ctx, waitLong)
	defer acancel()
	if err := cm.AwaitConnection(actx); err != nil {
		t.Fatalf("autopaho connect: %v", err)
	}
	select {
	case err := <-subscribed:
		if err != nil {
			t.Fatalf("autopaho subscribe: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("autopaho did not subscribe")
	}
	for qos := byte(0); qos <= 1; qos++ {
		pctx, pcancel := context.WithTimeout(ctx, waitLong)
		_, err := cm.Publish(pctx, &paho.Publish{Topic: "auto/q", QoS: qos, Payload: []byte("q" + strconv.Itoa(int(qos)))})
		pcancel()
		if err != nil {
			t.Fatalf("autopaho publish qos %d: %v", qos, err)
		}
		if m := expectMsg(t, got, "auto/q", "q"+strconv.Itoa(int(qos))); m.qos != qos {
			t.Errorf("delivered at qos %d, want %d", m.qos, qos)
		}
	}
}

// TestMosquittoClients drives the broker with the mosquitto command-line clients, in both protocol
// versions, through a subscriber, a publisher, a Handle consumer and Broker.Publish.
func TestMosquittoClients(t *testing.T) {
	subBin := requireBinary(t, "mosquitto_sub")
	pubBin := requireBinary(t, "mosquitto_pub")
	b := startBroker(t, nil)
	host, port, _ := strings.Cut(b.addr, ":")

	consumed := make(chan msg, 4)
	if err := b.Handle("mosq/in/#", func(topic string, payload []byte) error {
		consumed <- msg{topic: topic, payload: string(payload)}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*waitLong)
			defer cancel()

			// A subscriber that exits after one message; both a client's and the broker's publish reach it.
			for _, via := range []string{"client", "broker"} {
				topic := "mosq/out/" + v + "/" + via
				sub := exec.CommandContext(ctx, subBin, "-h", host, "-p", port, "-V", v, "-q", "1",
					"-t", topic, "-C", "1", "-W", "20")
				var out strings.Builder
				sub.Stdout = &out
				sub.Stderr = &out
				if err := sub.Start(); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "mosquitto_sub to subscribe to "+topic, func() bool { return b.subscribed(topic) })
				payload := "hello " + v + " via " + via
				if via == "client" {
					if o, err := exec.CommandContext(ctx, pubBin, "-h", host, "-p", port, "-V", v, "-q", "1",
						"-t", topic, "-m", payload).CombinedOutput(); err != nil {
						t.Fatalf("mosquitto_pub: %v: %s", err, o)
					}
				} else if err := b.Publish(topic, []byte(payload), 1); err != nil {
					t.Fatal(err)
				}
				if err := sub.Wait(); err != nil {
					t.Fatalf("mosquitto_sub: %v: %s", err, out.String())
				}
				if got := strings.TrimSpace(out.String()); got != payload {
					t.Fatalf("mosquitto_sub printed %q, want %q", got, payload)
				}
			}

			topic := "mosq/in/" + v
			if o, err := exec.CommandContext(ctx, pubBin, "-h", host, "-p", port, "-V", v, "-q", "1",
				"-t", topic, "-m", "to the agent").CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_pub: %v: %s", err, o)
			}
			select {
			case m := <-consumed:
				if m.topic != topic || m.payload != "to the agent" {
					t.Fatalf("handler got %s %q", m.topic, m.payload)
				}
			case <-time.After(waitLong):
				t.Fatal("handler did not receive mosquitto_pub's message")
			}
		})
	}
}
