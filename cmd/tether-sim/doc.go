// Command tether-sim simulates edge nodes and their devices against a real tether-cloud and
// reports what it measured; `tether-sim mapper` runs one simulated device mapper against a real
// tether-edge.
package main
