// Package boltbase is the bare bbolt baseline of the benchmark suites: concurrent writers each
// putting one value and waiting until it is durable, through bbolt's own group commit (DB.Batch
// with its default batch delay and size), on a fresh file in the directory the measured store
// uses. It is what bbolt as it ships does on this disk with the same concurrency, value size
// and key spread; the suites print their durable writes beside it.
package boltbase
