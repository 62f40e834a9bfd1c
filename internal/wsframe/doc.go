// Package wsframe reads whole websocket messages into buffers of exactly their size, and keeps
// a connection's read deadline moving without re-arming its timer per frame.
//
// gorilla's ReadMessage grows its buffer as it reads, so a 1.2 KB message costs about 3 KB of
// allocations; in a fan-out to a thousand simulated edges that garbage was most of what the
// process allocated, and the collections it caused were the slowest trials. A Reader reads
// into a pooled scratch buffer and copies the message out once, at its size. The result may be
// kept (decoded messages alias it); the scratch never leaves the package.
//
// A Deadline is a read deadline a wait after the last sign of life (frame, ping or pong). The
// hub and the edge use it in their read loops.
package wsframe
