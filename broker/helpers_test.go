package broker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahomqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/tetherhub/tether/internal/syncbuf"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitLong = 10 * time.Second

type testBroker struct {
	*Broker
	reg  *prometheus.Registry
	logs *syncbuf.Buffer
	addr string
	stop func() error // cancels Run and waits for it; idempotent
}

// startBroker runs a broker on 127.0.0.1:0 until the test ends.
func startBroker(t testing.TB, mutate func(*Config)) *testBroker {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	if mutate != nil {
		mutate(&cfg)
	}
	logs := &syncbuf.Buffer{}
	reg := prometheus.NewRegistry()
	b, err := New(cfg, zerolog.New(logs).Level(zerolog.InfoLevel), reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	select {
	case <-b.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(waitLong):
		cancel()
		t.Fatal("broker not ready")
	}
	tb := &testBroker{Broker: b, reg: reg, logs: logs, addr: b.Addr().String()}
	var once sync.Once
	var runErr error
	tb.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(2 * waitLong):
				runErr = errors.New("Run did not return after cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := tb.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return tb
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// metric returns the value of the series name{labels...} ("k", "v" pairs), or -1 if absent.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Untyped != nil:
				return m.Untyped.GetValue()
			}
		}
	}
	return -1
}

func rejected(t testing.TB, b *testBroker, reason string) float64 {
	return metric(t, b.reg, "tether_edge_mqtt_rejected_total", "reason", reason)
}

// subscribed reports whether some client session holds a subscription matching topic.
func (b *testBroker) subscribed(topic string) bool {
	return len(b.srv.Topics.Subscribers(topic).Subscriptions) > 0
}

// --- paho.mqtt.golang (MQTT 3.1.1) ---

type msg struct {
	topic   string
	payload string
	qos     byte
}

func dialPaho3(t testing.TB, addr, id string, configure ...func(*pahomqtt.ClientOptions)) pahomqtt.Client {
	t.Helper()
	o := pahomqtt.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(id).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetKeepAlive(30 * time.Second)
	for _, f := range configure {
		f(o)
	}
	c := pahomqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(waitLong) {
		t.Fatalf("paho3 %s: connect timed out", id)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("paho3 %s: connect: %v", id, err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func subscribe3(t testing.TB, c pahomqtt.Client, filter string, qos byte) <-chan msg {
	t.Helper()
	ch := make(chan msg, 256)
	tok := c.Subscribe(filter, qos, func(_ pahomqtt.Client, m pahomqtt.Message) {
		ch <- msg{m.Topic(), string(m.Payload()), m.Qos()}
	})
	if !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("paho3 subscribe %s: %v", filter, tok.Error())
	}
	return ch
}

func publish3(t testing.TB, c pahomqtt.Client, topic string, qos byte, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("paho3 publish %s: %v", topic, tok.Error())
	}
}

func expectMsg(t testing.TB, ch <-chan msg, topic, payload string) msg {
	t.Helper()
	select {
	case m := <-ch:
		if m.topic != topic || m.payload != payload {
			t.Fatalf("got %s %q, want %s %q", m.topic, m.payload, topic, payload)
		}
		return m
	case <-time.After(waitLong):
		t.Fatalf("no message on %s", topic)
	}
	return msg{}
}

// --- paho.golang (MQTT 5) ---

type paho5 struct {
	*paho.Client
	msgs    chan msg
	connack *paho.Connack
}

func dialPaho5(t testing.TB, addr, id string, configure ...func(*paho.Connect)) *paho5 {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &paho5{msgs: make(chan msg, 256)}
	p.Client = paho.NewClient(paho.ClientConfig{
		ClientID: id,
		Conn:     nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				p.msgs <- msg{pr.Packet.Topic, string(pr.Packet.Payload), pr.Packet.QoS}
				return true, nil
			},
		},
	})
	cp := &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}
	for _, f := range configure {
		f(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	ca, err := p.Connect(ctx, cp)
	if err != nil {
		_ = nc.Close()
		t.Fatalf("paho5 %s: connect: %v", id, err)
	}
	p.connack = ca
	t.Cleanup(func() { p.close(t) })
	return p
}

func (p *paho5) close(t testing.TB) {
	_ = p.Disconnect(&paho.Disconnect{ReasonCode: 0})
	select {
	case <-p.Done():
	case <-time.After(waitLong):
		t.Errorf("paho5 client did not shut down")
	}
}

func (p *paho5) subscribe(t testing.TB, qos byte, filters ...string) *paho.Suback {
	t.Helper()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: qos})
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	sa, err := p.Subscribe(ctx, s)
	if err != nil && sa == nil {
		t.Fatalf("paho5 subscribe %v: %v", filters, err)
	}
	return sa
}

func (p *paho5) publish(t testing.TB, topic string, qos byte, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := p.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)}); err != nil {
		t.Fatalf("paho5 publish %s: %v", topic, err)
	}
}

// --- raw MQTT over TCP, for what no well-behaved client sends ---

type rawClient struct {
	t       testing.TB
	nc      net.Conn
	br      *bufio.Reader
	version byte
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return &rawClient{t: t, nc: nc, br: bufio.NewReader(nc), version: 4}
}

func connectPacket(version byte, id string) packets.Packet {
	name := "MQTT"
	if version == 3 {
		name = "MQIsdp"
	}
	return packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte(name),
			Clean:            true,
			Keepalive:        30,
			ClientIdentifier: id,
		},
	}
}

// connect sends pk (a CONNECT) and returns the CONNACK.
func (r *rawClient) connect(pk packets.Packet) packets.Packet {
	r.t.Helper()
	r.version = pk.ProtocolVersion
	r.sendPacket(pk)
	ack, err := r.read(waitLong)
	if err != nil {
		r.t.Fatalf("raw: no CONNACK: %v", err)
	}
	if ack.FixedHeader.Type != packets.Connack {
		r.t.Fatalf("raw: got packet type %d, want CONNACK", ack.FixedHeader.Type)
	}
	return ack
}

// mustConnect connects and fails the test unless the CONNACK is a success.
func (r *rawClient) mustConnect(version byte, id string) {
	r.t.Helper()
	if ack := r.connect(connectPacket(version, id)); ack.ReasonCode != 0 {
		r.t.Fatalf("raw %s: CONNACK code %#x", id, ack.ReasonCode)
	}
}

func encode(t testing.TB, pk packets.Packet) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	default:
		t.Fatalf("encode: type %d not supported", pk.FixedHeader.Type)
	}
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return buf.Bytes()
}

func (r *rawClient) sendPacket(pk packets.Packet) {
	r.t.Helper()
	if pk.ProtocolVersion == 0 {
		pk.ProtocolVersion = r.version
	}
	r.send(encode(r.t, pk))
}

func (r *rawClient) send(b []byte) {
	r.t.Helper()
	_ = r.nc.SetWriteDeadline(time.Now().Add(waitLong))
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("raw write: %v", err)
	}
}

// read reads and decodes the next packet from the broker.
func (r *rawClient) read(timeout time.Duration) (packets.Packet, error) {
	_ = r.nc.SetReadDeadline(time.Now().Add(timeout))
	var pk packets.Packet
	hb, err := r.br.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(r.br)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(r.br, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = r.version
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	return pk, err
}

// expectClosed reads until the broker closes the connection; packets before that are returned.
func (r *rawClient) expectClosed() []packets.Packet {
	r.t.Helper()
	var got []packets.Packet
	deadline := time.Now().Add(waitLong)
	for {
		pk, err := r.read(time.Until(deadline))
		if err == nil {
			got = append(got, pk)
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			r.t.Fatalf("raw: connection still open after %s (read %d packets)", waitLong, len(got))
		}
		return got // EOF or reset: closed by the broker
	}
}

func (r *rawClient) subscribe(id uint16, filters ...string) packets.Packet {
	r.t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: id}
	for _, f := range filters {
		pk.Filters = append(pk.Filters, packets.Subscription{Filter: f, Qos: 1})
	}
	r.sendPacket(pk)
	ack, err := r.read(waitLong)
	if err != nil || ack.FixedHeader.Type != packets.Suback {
		r.t.Fatalf("raw: no SUBACK (type %d): %v", ack.FixedHeader.Type, err)
	}
	return ack
}

func requireBinary(t testing.TB, name string) string {
	t.Helper()
	for _, dir := range strings.Split(os.Getenv("PATH")+":/usr/bin", ":") {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	t.Skipf("%s not installed (Debian package mosquitto-clients)", name)
	return ""
}

func uniq(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
}

func contextTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), waitLong)
}

func zerologNop() zerolog.Logger { return zerolog.Nop() }

// waitValue polls get until it returns want. Counters for a refused connection are updated after
// mochi has closed it, so a client can see the close first.
func waitValue(t testing.TB, what string, want float64, get func() float64) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		got := get()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", what, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitRejected(t testing.TB, b *testBroker, reason string, want float64) {
	t.Helper()
	waitValue(t, "rejected_total{reason=\""+reason+"\"}", want, func() float64 { return rejected(t, b, reason) })
}
