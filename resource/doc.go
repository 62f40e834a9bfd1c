// Package resource is the table of kinds tether serves and the keys it stores them under. It is
// a leaf shared by the cloud and the edge: both sides must agree on what "devices" means, which
// kinds are namespaced and how a key is spelled, or a node's store would not match its view.
//
// The table is fixed at build time and read-only; every function here is safe for concurrent
// use.
package resource
