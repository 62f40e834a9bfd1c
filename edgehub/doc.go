// Package edgehub keeps an edge node connected to the cloud hub: it dials with jittered
// exponential backoff, says where its stored view is complete (Hello with the store's cursor),
// hands what arrives to the edge store and acknowledges it only after the store has committed,
// and drains the durable outbox upward in order, within a window, deleting reports only once the
// cloud has acknowledged them.
//
// Concurrency: Run owns the connection loop. Each session has a reader (the calling goroutine)
// and a writer goroutine; the writer sends acks, reports, pings and renewal requests. Store
// commits signal the writer through an atomic and a wake channel; they never block on the
// network. One exception: a commit reported while the reader is still inside Store.Apply (a
// store that commits at once, like the simulator's) is acknowledged by the reader itself when
// Apply returns, unless the writer is busy, which saves a goroutine wake-up per frame. Data
// frames are written under one mutex (wmu), as gorilla allows one writer at a time.
//
// Dead peers: the writer pings every heartbeat (the interval the hub's Welcome names) and the
// reader's deadline is two heartbeats (at least one and the write timeout: wsframe.SilenceLimit),
// renewed by every frame or pong.
//
// The client never makes the edge unready: the link's state is reported (State, metrics) for
// operators, and the edge keeps serving from its store while disconnected.
package edgehub
