package kubeapi

import (
	"runtime"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"
)

func (h *Handler) version() version.Info {
	major, minor := "1", "30"
	if parts := strings.SplitN(strings.TrimPrefix(h.cfg.ServerVersion, "v"), ".", 3); len(parts) >= 2 {
		major, minor = parts[0], parts[1]
	}
	return version.Info{
		Major: major, Minor: minor, GitVersion: h.cfg.ServerVersion,
		GoVersion: runtime.Version(), Compiler: runtime.Compiler, Platform: runtime.GOOS + "/" + runtime.GOARCH,
	}
}

func (h *Handler) apiVersions() metav1.APIVersions {
	return metav1.APIVersions{
		TypeMeta: metav1.TypeMeta{Kind: "APIVersions"},
		Versions: []string{"v1"},
		// Clients only use this to pick an address; an empty CIDR matches every client.
		ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: ""}},
	}
}

func (h *Handler) groupsByName() map[string]*metav1.APIGroup {
	groups := map[string]*metav1.APIGroup{}
	for _, info := range h.reg.All() {
		if info.Group == "" {
			continue
		}
		g := groups[info.Group]
		if g == nil {
			g = &metav1.APIGroup{TypeMeta: metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}, Name: info.Group}
			groups[info.Group] = g
		}
		gv := metav1.GroupVersionForDiscovery{GroupVersion: info.APIVersion(), Version: info.Version}
		found := false
		for _, v := range g.Versions {
			found = found || v == gv
		}
		if !found {
			g.Versions = append(g.Versions, gv)
			g.PreferredVersion = g.Versions[0]
		}
	}
	return groups
}

func (h *Handler) apiGroups() metav1.APIGroupList {
	groups := h.groupsByName()
	names := make([]string, 0, len(groups))
	for n := range groups {
		names = append(names, n)
	}
	sort.Strings(names)
	list := metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
	for _, n := range names {
		list.Groups = append(list.Groups, *groups[n])
	}
	return list
}

func (h *Handler) group(name string) (metav1.APIGroup, bool) {
	g, ok := h.groupsByName()[name]
	if !ok {
		return metav1.APIGroup{}, false
	}
	return *g, true
}

// HasStatus says whether a kind has a status subresource, as in Kubernetes and KubeEdge's
// CRDs: so for every kind that has a status. For those, status is written only through it.
func HasStatus(kind string) bool {
	switch kind {
	case "Node", "Pod", "Service", "Device", "NodeGroup", "Namespace":
		return true
	}
	return false
}

func (h *Handler) resourceList(group, version string) (metav1.APIResourceList, bool) {
	gv := version
	if group != "" {
		gv = group + "/" + version
	}
	list := metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv}
	verbs := metav1.Verbs{"create", "delete", "get", "list", "patch", "update", "watch"}
	found := false
	for _, info := range h.reg.All() {
		if info.Group != group || info.Version != version {
			continue
		}
		found = true
		list.APIResources = append(list.APIResources, metav1.APIResource{
			Name: info.Resource, SingularName: info.Singular, Namespaced: info.Namespaced, Kind: info.Kind,
			Verbs: verbs, ShortNames: info.ShortNames, Categories: info.Categories,
		})
		if HasStatus(info.Kind) {
			list.APIResources = append(list.APIResources, metav1.APIResource{
				Name: info.Resource + "/status", Namespaced: info.Namespaced, Kind: info.Kind,
				Verbs: metav1.Verbs{"get", "patch", "update"},
			})
		}
	}
	return list, found
}
