// Package hubbench measures tether-cloud's hub as SPEC and issue 2 ask, each figure beside a
// baseline measured in the same run: fan-out of a 1 KB change to many nodes against a bare
// gorilla broadcast (gorilla's chat-example pattern, over TLS like the hub) and against the same
// broadcast with clients that acknowledge every message as edges do, hub memory per idle
// node against a bare gorilla connection, and a cloud restart under up-to-date nodes.
//
// tether-cloud and the baseline server run as processes of their own; the simulated edges (the
// real edge hub client over in-memory stores, package sim) and the baseline's clients run in the
// calling process. Latency is taken at the simulated edge's commit, from just before the API call
// that makes the change; the edge's ack leaves right after.
package hubbench
