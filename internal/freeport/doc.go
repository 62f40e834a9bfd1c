// Package freeport finds loopback addresses for the processes that tests, benchmarks and the
// simulator start on fixed ports and may restart on the same ones.
//
// A port the kernel hands out for ":0" comes from its ephemeral range, the same range it takes
// the local ports of outgoing connections from; a process stopped and restarted on such a port
// can find it taken by somebody's outgoing connection in between ("address already in use", seen
// in the end-to-end tests). Addr picks ports below that range instead, which only a listener can
// take.
package freeport
