package index

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"iter"
	"sync"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/tetherhub/tether/resource"
)

// Node groups and traffic closure (SPEC §7): the names the rules read, and what the index keeps
// so that "which nodes are in group g", "which slices belong to Service s", "which slices have an
// endpoint on node n" and "which Services are range-nodegroup" are index lookups.
const (
	// LabelGroup is set by the cloud on the members of a NodeGroup; its value is the group.
	LabelGroup = "apps.kubeedge.io/belonging-to"
	// AnnotationTopology on a Service asks for its endpoints to be filtered per node.
	AnnotationTopology = "apps.kubeedge.io/service-topology"
	// TopologyRangeNodeGroup is the AnnotationTopology value of SPEC §7.
	TopologyRangeNodeGroup = "range-nodegroup"
	// LabelServiceName names an EndpointSlice's Service (same namespace), as in Kubernetes.
	LabelServiceName = "kubernetes.io/service-name"
)

// Index names of the topology part of the schema.
const (
	idxGroup    = "group"    // Nodes, by their LabelGroup value
	idxService  = "service"  // EndpointSlices, by their Service's store key
	idxEPNode   = "epnode"   // EndpointSlices, by each node they have an endpoint on
	idxTopology = "topology" // Services, by their AnnotationTopology value
)

func topologyIndexes() map[string]*memdb.IndexSchema {
	return map[string]*memdb.IndexSchema{
		idxGroup:    {Name: idxGroup, AllowMissing: true, Indexer: fieldIndexer(func(o *Object) string { return o.groupIndex() })},
		idxService:  {Name: idxService, AllowMissing: true, Indexer: fieldIndexer(func(o *Object) string { return o.serviceIndex() })},
		idxEPNode:   {Name: idxEPNode, AllowMissing: true, Indexer: epNodeIndexer{}},
		idxTopology: {Name: idxTopology, AllowMissing: true, Indexer: fieldIndexer(func(o *Object) string { return o.topologyIndex() })},
	}
}

func (o *Object) groupIndex() string {
	if o.Key.Resource != resource.Nodes {
		return ""
	}
	return o.Labels[LabelGroup]
}

func (o *Object) serviceIndex() string {
	if o.Slice == nil {
		return ""
	}
	return o.Slice.Service
}

func (o *Object) topologyIndex() string {
	if o.Key.Resource != resource.Services {
		return ""
	}
	return o.Annotations[AnnotationTopology]
}

// Slice is what routing needs of an EndpointSlice, decoded once with the object: its Service,
// its endpoints' nodes in order, and hashes that tell which endpoints a change touched. It also
// memoizes the slice's filtered forms, which are shared by every node that holds the same one.
type Slice struct {
	// Service is the store key of the Service named by the LabelServiceName label; "" if none.
	Service string
	// Endpoints are the slice's endpoints, in order.
	Endpoints []Endpoint
	// Rest is a hash of the slice without its endpoints and resourceVersion: two versions with the
	// same Rest differ at most in their endpoints.
	Rest uint64

	mu    sync.Mutex // guards forms
	forms map[string]*form
}

// Endpoint is one endpoint of a slice.
type Endpoint struct {
	Node string // spec nodeName; "" when the endpoint names no node
	Hash uint64 // of the endpoint's JSON
}

type form struct {
	once sync.Once
	raw  []byte
}

// maxForms bounds the memoized forms of one slice version. Distinct forms are one per group plus
// one per group-less node with endpoints; membership changes can add more over the object's life,
// so past the bound the memo starts over rather than grow.
const maxForms = 256

// Form returns the form memoized under key, calling build (once, even under concurrent callers)
// if there is none. The bytes are shared and must not be modified.
func (s *Slice) Form(key string, build func() []byte) []byte {
	s.mu.Lock()
	f := s.forms[key]
	if f == nil {
		if s.forms == nil || len(s.forms) >= maxForms {
			s.forms = map[string]*form{}
		}
		f = &form{}
		s.forms[key] = f
	}
	s.mu.Unlock()
	f.once.Do(func() { f.raw = build() })
	return f.raw
}

// decodeSlice reads the routing part of an EndpointSlice from raw, its JSON as served.
func decodeSlice(key resource.Key, labels map[string]string, raw []byte) (*Slice, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, err
	}
	s := &Slice{}
	if name := labels[LabelServiceName]; name != "" {
		s.Service = resource.StoreKey(resource.Key{Resource: resource.Services, Namespace: key.Namespace, Name: name})
	}
	var eps []json.RawMessage
	if e := top["endpoints"]; len(e) > 0 && string(e) != "null" {
		if err := json.Unmarshal(e, &eps); err != nil {
			return nil, fmt.Errorf("endpoints: %w", err)
		}
	}
	s.Endpoints = make([]Endpoint, len(eps))
	for i, e := range eps {
		var ep struct {
			NodeName string `json:"nodeName"`
		}
		if err := json.Unmarshal(e, &ep); err != nil {
			return nil, fmt.Errorf("endpoints[%d]: %w", i, err)
		}
		s.Endpoints[i] = Endpoint{Node: ep.NodeName, Hash: hash(e)}
	}
	delete(top, "endpoints")
	var md map[string]json.RawMessage
	if err := json.Unmarshal(top["metadata"], &md); err == nil {
		delete(md, "resourceVersion")
		top["metadata"], _ = json.Marshal(md)
	}
	rest, err := json.Marshal(top)
	if err != nil {
		return nil, err
	}
	s.Rest = hash(rest)
	return s, nil
}

func hash(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

// GroupOf returns the group of node (its LabelGroup label), or "" if it has none or does not exist.
func (s Snapshot) GroupOf(node string) string {
	o := s.Get(resource.StoreKey(resource.Key{Resource: resource.Nodes, Name: node}))
	if o == nil {
		return ""
	}
	return o.Labels[LabelGroup]
}

// GroupMembers yields the Nodes labelled as members of group.
func (s Snapshot) GroupMembers(group string) iter.Seq[*Object] { return s.each(idxGroup, group) }

// SlicesOf yields the EndpointSlices of the Service at serviceKey.
func (s Snapshot) SlicesOf(serviceKey string) iter.Seq[*Object] {
	return s.each(idxService, serviceKey)
}

// SlicesOn yields the EndpointSlices with at least one endpoint on node.
func (s Snapshot) SlicesOn(node string) iter.Seq[*Object] { return s.each(idxEPNode, node) }

// ServicesWithTopology yields the Services whose AnnotationTopology is value.
func (s Snapshot) ServicesWithTopology(value string) iter.Seq[*Object] {
	return s.each(idxTopology, value)
}

func (s Snapshot) each(index, value string) iter.Seq[*Object] {
	return func(yield func(*Object) bool) {
		if value == "" {
			return
		}
		it, err := s.txn.Get(table, index, value)
		if err != nil {
			return
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			if !yield(raw.(*Object)) {
				return
			}
		}
	}
}

// fieldIndexer indexes objects by one derived string; "" leaves the object out.
type fieldIndexer func(*Object) string

func (f fieldIndexer) FromObject(obj any) (bool, []byte, error) {
	v := f(obj.(*Object))
	if v == "" {
		return false, nil, nil
	}
	return true, []byte(v + "\x00"), nil
}

func (fieldIndexer) FromArgs(args ...any) ([]byte, error) { return stringArg(args) }

// epNodeIndexer indexes EndpointSlices by each distinct node of their endpoints.
type epNodeIndexer struct{}

func (epNodeIndexer) FromObject(obj any) (bool, [][]byte, error) {
	s := obj.(*Object).Slice
	if s == nil {
		return false, nil, nil
	}
	var out [][]byte
	seen := map[string]bool{}
	for _, e := range s.Endpoints {
		if e.Node != "" && !seen[e.Node] {
			seen[e.Node] = true
			out = append(out, []byte(e.Node+"\x00"))
		}
	}
	return len(out) > 0, out, nil
}

func (epNodeIndexer) FromArgs(args ...any) ([]byte, error) { return stringArg(args) }
