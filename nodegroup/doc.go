// Package nodegroup is the cloud's NodeGroup controller (SPEC §7): it keeps the label
// apps.kubeedge.io/belonging-to=<group> on every member of a NodeGroup and off every other node,
// and writes each group's status.nodeStatuses (KubeEdge's shape: nodeName, readyStatus,
// selectionStatus, selectionStatusReason).
//
// Membership is a pure function of the NodeGroups and the Nodes' labels (Compute): a group
// selects the nodes it names in spec.nodes and those whose labels include its spec.matchLabels;
// a node selected by several groups belongs to the first in order of creation time, then name,
// and the others report it as Failed; a named node that does not exist is reported as Failed.
// The belonging-to label is an output only: it is ignored when labels are matched, so writing it
// can never change membership (no feedback loop), and an edit of it by hand is undone.
//
// The routing rules (package view) read a node's group from that label alone, so a change of
// membership reaches the edges as the Node changes the controller writes.
//
// Concurrency: the controller subscribes to the index; the subscriber runs on the index
// goroutine and only notes what changed (a flag, or a bounded set of nodes whose readiness may
// have changed) and wakes Run. Run, one goroutine, computes membership from the latest snapshot
// and writes what differs through the Patcher, at most Config.Writers writes at a time, then
// waits for the next change. Changes that arrive while it writes are coalesced into one more
// pass. A Node change that leaves labels alone (most are heartbeats) costs a decode of that
// node's readiness and starts a pass only if the readiness flipped. A failed write is retried
// after Config.Retry with a new pass. Writes are merge patches of one label or of the status, so
// they never undo other writers' changes; the next pass corrects any race.
//
// Cost: a pass is O(nodes × groups) label comparisons over the index, plus the writes.
package nodegroup
