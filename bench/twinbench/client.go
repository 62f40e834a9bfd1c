package twinbench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// client is a minimal MQTT 3.1.1 device client, the same for the baseline and for tether-edge,
// so what differs between the two measurements is the server. It publishes at QoS 1,
// subscribes at QoS 0 (answers need no PUBACK), and reports every answer to a callback with the
// time since its request was sent. paho would spend more CPU per message than the broker it
// measures on a 2-core machine; this client spends almost none.
type client struct {
	nc net.Conn
	br *bufio.Reader

	wmu sync.Mutex // guards w and pid
	w   *bufio.Writer
	pid uint16

	mu   sync.Mutex           // guards sent
	sent map[uint64]time.Time // request key (event number or packet id) → when it was written
}

func dialClient(addr, id string, keepalive time.Duration) (*client, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := &client{nc: nc, br: bufio.NewReaderSize(nc, 4096), w: bufio.NewWriterSize(nc, 4096), sent: map[uint64]time.Time{}}
	var vh []byte
	vh = appendString(vh, "MQTT")
	vh = append(vh, 4, 0x02) // level 4 (3.1.1), clean session
	ka := uint16(keepalive / time.Second)
	vh = append(vh, byte(ka>>8), byte(ka))
	vh = appendString(vh, id)
	c.writePacket(0x10, vh)
	if err := c.w.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, body, err := c.read()
	if err != nil || typ != 0x20 || len(body) < 2 || body[1] != 0 {
		nc.Close()
		return nil, fmt.Errorf("connect %s: CONNACK %#x % x %v", id, typ, body, err)
	}
	return c, nil
}

func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

// writePacket appends one packet to the buffer; the caller holds wmu or owns c alone.
func (c *client) writePacket(header byte, body []byte) {
	c.w.WriteByte(header)
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		c.w.WriteByte(b)
		if n == 0 {
			break
		}
	}
	c.w.Write(body)
}

func (c *client) read() (byte, []byte, error) {
	h, err := c.br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		b, err := c.br.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		if mul *= 128; i == 3 {
			return 0, nil, errors.New("bad remaining length")
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return 0, nil, err
	}
	return h, body, nil
}

// subscribe subscribes at QoS 0 and waits for the SUBACK.
func (c *client) subscribe(filters ...string) error {
	body := []byte{0, 1}
	for _, f := range filters {
		body = appendString(body, f)
		body = append(body, 0)
	}
	c.writePacket(0x82, body)
	if err := c.w.Flush(); err != nil {
		return err
	}
	typ, ack, err := c.read()
	if err != nil || typ != 0x90 {
		return fmt.Errorf("SUBACK %#x % x %v", typ, ack, err)
	}
	c.nc.SetReadDeadline(time.Time{})
	return nil
}

// publish writes a QoS 1 PUBLISH and records its send time under key. flush=false leaves it in
// the buffer for a later flush (batching a burst).
func (c *client) publish(topic string, payload []byte, key uint64, usePID bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.pid++
	if c.pid == 0 {
		c.pid = 1
	}
	if usePID {
		key = uint64(c.pid)
	}
	body := make([]byte, 0, 2+len(topic)+2+len(payload))
	body = appendString(body, topic)
	body = append(body, byte(c.pid>>8), byte(c.pid))
	body = append(body, payload...)
	c.mu.Lock()
	c.sent[key] = time.Now()
	c.mu.Unlock()
	c.writePacket(0x32, body)
	return c.w.Flush()
}

// answered takes the send time of key.
func (c *client) answered(key uint64) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.sent[key]
	delete(c.sent, key)
	return t, ok
}

// readLoop reads until the connection ends. onAck gets PUBACKs (packet id), onMsg PUBLISHes.
func (c *client) readLoop(onAck func(pid uint16), onMsg func(topic string, payload []byte)) error {
	for {
		typ, body, err := c.read()
		if err != nil {
			return err
		}
		switch typ & 0xf0 {
		case 0x40:
			if len(body) >= 2 && onAck != nil {
				onAck(uint16(body[0])<<8 | uint16(body[1]))
			}
		case 0x30:
			if len(body) < 2 {
				continue
			}
			tl := int(body[0])<<8 | int(body[1])
			if 2+tl > len(body) {
				continue
			}
			topic := string(body[2 : 2+tl])
			payload := body[2+tl:]
			if typ&0x06 != 0 { // QoS > 0: skip the packet id (not expected: we subscribe at 0)
				payload = payload[2:]
			}
			if onMsg != nil {
				onMsg(topic, payload)
			}
		}
	}
}

func (c *client) close() { c.nc.Close() }

// eventNumber reads the decimal event_id of an answer without decoding the JSON, and whether
// the answer is an error result (it has a code).
func eventNumber(payload []byte) (n uint64, isErr bool, ok bool) {
	const key = `"event_id":"`
	i := bytes.Index(payload, []byte(key))
	if i < 0 {
		return 0, false, false
	}
	rest := payload[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return 0, false, false
	}
	v, err := strconv.ParseUint(string(rest[:j]), 10, 64)
	if err != nil {
		return 0, false, false
	}
	return v, bytes.Contains(payload, []byte(`"code":`)), true
}
