// Package apibench measures tether's Kubernetes-style APIs, each figure beside a baseline from
// the same run where there is one:
//
//   - an edge metaserver list of 1,000 objects (p50, p99) over real HTTP on loopback, beside the
//     time encoding/json takes to encode the same 1,000 objects as typed values;
//   - watch latency from the edge store's commit to the event read by an HTTP client;
//   - cloud API writes per second (create, then update) through the embedded bbolt store and
//     the index, with concurrent clients, beside bare bbolt (package boltbase) with as many
//     writers putting values of the same size.
//
// Everything runs in this process on real bbolt files in a temporary directory, so the figures
// are the API layer's and the stores', not process start-up's.
package apibench
