// Package view decides what each edge node sees: the routing rules of SPEC §4 as pure functions
// over an index snapshot.
//
//   - Visible(snap, node, key) says whether a key is in the node's view now, and in which form.
//   - Affected(change, snap, emit) names every (node, key) pair a change may have altered, using the
//     object before and after the change and the current index. It may name more pairs than
//     changed (a redundant upsert or delete is harmless at the edge) but never fewer.
//   - Full(snap, node) lists the node's whole view, for a node that must be reset.
//
// Why lookups against the current index are enough for Affected, even when the hub applies an
// old change long after it happened (a node catching up): a ConfigMap's visibility on a node only
// changes through a change to the ConfigMap itself or to a Pod on that node. The Pod's change
// carries the Pod before and after, so the refs it dropped are named by the Pod rule; the
// ConfigMap's change names the nodes that reference it now, and a node that referenced it then but
// no longer does had a Pod change after it, which names it. The same holds for Devices and
// DeviceModels.
//
// Everything here is pure and safe for concurrent use.
package view
