package view

import (
	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/resource"
)

// AllNodes in an emitted pair means every node.
const AllNodes = "*"

// Change is what the rules need of one store change: the key and the routing part of the object
// before and after. It is small so that the hub can remember many of them.
type Change struct {
	Rev      int64
	Key      string // store key
	Resource string // group-qualified resource
	Old, New *index.Route
	// Topo is what the node-group rules (topology.go) need beyond the routes; nil for most
	// changes, so that remembering a change stays cheap.
	Topo *Topology
}

// Routed reports whether an update can change any node's view. A change only to status that an
// edge is the source of (a Device's twins and state, a Node's heartbeat times; see
// index.Object.Content) is not sent down: echoing it back would double that traffic for nothing.
func Routed(u index.Update) bool {
	return u.Old == nil || u.New == nil || u.Old.Content != u.New.Content
}

// ChangeOf extracts a Change from an index update.
func ChangeOf(u index.Update) Change {
	c := Change{Rev: u.Rev(), Key: u.Event.KV.Key}
	if u.Old != nil {
		r := u.Old.Route
		c.Old = &r
		c.Resource = u.Old.Key.Resource
	}
	if u.New != nil {
		r := u.New.Route
		c.New = &r
		c.Resource = u.New.Key.Resource
	}
	c.Topo = topologyOf(u, c.Resource)
	return c
}

// Affected calls emit for every (node, key) pair the change may have altered. node may be
// AllNodes. snap must be the index right after the change: the node-group rules read the groups
// and Services of that moment (see doc.go).
func Affected(c Change, snap index.Snapshot, emit func(node, key string)) {
	switch c.Resource {
	case resource.Nodes, resource.Pods, resource.Devices:
		for _, r := range []*index.Route{c.Old, c.New} {
			if r == nil || r.Node == "" {
				continue
			}
			emit(r.Node, c.Key)
			for _, ref := range r.Refs {
				emit(r.Node, ref)
			}
		}
		if c.Resource == resource.Nodes && c.Topo != nil {
			groupMoved(c, snap, emit)
		}
	case resource.ConfigMaps, resource.Secrets, resource.DeviceModels:
		for _, o := range snap.Referencing(c.Key) {
			if o.Node != "" {
				emit(o.Node, c.Key)
			}
		}
	case resource.Services:
		emit(AllNodes, c.Key)
		if c.Topo != nil { // it or its annotation came or went: every node's form of every slice changed
			for o := range snap.SlicesOf(c.Key) {
				emit(AllNodes, o.StoreKey)
			}
		}
	case resource.EndpointSlices:
		if c.Topo == nil {
			emit(AllNodes, c.Key)
			return
		}
		for _, g := range c.Topo.Groups {
			for m := range snap.GroupMembers(g) {
				emit(m.Key.Name, c.Key)
			}
		}
		for _, n := range c.Topo.Nodes {
			emit(n, c.Key)
		}
	}
}

// AffectedOn calls emit for every key on node that the change may have altered. snap may be
// any later index than the change's (a node catching up): the rules then name a superset of what
// the change and the changes after it altered, never fewer (see doc.go).
func AffectedOn(c Change, snap index.Snapshot, node string, emit func(key string)) {
	switch c.Resource {
	case resource.Nodes, resource.Pods, resource.Devices:
		for _, r := range []*index.Route{c.Old, c.New} {
			if r == nil || r.Node != node {
				continue
			}
			emit(c.Key)
			for _, ref := range r.Refs {
				emit(ref)
			}
		}
		if c.Resource == resource.Nodes && c.Topo != nil {
			groupMovedOn(c, snap, node, emit)
		}
	case resource.ConfigMaps, resource.Secrets, resource.DeviceModels:
		if referencedOn(snap, c.Key, node) {
			emit(c.Key)
		}
	case resource.Services:
		emit(c.Key)
		if c.Topo != nil {
			for o := range snap.SlicesOf(c.Key) {
				emit(o.StoreKey)
			}
		}
	case resource.EndpointSlices:
		if c.Topo == nil || c.Topo.reaches(snap, node) {
			emit(c.Key)
		}
	}
}

// Visible returns the object at key if it is in node's view, with the bytes node should hold:
// the object's Raw, or for an EndpointSlice of a range-nodegroup Service the form filtered for
// node (SPEC §7). Forms are memoized per slice version and shared by every node that holds the
// same one; neither the object nor the bytes may be modified. It returns nil, nil if key is not
// in node's view.
func Visible(snap index.Snapshot, node, key string) (*index.Object, []byte) {
	o := snap.Get(key)
	if o == nil {
		return nil, nil
	}
	switch o.Key.Resource {
	case resource.Nodes, resource.Pods, resource.Devices:
		if o.Node == node {
			return o, o.Raw
		}
	case resource.ConfigMaps, resource.Secrets, resource.DeviceModels:
		if referencedOn(snap, key, node) {
			return o, o.Raw
		}
	case resource.Services:
		return o, o.Raw
	case resource.EndpointSlices:
		if orphan(snap, o) {
			return nil, nil
		}
		return o, sliceForm(snap, node, o)
	}
	return nil, nil
}

// orphan reports whether o is an EndpointSlice whose Service (named by its
// kubernetes.io/service-name label) does not exist: no node holds it, as its endpoints cannot be
// filtered by the node-group rule its Service would ask for (SPEC §7), and no proxy uses a slice
// of a Service it does not have. It goes out when the Service comes (Affected). A slice that
// names no Service is held as it is by every node.
func orphan(snap index.Snapshot, o *index.Object) bool {
	return o.Slice != nil && o.Slice.Service != "" && snap.Get(o.Slice.Service) == nil
}

func referencedOn(snap index.Snapshot, key, node string) bool {
	for _, o := range snap.Referencing(key) {
		if o.Node == node {
			return true
		}
	}
	return false
}

// Full returns every object in node's view, each once.
func Full(snap index.Snapshot, node string) []*index.Object {
	var out []*index.Object
	seen := map[string]bool{}
	add := func(o *index.Object) {
		if o != nil && !seen[o.StoreKey] {
			seen[o.StoreKey] = true
			out = append(out, o)
		}
	}
	add(snap.Get(resource.StoreKey(resource.Key{Resource: resource.Nodes, Name: node})))
	for _, res := range []string{resource.Pods, resource.Devices} {
		for _, o := range snap.OnNode(res, node) {
			add(o)
			for _, ref := range o.Refs {
				add(snap.Get(ref))
			}
		}
	}
	for _, res := range []string{resource.Services, resource.EndpointSlices} {
		for _, o := range snap.List(resource.Prefix(res, ""), "", 0) {
			if !orphan(snap, o) {
				add(o)
			}
		}
	}
	return out
}
