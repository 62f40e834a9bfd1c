// Package view decides what each edge node sees: the routing rules of SPEC §4 and §7 as pure
// functions over an index snapshot.
//
//   - Visible(snap, node, key) says whether a key is in the node's view now, and in which form:
//     the object's shared bytes, or for an EndpointSlice of a range-nodegroup Service the slice
//     filtered for the node (topology.go). A slice whose Service does not exist is in no view
//     until the Service comes, so that it is never sent unfiltered.
//   - Affected(change, snap, emit) names every (node, key) pair a change may have altered, using the
//     object before and after the change and the index right after it. It may name more pairs than
//     changed (a redundant upsert or delete is harmless at the edge) but never fewer.
//   - AffectedOn(change, snap, node, emit) does the same for one node against a later index, for a
//     node catching up.
//   - Full(snap, node) lists the node's whole view, for a node that must be reset.
//
// Why lookups against the current index are enough for AffectedOn, even when the hub applies an
// old change long after it happened (a node catching up): a ConfigMap's visibility on a node only
// changes through a change to the ConfigMap itself or to a Pod on that node. The Pod's change
// carries the Pod before and after, so the refs it dropped are named by the Pod rule; the
// ConfigMap's change names the nodes that reference it now, and a node that referenced it then but
// no longer does had a Pod change after it, which names it. The same holds for Devices and
// DeviceModels.
//
// Node groups (SPEC §7) follow the same pattern. A node's group is its belonging-to label, so a
// filtered form changes only through a change to the slice, to its Service's annotation, or to the
// group of a node (the receiver's, or that of a node with an endpoint in the slice). Each such
// change remembers what the rules need of it (Topology): a slice change the audiences (groups, or
// group-less nodes) whose form it altered, computed when it happened; a Service the fact that its
// annotation came or went; a Node its group before and after. Live, Affected is exact: a slice
// change reaches the members of the altered audiences only, and a node moving reaches itself and
// the members of its old and new group for the slices it has endpoints in. Catching up, the
// receiver's group now is its group then unless it moved since, and its own move names every
// filtered slice for it; which slices had an endpoint on another moved node is not known any more,
// so a move involving the receiver's group names every filtered slice. Annotation changes name the
// Service's slices now; a slice that belonged to it then but not now changed since, and its own
// change names it.
//
// Filtered forms are built once per slice version and audience and shared (index.Slice.Form), so
// fanning a slice out to a group costs one encoding, not one per node.
//
// Everything here is safe for concurrent use; the only state is those memoized forms.
package view
