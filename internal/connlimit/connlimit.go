package connlimit

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// refusalBody is what a connection past the cap is told.
const refusalBody = "too many open connections\n"

// refusal is the whole answer to a connection past the cap.
var refusal = []byte("HTTP/1.1 503 Service Unavailable\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Retry-After: 1\r\n" +
	"Connection: close\r\n" +
	"Content-Length: " + strconv.Itoa(len(refusalBody)) + "\r\n" +
	"\r\n" + refusalBody)

const (
	// readRequest bounds the wait for the refused client's request: answered before it has
	// sent it, an HTTP client takes the answer for a stray one and fails with a less clear error.
	readRequest = 200 * time.Millisecond
	// maxRequest is as much of a refused request as is read before answering.
	maxRequest = 16 << 10
	// linger bounds the drain after the answer: closing a socket with the client's unread bytes
	// in it sends a reset, and the client could lose the answer.
	linger = 500 * time.Millisecond
	// maxRefusing bounds the goroutines answering refused connections; past it a refused
	// connection is closed at once.
	maxRefusing = 64
)

// Listener accepts at most max connections at once; see the package comment.
type Listener struct {
	net.Listener
	max     int
	refused func() // called once per refused connection; may be nil
	// refusing holds a slot per refused connection being answered.
	refusing chan struct{}
	mu       sync.Mutex
	open     int
}

// New wraps ln. refused, if not nil, is called for every connection refused past max (a
// metric's Inc).
func New(ln net.Listener, max int, refused func()) *Listener {
	return &Listener{Listener: ln, max: max, refused: refused, refusing: make(chan struct{}, maxRefusing)}
}

// Open is the number of accepted connections not yet closed.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Accept returns the next connection under the cap; those past it are answered and closed
// here and never returned.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		ok := l.open < l.max
		if ok {
			l.open++
		}
		l.mu.Unlock()
		if ok {
			return &conn{Conn: c, l: l}, nil
		}
		if l.refused != nil {
			l.refused()
		}
		l.refuse(c)
	}
}

// refuse answers c with 503 and closes it, on a goroutine of its own while fewer than
// maxRefusing are, at once otherwise.
func (l *Listener) refuse(c net.Conn) {
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(readRequest))
		// The request's header, as net/http reads it; what it is, or whether it came
		// whole, does not matter.
		http.ReadRequest(bufio.NewReader(io.LimitReader(c, maxRequest)))
		c.SetWriteDeadline(time.Now().Add(readRequest))
		if _, err := c.Write(refusal); err != nil {
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(linger))
		io.Copy(io.Discard, io.LimitReader(c, maxRequest))
	}()
}

func (l *Listener) release() {
	l.mu.Lock()
	l.open--
	l.mu.Unlock()
}

// conn gives its slot back once, however often it is closed.
type conn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.l.release)
	return err
}

// CloseWrite passes the half close through: net/http closes a connection gracefully (its
// answer first, then the rest of the client's body drained) only on a connection that has it,
// so without it a client sending too large a body got a reset instead of its 413.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
