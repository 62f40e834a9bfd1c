// Package kubeapi is tether's Kubernetes-style HTTP layer, written once and served twice: by the
// cloud API (read-write, over the cloud store) and by the edge metaserver (reads from the edge
// store). It owns the URL layout, discovery, request decoding and limits, list and watch
// semantics, selectors and metav1.Status errors; a Storage owns the objects.
//
// Objects cross this package as JSON bytes and are never re-encoded on the read path: a list is
// assembled from the stored bytes of its items, so that what an edge or a client receives is
// exactly what was stored (unknown fields included).
//
// Field selectors: metadata.name, metadata.namespace and spec.nodeName are judged by a Storage
// on the Meta it keeps per object; a Pod's status.phase and a Secret's type (the object fields)
// need not be in that Meta, so the Handler judges them on the items of a list and the Cache on
// the objects of watch events, remembering an object's field from its last event to tell a
// watcher when it leaves the selection (fields.go). Server-side apply is not served (415).
//
// Watches are served by a Cache: a ring of recent events that storages feed in revision order,
// bounded in count and optionally in bytes (LimitBytes) and age (LimitAge). A watch from a
// version inside the ring replays exactly the missed events; one older than the ring gets 410
// Gone (reason Expired), as from a compacted etcd. A watcher that does not keep up
// is cut off rather than buffered without bound; client-go then re-lists.
//
// What kubectl and client-go need beyond that is here too: table output (Accept
// ...;as=Table;g=meta.k8s.io, built from the stored JSON on the way out, with per-kind columns),
// the OpenAPI documents kubectl reads before it writes (/openapi/v2 as protobuf, /openapi/v3 per
// group version; permissive schemas, see openapi.go), YAML request bodies, protobuf request
// bodies of the built-in kinds (current kubectl's `create` commands send them; protobuf.go turns
// them into JSON, and answers are JSON), and server-side field
// validation (fieldValidation=Strict|Warn|Ignore: unknown and duplicate fields, decoded strictly
// against the Go types of the built-in kinds; for a PATCH, of the object the patch makes, which
// the storage checks with CheckPatched). A watch that starts with the current state is
// counted as verb "watchlist" when it starts, so a relist storm shows in the request metrics
// whether clients list or stream their lists.
//
// Concurrency: Handler is safe for concurrent use; each request runs on its own goroutine. A
// watch has one more goroutine waiting for events; a client that does not read for
// Config.WatchWriteTimeout is disconnected, so neither goroutine outlives it.
// Cache.Add must be called from one goroutine at a time, in revision order.
package kubeapi
