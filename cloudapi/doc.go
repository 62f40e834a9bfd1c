// Package cloudapi is the cloud's side of the Kubernetes-style API: the kubeapi.Storage over the
// cloud store and index (Objects), join tokens (Tokens, POST /tether/v1/tokens), the
// registration of joining nodes (Nodes), and the writes edges relay from their metaserver
// (Forwarder: a node may change the status of its own Node, Pods and Devices and delete its own
// Pods; the rest is 403).
//
// Writes go straight to the store with optimistic concurrency on the stored revision; a write
// answers once the index has applied it, so a client reads its own writes. Reads are served from
// the index at or after the store's revision at the time of the request. The watch cache is fed
// by the index's subscriber callback, in revision order.
//
// Objects keep every field they were given; metadata the server owns (uid, creationTimestamp,
// generation, resourceVersion) is set here, and status is written only through the status
// subresource for the kinds that have one. As in Kubernetes, a Secret's stringData is folded
// into its data and not stored, and a write whose result is the stored object writes nothing
// (no new version, no event). A Device whose desired values its DeviceModel's types refuse is
// refused (422) when its spec is written, since its edge would refuse its whole desired state.
//
// Reports from edges (NodeStatus, DeviceReports, Uploads) are applied one at a time per node by
// the hub. Replicas on one etcd fence each other's (fence.go): a session's epoch is the revision
// of a write (ReportEpochs), a report writes it into the object it changes
// (resource.AnnotationReportEpoch), and a report from an older epoch than the object holds is
// dropped.
//
// Namespaces follow Kubernetes' lifecycle: a namespaced object is created only in a Namespace
// that exists and has no deletionTimestamp (the SystemNamespaces always count as existing). A
// Namespace's DELETE only marks it Terminating; Namespaces, run by every replica, deletes what
// is in it and then the Namespace (namespaces.go). Finalizers too: the DELETE of an object
// that lists metadata.finalizers only marks it, no finalizer may be added then, and the write
// that removes the last one deletes it (Objects.write); a Terminating namespace waits for such
// objects. deletionTimestamp is the server's: writes neither set nor clear it.
package cloudapi
