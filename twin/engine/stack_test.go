package engine

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/broker"
	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/resource"
)

// gatedStore holds every WriteTwin of a device message until the gate opens, so a test can look
// at the connections while their handlers wait for the commit.
type gatedStore struct {
	*edgestore.Store
	waiting atomic.Int64
	mu      sync.Mutex
	gate    chan struct{}
}

func (g *gatedStore) WriteTwin(ctx context.Context, id string, state []byte, reports ...edgestore.Entry) (int, error) {
	if len(reports) > 0 { // a device's change, not the engine's own bookkeeping
		g.mu.Lock()
		gate := g.gate
		g.mu.Unlock()
		g.waiting.Add(1)
		<-gate
		g.waiting.Add(-1)
	}
	return g.Store.WriteTwin(ctx, id, state, reports...)
}

func (g *gatedStore) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.gate)
}

func (g *gatedStore) reopen() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate = make(chan struct{})
}

func stackInuse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.StackInuse
}

// TestHandlerStack checks the memory a connection costs while its twin/update waits for the
// commit, the state of every connection of a loaded node: its two goroutines' stacks, 32 KiB
// for mochi's reader (whose own frames down to the handler are about 19 KiB) and a few KiB for
// its writer. The handler does its whole work on the reader's goroutine, including the result's
// publish through mochi, and must stay inside those 32 KiB: the next size is 64 KiB for every
// connection. The stacks are measured on the second update of each device, so they carry the
// growth of a whole first update, publish included.
func TestHandlerStack(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("measures stacks; the race detector changes them")
	}
	const n = 200
	dir := t.TempDir()
	st, err := edgestore.Open(edgestore.DefaultConfig(filepath.Join(dir, "edge.db")), resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	gs := &gatedStore{Store: st, gate: make(chan struct{})}
	bcfg := broker.DefaultConfig()
	bcfg.Listen = "127.0.0.1:0"
	b, err := broker.New(bcfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(DefaultConfig(node), Deps{Store: gs, Broker: b, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); b.Run(ctx) }()
	go func() { defer wg.Done(); e.Run(ctx) }()
	t.Cleanup(func() {
		gs.close()
		cancel()
		wg.Wait()
		st.Close()
	})
	<-b.Ready()
	<-e.Ready()
	r := &rig{t: t, store: st, engine: e}
	r.model("m", "temp", "INT")
	for i := range n {
		r.device(fmt.Sprint("d", i), "m")
	}
	for i := range n {
		r.waitDevice(fmt.Sprint("d", i))
	}

	base := stackInuse()
	cs := make([]*rawDevice, n)
	for i := range cs {
		cs[i] = dialRawDevice(t, b.Addr().String(), fmt.Sprint("d", i))
	}
	update := func(v int) {
		for _, c := range cs {
			c.publishUpdate(v)
		}
		deadline := time.Now().Add(waitFor)
		for gs.waiting.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d updates reached the store", gs.waiting.Load(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	update(1)
	gs.close()
	for _, c := range cs {
		c.awaitResult(t)
	}
	gs.reopen()
	update(2)
	perConn := float64(stackInuse()-base) / n
	t.Logf("stacks: %.1f KiB per connection waiting for its commit", perConn/1024)
	if perConn > 48<<10 {
		t.Errorf("stacks take %.1f KiB per waiting connection, want at most 48 KiB (32 KiB reader, writer)", perConn/1024)
	}
}

// rawDevice is a device client without goroutines of its own, so the stacks the test measures
// are the broker's: it writes MQTT 3.1.1 packets and reads only when told to.
type rawDevice struct {
	nc    net.Conn
	br    *bufio.Reader
	topic string
}

func dialRawDevice(t *testing.T, addr, name string) *rawDevice {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	d := &rawDevice{nc: nc, br: bufio.NewReader(nc), topic: "$hw/events/device/" + ns + "/" + name + "/twin/update"}
	d.write(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: name}})
	d.expect(t, packets.Connack)
	d.write(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: d.topic + "/result"}}})
	d.expect(t, packets.Suback)
	return d
}

func (d *rawDevice) write(t *testing.T, pk packets.Packet) {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	}
	if err == nil {
		_, err = d.nc.Write(buf.Bytes())
	}
	if err != nil {
		t.Fatal(err)
	}
}

// expect reads packets until one of type typ.
func (d *rawDevice) expect(t *testing.T, typ byte) []byte {
	t.Helper()
	d.nc.SetReadDeadline(time.Now().Add(waitFor))
	for {
		h, err := d.br.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		n, _, err := packets.DecodeLength(d.br)
		if err != nil {
			t.Fatal(err)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(d.br, body); err != nil {
			t.Fatal(err)
		}
		if h>>4 == typ {
			return body
		}
	}
}

func (d *rawDevice) publishUpdate(v int) {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(v), TopicName: d.topic,
		Payload: fmt.Appendf(nil, `{"event_id":"%d","timestamp":1,"twin":{"temp":{"actual":{"value":"%d"}}}}`, v, v)}
	var buf bytes.Buffer
	pk.PublishEncode(&buf)
	d.nc.Write(buf.Bytes())
}

func (d *rawDevice) awaitResult(t *testing.T) {
	t.Helper()
	d.expect(t, packets.Publish)
}
