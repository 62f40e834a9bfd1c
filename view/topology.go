package view

import (
	"encoding/json"
	"iter"
	"slices"
	"sort"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/resource"
)

// Node groups and traffic closure (SPEC §7).
//
// A node's group is its index.LabelGroup label (kept by the nodegroup controller). For an
// EndpointSlice of a Service annotated range-nodegroup, a node in group g holds the slice with
// only the endpoints on nodes of g; a node in no group holds only the endpoints on itself; an
// endpoint with no nodeName is dropped everywhere. Every other slice is held as it is.
//
// So the set of nodes sharing one form of a slice is an "audience": the members of a group, or
// a single group-less node. An endpoint is seen by exactly one audience (its node's).

// Topology is what the node-group rules remember of a change, beyond its routes:
//
//   - a Node whose group changed: OldGroup and NewGroup ("" for none or absent);
//   - a Service that came or went, or whose range-nodegroup annotation did: a Topology with no
//     fields set (every node's form of each of its slices may have changed);
//   - an EndpointSlice of a range-nodegroup Service whose endpoints alone changed: the Groups and
//     the group-less Nodes whose form changed (the audiences of the endpoints that changed).
//
// It is nil for every other change; for an EndpointSlice that means every node's form may have
// changed.
type Topology struct {
	OldGroup, NewGroup string
	Groups, Nodes      []string
}

// maxReach bounds the audiences a slice change remembers; past it the change counts as reaching
// every node, which is always allowed and keeps a remembered change small.
const maxReach = 64

func topologyOf(u index.Update, res string) *Topology {
	switch res {
	case resource.Nodes:
		if g1, g2 := groupLabel(u.Old), groupLabel(u.New); g1 != g2 {
			return &Topology{OldGroup: g1, NewGroup: g2}
		}
	case resource.Services:
		// A Service that came or went changes its slices too: they are held only while it
		// exists (orphan).
		if (u.Old == nil) != (u.New == nil) || isRanged(u.Old) != isRanged(u.New) {
			return &Topology{}
		}
	case resource.EndpointSlices:
		// A historical update's snapshot is not the index of its time, so its audiences cannot
		// be known: it reaches every node.
		if !u.Historical {
			return sliceReach(u)
		}
	}
	return nil
}

func groupLabel(o *index.Object) string {
	if o == nil {
		return ""
	}
	return o.Labels[index.LabelGroup]
}

func isRanged(svc *index.Object) bool {
	return svc != nil && svc.Annotations[index.AnnotationTopology] == index.TopologyRangeNodeGroup
}

// rangedIn reports whether the Service at key is range-nodegroup in snap.
func rangedIn(snap index.Snapshot, key string) bool {
	return key != "" && isRanged(snap.Get(key))
}

// rangedSlices yields every slice of every range-nodegroup Service.
func rangedSlices(snap index.Snapshot) iter.Seq[*index.Object] {
	return func(yield func(*index.Object) bool) {
		for svc := range snap.ServicesWithTopology(index.TopologyRangeNodeGroup) {
			for o := range snap.SlicesOf(svc.StoreKey) {
				if !yield(o) {
					return
				}
			}
		}
	}
}

type audience struct{ group, node string }

// sliceReach names the audiences whose form an update of a slice changed, using the groups of
// u.Snap (which the update did not change). It returns nil when every node may be affected: the
// slice came or went, is not filtered before or after, or changed outside its endpoints.
func sliceReach(u index.Update) *Topology {
	if u.Old == nil || u.New == nil || u.Old.Slice == nil || u.New.Slice == nil {
		return nil
	}
	a, b := u.Old.Slice, u.New.Slice
	if a.Rest != b.Rest || !rangedIn(u.Snap, a.Service) || !rangedIn(u.Snap, b.Service) {
		return nil
	}
	groups := map[string]string{}
	seqs := func(s *index.Slice) map[audience][]uint64 {
		out := map[audience][]uint64{}
		for _, e := range s.Endpoints {
			if e.Node == "" {
				continue // dropped from every form
			}
			g, ok := groups[e.Node]
			if !ok {
				g = u.Snap.GroupOf(e.Node)
				groups[e.Node] = g
			}
			k := audience{group: g}
			if g == "" {
				k.node = e.Node
			}
			out[k] = append(out[k], e.Hash)
		}
		return out
	}
	before, after := seqs(a), seqs(b)
	t := &Topology{}
	add := func(k audience) {
		if k.group != "" {
			t.Groups = append(t.Groups, k.group)
		} else {
			t.Nodes = append(t.Nodes, k.node)
		}
	}
	for k, s := range before {
		if !slices.Equal(s, after[k]) {
			add(k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			add(k)
		}
	}
	if len(t.Groups)+len(t.Nodes) > maxReach {
		return nil
	}
	sort.Strings(t.Groups)
	sort.Strings(t.Nodes)
	return t
}

// reaches reports whether a slice change with audiences t may have altered node's form, taking
// node's group from snap. When node's group in snap is not the one it had at the change, its
// own group change came later and names every filtered slice for it (groupMovedOn).
func (t *Topology) reaches(snap index.Snapshot, node string) bool {
	if g := snap.GroupOf(node); g != "" {
		return slices.Contains(t.Groups, g)
	}
	return slices.Contains(t.Nodes, node)
}

func movedNode(c Change) string {
	if c.New != nil {
		return c.New.Node
	}
	return c.Old.Node
}

// groupMoved emits, for a node that changed group, the pairs whose form that changed: the node's
// own form of every filtered slice (its audience changed), and the forms of the old and new
// group's members for the filtered slices with an endpoint on the node. snap is the index right
// after the change, so the slices' endpoints are those of that moment.
func groupMoved(c Change, snap index.Snapshot, emit func(node, key string)) {
	v := movedNode(c)
	for o := range rangedSlices(snap) {
		emit(v, o.StoreKey)
	}
	for o := range snap.SlicesOn(v) {
		if !rangedIn(snap, o.Slice.Service) {
			continue
		}
		for _, g := range []string{c.Topo.OldGroup, c.Topo.NewGroup} {
			for m := range snap.GroupMembers(g) {
				if m.Key.Name != v {
					emit(m.Key.Name, o.StoreKey)
				}
			}
		}
	}
}

// groupMovedOn is groupMoved for one node catching up, against a later index. Which slices had
// an endpoint on the moved node back then is not known any more (an endpoint removed since was
// named by the slice's change, but only to the audience of that later moment), so a node whose
// group was involved is sent every filtered slice. Its group now is its group then unless it
// moved itself since, and then its own move names every filtered slice for it.
func groupMovedOn(c Change, snap index.Snapshot, node string, emit func(key string)) {
	g := snap.GroupOf(node)
	if movedNode(c) != node && (g == "" || g != c.Topo.OldGroup && g != c.Topo.NewGroup) {
		return
	}
	for o := range rangedSlices(snap) {
		emit(o.StoreKey)
	}
}

// sliceForm returns the bytes node holds of slice o: o.Raw, or the form filtered for node's
// audience, built once per slice version and kept set.
func sliceForm(snap index.Snapshot, node string, o *index.Object) []byte {
	s := o.Slice
	if s == nil || !rangedIn(snap, s.Service) {
		return o.Raw
	}
	g := snap.GroupOf(node)
	keep := make([]byte, (len(s.Endpoints)+7)/8)
	// A slice with no endpoints gets the filtered form too, so that "no endpoints" is spelled
	// one way ("endpoints":[]) whatever the stored slice said (null, [] or nothing).
	all := len(s.Endpoints) > 0
	var groups map[string]string
	for i, e := range s.Endpoints {
		in := false
		switch {
		case e.Node == "":
		case g == "":
			in = e.Node == node
		default:
			eg, ok := groups[e.Node]
			if !ok {
				if groups == nil {
					groups = map[string]string{}
				}
				eg = snap.GroupOf(e.Node)
				groups[e.Node] = eg
			}
			in = eg == g
		}
		if in {
			keep[i/8] |= 1 << (i % 8)
		} else {
			all = false
		}
	}
	if all {
		return o.Raw
	}
	return s.Form(string(keep), func() []byte { return filtered(o.Raw, keep) })
}

// filtered returns raw with only the endpoints whose bit is set in keep.
func filtered(raw, keep []byte) []byte {
	var top map[string]json.RawMessage
	var eps []json.RawMessage
	// The index decoded these same bytes into these same types (index.decodeSlice), so neither
	// step can fail; were one to, an empty endpoint list leaks nothing.
	if json.Unmarshal(raw, &top) != nil {
		top = map[string]json.RawMessage{}
	}
	json.Unmarshal(top["endpoints"], &eps)
	out := make([]json.RawMessage, 0, len(eps))
	for i, e := range eps {
		if keep[i/8]&(1<<(i%8)) != 0 {
			out = append(out, e)
		}
	}
	top["endpoints"], _ = json.Marshal(out)
	b, _ := json.Marshal(top)
	return b
}
