package connlimit

import (
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

func TestRefusesPastTheCap(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	ln := New(raw, 2, func() { refused.Add(1) })
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()

	get := func() (*http.Response, string, error) {
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get("http://" + addr)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}
	var stalled []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		stalled = append(stalled, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for ln.Open() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// Several refusals in a row: each is answered, none waits for a slot.
	for i := range 5 {
		resp, body, err := get()
		if err != nil {
			t.Fatalf("request %d past the cap: %v (want a 503 answer, not an error)", i, err)
		}
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || body != refusalBody {
			t.Fatalf("request %d past the cap: %d Retry-After=%q %q", i, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
	if got := refused.Load(); got != 5 {
		t.Fatalf("refused counted %d times, want 5", got)
	}
	stalled[0].Close()
	// The server notices the close when its read of the stalled connection ends.
	for {
		resp, body, err := get()
		if err == nil && resp.StatusCode == http.StatusOK && body == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a stalled connection closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := ln.Open(); n < 1 || n > 2 {
		t.Fatalf("open connections %d, want the one still stalled (and maybe the last request's)", n)
	}
}

// A connection closed twice gives its slot back once.
func TestCloseTwiceReleasesOnce(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := New(raw, 1, nil)
	defer ln.Close()
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	a.Close()
	if n := ln.Open(); n != 0 {
		t.Fatalf("open %d after a double close, want 0", n)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if n := ln.Open(); n != 1 {
		t.Fatalf("open %d, want 1", n)
	}
}

// TestHalfClosePassedThrough: an accepted connection keeps its half close (net/http answers a
// too large body gracefully, with its 413, only on a connection that has one; without, the
// client could get a reset instead), and it reaches the socket: the client reads EOF while it
// can still write.
func TestHalfClosePassedThrough(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := New(raw, 1, nil)
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	cw, ok := server.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("the accepted connection has no CloseWrite")
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read after the server's half close: %d %v, want EOF", n, err)
	}
	if _, err := client.Write([]byte("still open")); err != nil {
		t.Fatalf("client write after the half close: %v", err)
	}
}
