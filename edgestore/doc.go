// Package edgestore is the edge agent's bbolt store: the node's slice of the cloud's objects, the
// cursor through which that slice is complete, and the durable outbox of reports going up.
//
// One writer goroutine owns every write transaction. Data messages from the hub, outbox appends
// and outbox acknowledgements are queued to it and committed together, many per fsync; each
// caller is told after the commit, which is when the hub is acknowledged (never before).
//
// Per object, the cloud revision that wrote it is kept, and an older message never overwrites a
// newer one (except inside a reset, which is authoritative). The cursor moves only on Progress
// and ResetEnd, in the same transaction as the objects before them, so a crash leaves a cursor
// that is never ahead of the stored view.
//
// The edge also keeps its own revision counter: every change to the view gets the next local
// revision, and objects are stored with metadata.resourceVersion set to it, so the metaserver
// serves one consistent sequence of versions to kubectl and informers whatever order the cloud's
// revisions arrive in. The cloud's resourceVersion is kept beside it (CloudRV). An object the hub
// sends again unchanged (same cloud version, same bytes: re-sent with a Pod that references it,
// or named by a reset) is not a change: it keeps its local revision and watchers hear nothing.
//
// The edge writes one thing into the cloud's objects itself: the status it knows first-hand (a
// Device's twins and state; see SetStatus). Such a record keeps the cloud version it was made
// from, gets a new local revision, and is marked (Meta.EdgeStatus) so that the same cloud
// version sent again leaves it as it is; a newer one replaces it as usual.
//
// Subscribers (the metaserver's watch cache, the twin engine) are called on the writer goroutine
// after each commit with what changed, in order, and must not block.
//
// Device twins (twins.go): the twin engine keeps each device's state here as opaque bytes, and
// WriteTwin stores a device's state and the reports describing it in one transaction. A report
// replaces the same device's previous report of its kind in place while nobody has read it for
// sending (ReadOutbox marks what it returns under a lock the replacing transaction holds until it
// commits), so the outbox keeps one entry per device and kind with the latest values, in the
// position of the first unsent change. Concurrent WriteTwin calls are grouped into one
// operation, lingering up to a millisecond while updates keep coming, so a commit's fixed cost
// is shared by many devices.
package edgestore
