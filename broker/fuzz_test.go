package broker

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// FuzzBrokerConn sends arbitrary bytes after a valid CONNECT (MQTT 5 or 3.1.1) to one running
// broker over a real TCP connection, then half-closes. Whatever the bytes, the broker must end
// that connection and go on serving: a new client connects and a message reaches a subscriber
// that has been connected throughout. Seeds live in testdata/fuzz/FuzzBrokerConn.
func FuzzBrokerConn(f *testing.F) {
	b := startBroker(f, func(c *Config) { c.MaxPacketSize = 64 << 10 })
	watcher := dialPaho3(f, b.addr, "fuzz-watcher")
	// A topic the fuzzer cannot guess, so fuzzed publishes cannot crowd out the probes.
	probeTopic := uniq("probe")
	probes := subscribe3(f, watcher, probeTopic, 0)
	var probeN atomic.Int64

	f.Add(true, truncatedSubscribe)

	f.Fuzz(func(t *testing.T, v5 bool, data []byte) {
		if len(data) > 1<<16 {
			data = data[:1<<16]
		}
		version := byte(4)
		if v5 {
			version = 5
		}
		r := dialRaw(t, b.addr)
		r.mustConnect(version, "fuzz")
		_ = r.nc.SetWriteDeadline(time.Now().Add(waitLong))
		_, _ = r.nc.Write(data) // the broker may close before it has read everything
		_ = r.nc.(*net.TCPConn).CloseWrite()
		drainUntilClosed(t, r)

		p := dialRaw(t, b.addr)
		p.mustConnect(4, "fuzz-probe")
		payload := fmt.Sprintf("probe %d", probeN.Add(1))
		p.sendPacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: probeTopic, Payload: []byte(payload)})
		deadline := time.After(waitLong)
		for {
			select {
			case m := <-probes:
				if m.payload == payload {
					_ = p.nc.Close()
					return
				}
			case <-deadline:
				t.Fatalf("broker stopped delivering after input %x", data)
			}
		}
	})
}

// drainUntilClosed reads whatever the broker answers until it closes the connection.
func drainUntilClosed(t *testing.T, r *rawClient) {
	t.Helper()
	buf := make([]byte, 4096)
	_ = r.nc.SetReadDeadline(time.Now().Add(waitLong))
	for {
		_, err := r.nc.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("broker kept a half-closed connection open for %s", waitLong)
		}
		return
	}
}
