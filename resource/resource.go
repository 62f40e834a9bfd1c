package resource

import (
	"fmt"
	"strings"

	"github.com/tetherhub/tether/protocol"
)

// Info describes one served kind.
type Info struct {
	Group      string // "" for the core group
	Version    string
	Kind       string
	Resource   string // lower-case plural, as in URLs
	Singular   string
	ListKind   string
	Namespaced bool
	ShortNames []string
	Categories []string
}

// APIVersion is the apiVersion field of objects of this kind ("v1", "devices.kubeedge.io/v1beta1").
func (i Info) APIVersion() string {
	if i.Group == "" {
		return i.Version
	}
	return i.Group + "/" + i.Version
}

// GroupResource is the group-qualified plural that keys use ("pods", "devices.devices.kubeedge.io").
func (i Info) GroupResource() string {
	if i.Group == "" {
		return i.Resource
	}
	return i.Resource + "." + i.Group
}

// Groups and versions served.
const (
	GroupDevices   = "devices.kubeedge.io"
	GroupApps      = "apps.kubeedge.io"
	GroupDiscovery = "discovery.k8s.io"
)

// AnnotationReportEpoch is kept by the cloud on a Node or Device its edge reports about, when
// several replicas serve one store: "node/epoch", the node and the epoch of the newest session
// whose report the object holds (see cloudhub.Epochs). Clients cannot set, change or remove it; a change to it alone is
// not routed to edges.
const AnnotationReportEpoch = "tether.dev/report-epoch"

// StatusPartlyUnrouted says whether the cloud changes the status of objects of resource res
// without sending the change to edges: a Device's status (its edge reports it) and a Node's
// heartbeat times. The index leaves that status out of what it routes, and an edge's copy of
// such an object carries an older cloud version than the cloud holds.
func StatusPartlyUnrouted(res string) bool { return res == Devices || res == Nodes }

// The served kinds, by their group-qualified resource.
const (
	Nodes          = "nodes"
	Pods           = "pods"
	ConfigMaps     = "configmaps"
	Secrets        = "secrets"
	Services       = "services"
	Namespaces     = "namespaces"
	EndpointSlices = "endpointslices." + GroupDiscovery
	Devices        = "devices." + GroupDevices
	DeviceModels   = "devicemodels." + GroupDevices
	NodeGroups     = "nodegroups." + GroupApps
)

func table() []Info {
	return []Info{
		{Version: "v1", Kind: "Namespace", Resource: "namespaces", Singular: "namespace", ListKind: "NamespaceList", ShortNames: []string{"ns"}},
		{Version: "v1", Kind: "Node", Resource: "nodes", Singular: "node", ListKind: "NodeList", ShortNames: []string{"no"}},
		{Version: "v1", Kind: "Pod", Resource: "pods", Singular: "pod", ListKind: "PodList", Namespaced: true, ShortNames: []string{"po"}, Categories: []string{"all"}},
		{Version: "v1", Kind: "ConfigMap", Resource: "configmaps", Singular: "configmap", ListKind: "ConfigMapList", Namespaced: true, ShortNames: []string{"cm"}},
		{Version: "v1", Kind: "Secret", Resource: "secrets", Singular: "secret", ListKind: "SecretList", Namespaced: true},
		{Version: "v1", Kind: "Service", Resource: "services", Singular: "service", ListKind: "ServiceList", Namespaced: true, ShortNames: []string{"svc"}, Categories: []string{"all"}},
		{Group: GroupDiscovery, Version: "v1", Kind: "EndpointSlice", Resource: "endpointslices", Singular: "endpointslice", ListKind: "EndpointSliceList", Namespaced: true},
		{Group: GroupDevices, Version: "v1beta1", Kind: "Device", Resource: "devices", Singular: "device", ListKind: "DeviceList", Namespaced: true, ShortNames: []string{"dev"}},
		{Group: GroupDevices, Version: "v1beta1", Kind: "DeviceModel", Resource: "devicemodels", Singular: "devicemodel", ListKind: "DeviceModelList", Namespaced: true, ShortNames: []string{"dm"}},
		{Group: GroupApps, Version: "v1alpha1", Kind: "NodeGroup", Resource: "nodegroups", Singular: "nodegroup", ListKind: "NodeGroupList", ShortNames: []string{"ng"}},
	}
}

// Registry answers questions about the served kinds. The zero value is not usable; use New.
type Registry struct {
	all    []Info
	byGR   map[string]Info
	byGVR  map[[3]string]Info
	byKind map[[2]string]Info // apiVersion, kind
}

// New returns the registry of every kind tether serves.
func New() *Registry {
	r := &Registry{all: table(), byGR: map[string]Info{}, byGVR: map[[3]string]Info{}, byKind: map[[2]string]Info{}}
	for _, i := range r.all {
		r.byGR[i.GroupResource()] = i
		r.byGVR[[3]string{i.Group, i.Version, i.Resource}] = i
		r.byKind[[2]string{i.APIVersion(), i.Kind}] = i
	}
	return r
}

// All returns every served kind, in a stable order.
func (r *Registry) All() []Info { return append([]Info(nil), r.all...) }

// ByGroupResource finds a kind by its group-qualified resource.
func (r *Registry) ByGroupResource(gr string) (Info, bool) {
	i, ok := r.byGR[gr]
	return i, ok
}

// ByURL finds a kind by the group, version and resource of a request path.
func (r *Registry) ByURL(group, version, resource string) (Info, bool) {
	i, ok := r.byGVR[[3]string{group, version, resource}]
	return i, ok
}

// ByKind finds a kind by an object's apiVersion and kind.
func (r *Registry) ByKind(apiVersion, kind string) (Info, bool) {
	i, ok := r.byKind[[2]string{apiVersion, kind}]
	return i, ok
}

// Key is the protocol's object key; aliased so that packages speaking of keys need not import
// the wire contract.
type Key = protocol.Key

// StoreKey spells a key as the cloud and edge stores hold it: "/<group-resource>/<ns>/<name>" for
// namespaced kinds and "/<group-resource>/<name>" for cluster-scoped ones, so that a prefix scan
// lists one kind, or one kind in one namespace, in name order.
func StoreKey(k Key) string {
	if k.Namespace == "" {
		return "/" + k.Resource + "/" + k.Name
	}
	return "/" + k.Resource + "/" + k.Namespace + "/" + k.Name
}

// Prefix is the store-key prefix of a kind, or of a kind in one namespace.
func Prefix(groupResource, namespace string) string {
	if namespace == "" {
		return "/" + groupResource + "/"
	}
	return "/" + groupResource + "/" + namespace + "/"
}

// ParseStoreKey is the inverse of StoreKey. It fails for keys of kinds not in the registry (the
// stores also keep keys of their own, outside the served kinds).
func (r *Registry) ParseStoreKey(s string) (Key, Info, error) {
	parts := strings.Split(strings.TrimPrefix(s, "/"), "/")
	if !strings.HasPrefix(s, "/") || len(parts) < 2 {
		return Key{}, Info{}, fmt.Errorf("resource: %q is not a store key", s)
	}
	info, ok := r.byGR[parts[0]]
	if !ok {
		return Key{}, Info{}, fmt.Errorf("resource: %q is not a served kind", parts[0])
	}
	switch {
	case info.Namespaced && len(parts) == 3 && parts[1] != "" && parts[2] != "":
		return Key{Resource: parts[0], Namespace: parts[1], Name: parts[2]}, info, nil
	case !info.Namespaced && len(parts) == 2 && parts[1] != "":
		return Key{Resource: parts[0], Name: parts[1]}, info, nil
	}
	return Key{}, Info{}, fmt.Errorf("resource: %q is not a valid %s key", s, info.Resource)
}
