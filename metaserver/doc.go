// Package metaserver is the edge's Kubernetes-style API: kubeapi served over the edge store, so
// kubectl and client-go work on the edge host with or without the cloud.
//
// Reads come from the store and never wait on the cloud. Versions are the edge store's local
// revisions (see edgestore), so list and watch form one consistent sequence: a watch from a
// version the edge still remembers gets exactly the changes after it, and one it has forgotten
// gets 410 Gone. A store that has never completed a sync answers lists with 503, never with an
// empty list, which would tell a client to delete everything it has.
//
// Writes are refused with 405 for now; forwarding them to the cloud is a later step.
//
// Concurrency: Storage is safe for concurrent use; the watch cache is fed on the edge store's
// writer goroutine.
package metaserver
