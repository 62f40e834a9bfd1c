// Package etcdstore is tether-cloud's store on an etcd cluster: a store.Backend whose revisions,
// history, watches and compaction are etcd's own.
//
// Layout: a store key k (every one starts with "/") is the etcd key Prefix+k, so one etcd holds
// several tether clusters under different prefixes. The store's own keys sit beside them, outside
// that range: Prefix+"!cluster-id" (created once, in a transaction, by the first replica to open
// the prefix), Prefix+"!rev" (put by every write), Prefix+"!compacted" (the last compaction a
// replica made), Prefix+"!ca" (the CA the replicas share, see ClaimCA; it holds the CA's
// private key, so etcd needs the protection of the CA files it replaces) and
// Prefix+"!replicas/"+name (on the lease of the running replica of that name, see KeepReplica;
// the others learn of its going from WatchReplicasGone).
//
// Revisions: a write is one etcd transaction that changes one key and puts Prefix+"!rev", so it
// takes one etcd revision and makes exactly one event in the watched range. Rev is the
// ModRevision of Prefix+"!rev": the revision of the last change, not etcd's head, which also
// counts other clusters' writes and the store's bookkeeping. Revisions therefore increase with
// gaps, which the contract allows. Create compares the key's CreateRevision with 0; Update and
// Delete compare its ModRevision with the expected one (or its CreateRevision with 0 when none
// is expected), and on failure read the key in the Else branch, which tells store.ErrNotFound
// from store.ErrConflict. List reads the revision and the first page in one transaction and the
// later pages at that transaction's etcd revision: one snapshot however long.
//
// Watch is one etcd watch over Prefix+"/" with previous values, fed to the consumer by one
// goroutine per watch; see Watch for how it survives lost connections, lost leaders and
// compactions, and how it paces history for a slow consumer. Events whose previous value etcd
// has compacted (etcd drops it silently) end the watch with store.ErrCompacted.
//
// Compaction: with CompactInterval set, the store compacts etcd every interval to History
// revisions behind its last change, and raises Prefix+"!compacted" to that revision; several
// replicas doing so at once is harmless. Compaction in etcd is global: on an etcd shared with
// other tether clusters, each compacts for all, and on one shared with anything else (Kubernetes)
// set CompactInterval to 0 and let the operator's compaction (etcdctl compact,
// --auto-compaction-retention) do it. Either way the store learns what was compacted from etcd
// itself: Compacted reads Prefix+"!rev" as of the newest compaction it knows of, and when etcd
// refuses that read, someone compacted further and the store bisects for the new compaction
// revision. Compacted answers with this store's last change at or before it, so compactions that
// took only other clusters' revisions cost this store's watchers nothing.
//
// Failures: every request is bounded by RequestTimeout and wrapped once with its operation and
// key; the sentinels of package store come back unwrapped, as from boltstore. A store that sees
// etcd no longer hold its history (another etcd cluster, its cluster ID key gone, its revision
// gone back: etcd wiped or restored from a backup) stops for good with ErrEtcdChanged rather than
// mix two histories; restarting the process opens it afresh and edges get a reset.
//
// Concurrency: every method is safe for concurrent use. The fields set at Open never change;
// the rest are atomics or owned by one goroutine (a watch's, the compaction loop's).
//
// Keys under Prefix belong to the store: a write made there by hand takes no part in Rev and may
// be missed by a replica's catch-up. Prefixes of clusters sharing an etcd must not nest.
package etcdstore
