// Package index is tether-cloud's in-memory view of the store: every served object, decoded
// once, with the fields routing needs (the node it runs on, the objects it references, its
// labels) indexed in go-memdb, so that "which objects does node X see" and "which nodes use
// ConfigMap Y" are index lookups rather than scans.
//
// The index is fed by one goroutine (Run) that lists the backend and then watches it. Each change
// is applied in its own memdb transaction and then handed, with an immutable snapshot of the
// state right after it, to every subscriber in revision order. Subscribers run on that goroutine
// and must not block: the hub marks sessions, the API watch cache appends to a ring.
//
// At start Run also replays the retained history before the list's revision to subscribers as
// Historical updates (not applied: the list already contains their effect), so that a cloud
// restart does not forget what changed recently and nodes can still catch up incrementally.
//
// Objects are immutable once indexed; their Raw bytes (the JSON served to clients and edges,
// with metadata.resourceVersion set) are shared by every reader and must not be modified. The one
// exception is an EndpointSlice's memo of filtered forms (Slice.Form), filled on demand under its
// own lock.
//
// For node groups (SPEC §7, topology.go) the index also keeps Nodes by their belonging-to label,
// EndpointSlices by their Service and by the nodes of their endpoints, and Services by their
// service-topology annotation.
package index
