package wsframe

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// pair connects a client to a server that writes msgs and then closes normally.
func pair(t *testing.T, msgs [][]byte) *websocket.Conn {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for _, m := range msgs {
			if err := c.WriteMessage(websocket.BinaryMessage, m); err != nil {
				return
			}
		}
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		c.ReadMessage() // until the client goes
	}))
	t.Cleanup(srv.Close)
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestReadGivesEachMessageItsOwnExactBuffer(t *testing.T) {
	sizes := []int{0, 1, 1200, 4096, 4097, 70_000, 3, 200_000, 10}
	var msgs [][]byte
	for i, n := range sizes {
		msgs = append(msgs, bytes.Repeat([]byte{byte('a' + i)}, n))
	}
	c := pair(t, msgs)
	var r Reader
	var got [][]byte
	for range msgs {
		typ, p, err := r.Read(c)
		if err != nil {
			t.Fatal(err)
		}
		if typ != websocket.BinaryMessage {
			t.Fatalf("type %d", typ)
		}
		if len(p) != cap(p) {
			t.Fatalf("a %d-byte message came in a buffer of %d", len(p), cap(p))
		}
		got = append(got, p)
	}
	// Read after read reuses the scratch; what was returned before must be untouched.
	for i, p := range got {
		if !bytes.Equal(p, msgs[i]) {
			t.Fatalf("message %d (%d bytes) changed or was misread: got %d bytes", i, len(msgs[i]), len(p))
		}
	}
	var ce *websocket.CloseError
	if _, _, err := r.Read(c); !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
		t.Fatalf("after the last message: %v, want the normal close", err)
	}
}

func TestReadKeepsTheReadLimit(t *testing.T) {
	c := pair(t, [][]byte{make([]byte, 100), make([]byte, 5000)})
	c.SetReadLimit(1000)
	var r Reader
	if _, p, err := r.Read(c); err != nil || len(p) != 100 {
		t.Fatalf("first message: %d bytes, %v", len(p), err)
	}
	if _, p, err := r.Read(c); !errors.Is(err, websocket.ErrReadLimit) || p != nil {
		t.Fatalf("oversize message: %d bytes, %v; want ErrReadLimit and nothing", len(p), err)
	}
}

// TestDeadlineFollowsSignsOfLife: frames arriving more often than the wait keep the connection
// readable well past the first deadline; once they stop, the read fails within the wait after
// the last one.
func TestDeadlineFollowsSignsOfLife(t *testing.T) {
	const wait = 300 * time.Millisecond
	var msgs [][]byte
	for range 12 {
		msgs = append(msgs, []byte("x"))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for _, m := range msgs { // 12 frames 100 ms apart: 1.2 s, four waits
			time.Sleep(wait / 3)
			if c.WriteMessage(websocket.BinaryMessage, m) != nil {
				return
			}
		}
		c.ReadMessage() // then silence, until the client goes
	}))
	t.Cleanup(srv.Close)
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var r Reader
	d := NewDeadline(c, wait, time.Now())
	var last time.Time
	for i := range msgs {
		if _, _, err := r.Read(c); err != nil {
			t.Fatalf("frame %d of a connection alive every %s: %v", i, wait/3, err)
		}
		last = time.Now()
		d.Alive(c, last)
	}
	if _, _, err := r.Read(c); err == nil {
		t.Fatal("a read on a silent connection succeeded")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("a read on a silent connection: %v, want a timeout", err)
	}
	if after := time.Since(last); after < wait*7/8-20*time.Millisecond || after > wait+150*time.Millisecond {
		t.Fatalf("the silent connection timed out %s after its last frame, want about %s", after, wait)
	}
}

// TestSilenceLimit: with the defaults (15 s heartbeat, 10 s write timeout) a dead peer is
// taken for dead after 30 s, the two intervals of SPEC §8 (it was 40 s); with a heartbeat
// short beside the write timeout, a Deadline firing at its earliest (seven eighths) still
// leaves one interval and the write timeout.
func TestSilenceLimit(t *testing.T) {
	for _, c := range []struct{ hb, wt time.Duration }{
		{15 * time.Second, 10 * time.Second},
		{time.Second, 3 * time.Second},
		{10 * time.Second, 10 * time.Second},
	} {
		got := SilenceLimit(c.hb, c.wt)
		if got > 2*c.hb && got*7/8 < c.hb+c.wt-time.Microsecond {
			t.Errorf("SilenceLimit(%s, %s) = %s: at seven eighths, %s, under one interval and the write timeout", c.hb, c.wt, got, got*7/8)
		}
		if got < 2*c.hb {
			t.Errorf("SilenceLimit(%s, %s) = %s, under two intervals", c.hb, c.wt, got)
		}
	}
	if got := SilenceLimit(15*time.Second, 10*time.Second); got != 30*time.Second {
		t.Errorf("with the defaults: %s, want 30s", got)
	}
}
