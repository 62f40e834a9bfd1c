package wsframe

import (
	"io"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// keepScratch is the largest scratch buffer returned to the pool; a larger message's scratch is
// left to the collector, so one huge frame does not pin its size.
const keepScratch = 64 << 10

// Reader reads messages; one Reader may serve many connections at once.
type Reader struct {
	scratch sync.Pool // of *[]byte
}

// Read reads the next message of c, as websocket.Conn.ReadMessage does (the connection's read
// limit applies), and returns it in a buffer of its own.
func (r *Reader) Read(c *websocket.Conn) (messageType int, p []byte, err error) {
	typ, rd, err := c.NextReader()
	if err != nil {
		return typ, nil, err
	}
	bp, _ := r.scratch.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
		*bp = make([]byte, 0, 4096)
	}
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, rerr := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	if err == nil {
		p = make([]byte, len(b))
		copy(p, b)
	}
	if cap(b) <= keepScratch {
		*bp = b[:0]
		r.scratch.Put(bp)
	}
	return typ, p, err
}

// Deadline keeps a connection's read deadline a wait after the last sign of life, re-arming the
// connection's timer only once an eighth of the wait has passed since it last did: re-arming on
// every frame costs measurably in a burst of frames. The deadline is never more than the wait
// after the last sign of life, and never less than seven eighths of it. A Deadline belongs to
// the connection's read goroutine (pong and ping handlers run there too).
type Deadline struct {
	wait  time.Duration
	armed time.Time
}

// SilenceLimit is how long a session may hear nothing from its peer before it takes it for
// dead: two heartbeat intervals, as SPEC §8 promises, but never less than one interval and a
// write timeout (a short heartbeat must still leave a ping stuck in its write time to arrive).
// A Deadline may fire after seven eighths of its wait, so that floor is eight sevenths of it.
func SilenceLimit(heartbeat, writeTimeout time.Duration) time.Duration {
	return max(2*heartbeat, (heartbeat+writeTimeout)*8/7)
}

// NewDeadline arms c's read deadline wait after now.
func NewDeadline(c *websocket.Conn, wait time.Duration, now time.Time) *Deadline {
	c.SetReadDeadline(now.Add(wait))
	return &Deadline{wait: wait, armed: now}
}

// Alive records a sign of life (a frame, a ping or a pong) at now.
func (d *Deadline) Alive(c *websocket.Conn, now time.Time) {
	if now.Sub(d.armed) >= d.wait/8 {
		d.armed = now
		c.SetReadDeadline(now.Add(d.wait))
	}
}
