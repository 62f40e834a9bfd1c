package hubbench

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tetherhub/tether/pki"
)

// The baseline is a bare gorilla websocket broadcast server, written the way gorilla's chat
// example is (a read loop in the handler, a writer goroutine per client fed by a buffered
// channel, default buffer sizes), over TLS like the hub. It runs in a process of its own so its
// memory can be measured the same way as tether-cloud's.

// ServeBaseline runs the baseline server: websockets on wsAddr, control on ctlAddr. It returns
// when ctx ends.
func ServeBaseline(ctx context.Context, wsAddr, ctlAddr string) error {
	dir, err := os.MkdirTemp("", "baseline-ca")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ca, err := pki.LoadOrCreateCA(dir, time.Now())
	if err != nil {
		return err
	}
	cert, err := ca.IssueServer([]string{"127.0.0.1"}, time.Hour, time.Now())
	if err != nil {
		return err
	}
	var mu sync.Mutex
	clients := map[*websocket.Conn]chan []byte{}
	var up websocket.Upgrader
	up.CheckOrigin = func(*http.Request) bool { return true }
	wsSrv := &http.Server{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			send := make(chan []byte, 16)
			mu.Lock()
			clients[c] = send
			mu.Unlock()
			go func() {
				for msg := range send {
					c.SetWriteDeadline(time.Now().Add(10 * time.Second))
					if c.WriteMessage(websocket.BinaryMessage, msg) != nil {
						return
					}
				}
			}()
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					break
				}
			}
			mu.Lock()
			delete(clients, c)
			mu.Unlock()
			close(send)
			c.Close()
		})}
	ctl := http.NewServeMux()
	ctl.HandleFunc("/broadcast", func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		trial, _ := strconv.ParseUint(r.URL.Query().Get("trial"), 10, 64)
		msg := make([]byte, max(size, 8))
		binary.BigEndian.PutUint64(msg, trial)
		mu.Lock()
		for _, send := range clients {
			select {
			case send <- msg:
			default: // a full client misses this one, as in the chat example
			}
		}
		mu.Unlock()
	})
	ctl.HandleFunc("/mem", func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		mu.Lock()
		n := len(clients)
		mu.Unlock()
		json.NewEncoder(w).Encode(map[string]float64{"live": float64(ms.HeapAlloc + ms.StackInuse), "rss": rss(), "conns": float64(n)})
	})
	wsLn, err := net.Listen("tcp", wsAddr)
	if err != nil {
		return err
	}
	ctlLn, err := net.Listen("tcp", ctlAddr)
	if err != nil {
		return err
	}
	go wsSrv.ServeTLS(wsLn, "", "")
	ctlSrv := &http.Server{Handler: ctl}
	go ctlSrv.Serve(ctlLn)
	<-ctx.Done()
	wsSrv.Close()
	ctlSrv.Close()
	return nil
}

// rss reads this process's resident set size from /proc.
func rss() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, res int64
	fmt.Sscan(string(b), &size, &res)
	return float64(res * int64(os.Getpagesize()))
}

// baselineClients connects n bare gorilla clients and records, per trial, when each received it.
type baselineClients struct {
	ack   bool // answer every message with its first 8 bytes, as an edge acknowledges
	conns []*websocket.Conn
	mu    sync.Mutex
	recv  map[uint64][]time.Time
}

func dialBaseline(ctx context.Context, addr string, n int, ack bool) (*baselineClients, error) {
	bc := &baselineClients{ack: ack, recv: map[uint64][]time.Time{}}
	d := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, HandshakeTimeout: 10 * time.Second}
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, _, err := d.DialContext(ctx, "wss://"+addr+"/", nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			bc.conns = append(bc.conns, c)
			go bc.read(c)
		}()
	}
	wg.Wait()
	return bc, firstErr
}

func (bc *baselineClients) read(c *websocket.Conn) {
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		now := time.Now()
		if len(msg) >= 8 {
			trial := binary.BigEndian.Uint64(msg)
			bc.mu.Lock()
			bc.recv[trial] = append(bc.recv[trial], now)
			bc.mu.Unlock()
			if bc.ack && c.WriteMessage(websocket.BinaryMessage, msg[:8]) != nil {
				return
			}
		}
	}
}

func (bc *baselineClients) received(trial uint64) []time.Time {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	return append([]time.Time(nil), bc.recv[trial]...)
}

func (bc *baselineClients) close() {
	for _, c := range bc.conns {
		c.Close()
	}
}
