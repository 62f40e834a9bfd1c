package wsframe

import (
	"io"
	"sync"

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
