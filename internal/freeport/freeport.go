package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
)

// lowest is the first port Addr considers: clear of the well-known and registered ports that
// services on a development machine tend to use.
const lowest = 10000

// Addr returns a 127.0.0.1 address nobody listens on now, its port below the kernel's ephemeral
// range when there is room there, else one the kernel picks.
func Addr() (string, error) {
	if top := ephemeralStart(); top-lowest >= 1000 {
		for range 100 {
			port := lowest + rand.IntN(top-lowest)
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				continue // in use: try another
			}
			addr := ln.Addr().String()
			ln.Close()
			return addr, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// ephemeralStart is the first port of the kernel's ephemeral range (Linux), or 32768, the
// usual one, when it cannot be read.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo <= 0 {
		return 32768
	}
	return lo
}
