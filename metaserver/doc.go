// Package metaserver is the edge's Kubernetes-style API: kubeapi served over the edge store, so
// kubectl and client-go work on the edge host with or without the cloud.
//
// Reads come from the store and never wait on the cloud: from an in-memory view of it (an
// immutable radix tree of the stored records, replaced after every commit from the store's
// change feed), so that a list neither reads bbolt nor decodes a record. Versions are the edge
// store's local revisions (see edgestore), so list and watch form one consistent sequence: a
// watch from a version the edge still remembers gets exactly the changes after it, and one it
// has forgotten gets 410 Gone. A store that has never completed a sync answers lists with 503,
// never with an empty list, which would tell a client to delete everything it has.
//
// Writes are forwarded to the cloud over the hub session (a Forwarder, which edgehub.Client
// implements) and the cloud decides what the node may change. While the edge is not connected a
// write fails at once with 503 and says why: nothing is queued. Versions are translated both
// ways (see write.go), and the cloud's answer is applied to the edge store before it is
// returned, so a client reads its own write. The whole-status update of a Node or Device, whose
// status the cloud changes without sending it down, goes up as a patch of what the client
// changed in the edge's copy, or as it is when there is no copy to compare with
// (Storage.statusChanges).
//
// Lists and watches follow Kubernetes' resourceVersion rules over the local versions: "" and
// "0" read the current state, N waits briefly for the store to reach N (504 if it does not),
// Exact is served only at the current version (410 otherwise), and a continue token from a
// version the watch cache no longer covers is a 410, like a compacted one.
//
// Concurrency: Storage is safe for concurrent use; the watch cache is fed on the edge store's
// writer goroutine. A forwarded write holds its request's goroutine until the cloud answers or
// the forward timeout passes.
package metaserver
