// Package storetest is the conformance suite every store.Backend must pass: the same tests run
// against the embedded bbolt backend and against a real etcd, so that "revision", "watch" and
// "compacted" mean the same thing on both.
package storetest
