// Package store defines tether-cloud's durable store: a key-value history with one monotonic
// revision for every change, watch from a revision, and compaction — the meanings etcd gives
// those words, so that the embedded backend (boltstore) and an etcd cluster are interchangeable.
//
// The package holds only the contract (Backend, KV, Event, the sentinel errors). Values are
// opaque bytes; what they mean is the index's and the API's business.
//
// Every Backend method is safe for concurrent use. Revisions start at 1 and never repeat; a
// revision identifies exactly one change (one put or one delete), as in etcd.
package store
