// Package boltkeys holds bbolt operations over buckets keyed by big-endian uint64 sequence
// numbers (the edge's outbox, the cloud's change log) that are easy to get subtly wrong.
package boltkeys
