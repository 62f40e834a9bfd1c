// Command mochiserver is the benchmark's baseline: bare mochi-mqtt (its own TCP listener, every
// client allowed, default capabilities, nothing else) in a process of its own, as tether-edge
// is, so both are driven by the same clients under the same conditions. Publishes on twin/update
// topics are echoed on their result topic (see echo). It serves until SIGINT or SIGTERM.
package main
