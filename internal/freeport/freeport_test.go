package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestAddr: the address is free to listen on, and below the ephemeral range.
func TestAddr(t *testing.T) {
	for range 20 {
		addr, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if top := ephemeralStart(); top-lowest >= 1000 && (port < lowest || port >= top) {
			t.Fatalf("%s: port outside [%d, %d)", addr, lowest, top)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s is not free: %v", addr, err)
		}
		ln.Close()
	}
}
