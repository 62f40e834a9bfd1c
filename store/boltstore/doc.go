// Package boltstore is tether-cloud's embedded store: a store.Backend in one bbolt file.
//
// Layout: bucket "kv" maps each key to its current value and revisions; bucket "log" maps each
// revision (big-endian, so cursor order is revision order) to the change made at it, with the
// previous value, which is what Watch replays and what a node's catch-up is computed from;
// bucket "meta" holds the current and compacted revisions and the cluster ID.
//
// Concurrency: one writer goroutine owns every write transaction. Writers queue their operation
// and wait; the writer takes all queued operations into one transaction (one fsync for many
// writers) and, after the commit, hands the events to watchers and answers each caller. Reads
// are bbolt read transactions and run in parallel with the writer.
//
// Watchers never block the writer: each has a buffer, and one that falls WatchBuffer events
// behind ends with store.ErrSlowWatcher and must re-watch from its last revision.
//
// Compaction keeps the last History revisions of log, deleting older entries in bounded steps
// after commits.
package boltstore
