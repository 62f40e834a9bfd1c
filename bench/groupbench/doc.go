// Package groupbench measures node groups and traffic closure (SPEC §7, issue 5) against a real
// tether-cloud process and a fleet of simulated edges (package sim: the real edge hub client over
// in-memory stores):
//
//   - A single endpoint change in a range-nodegroup Service whose slices hold an endpoint on every
//     node, with the nodes spread over groups of equal size: the time until every node of the
//     changed endpoint's group has committed the new form, how many nodes received any message
//     (the goal is that group alone), and the hub bytes sent. Beside it, the same change in a
//     plain Service, which every node must receive.
//   - Relabelling every node into another group through the cloud API: the time until the
//     NodeGroup controller has moved them all and every edge is in sync, and the hub bytes sent.
//
// Node i is in group i mod G (by a zone label its NodeGroup matches); slice k of each Service
// holds an endpoint on each node of the k-th block of nodes, so every slice has endpoints in every
// group. Sizes: small (60 nodes, for checking the benchmark), default (1,000 nodes, 10 groups, 10
// slices per Service), full (5,000 nodes, 50 groups, 50 slices).
//
// Latency is taken at the simulated edge's commit, from just before the API call; the edge's
// ack leaves right after. "In sync" is an edge cursor past a barrier: a change of a NodeGroup
// that selects nothing, which every node's progress mark covers but no node is sent. After the
// relabelling every node's filtered slices are checked, so no figure comes from a wrong run.
package groupbench
