package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/resource"
)

const (
	groupsPath    = "/apis/apps.kubeedge.io/v1alpha1/nodegroups"
	labelGroup    = "apps.kubeedge.io/belonging-to"
	topologyKey   = "apps.kubeedge.io/service-topology"
	rangeTopology = "range-nodegroup"
)

// Each endpoint's address names its node, so that a view reads as node names; "none" is an
// endpoint with no nodeName, and a primed name (a1') an endpoint whose address changed.
var epAddr = map[string]string{"a1": "10.1.0.1", "a1'": "10.1.0.11", "a2": "10.1.0.2", "b1": "10.2.0.1", "b1'": "10.2.0.11",
	"b2": "10.2.0.2", "solo": "10.3.0.1", "none": "10.9.9.9"}

// topoSlice builds an EndpointSlice of service with one endpoint per name of epAddr.
func topoSlice(name, service string, eps ...string) map[string]any {
	var list []any
	for _, e := range eps {
		ep := map[string]any{"addresses": []string{epAddr[e]}}
		if n := strings.TrimSuffix(e, "'"); n != "none" {
			ep["nodeName"] = n
		}
		list = append(list, ep)
	}
	m := meta(name)
	m["labels"] = map[string]string{"kubernetes.io/service-name": service}
	return map[string]any{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": m,
		"addressType": "IPv4", "endpoints": list, "ports": []any{map[string]any{"port": 80}}}
}

func rangedService(name string) map[string]any {
	s := serviceObj(name)
	s["metadata"].(map[string]any)["annotations"] = map[string]string{topologyKey: rangeTopology}
	return s
}

// endpointNames reads the node names of a slice's endpoints (by their addresses), sorted.
func endpointNames(t *testing.T, raw []byte) string {
	t.Helper()
	var s struct {
		Endpoints []struct{ Addresses []string }
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("not a slice: %v: %s", err, raw)
	}
	var out []string
	for _, e := range s.Endpoints {
		for _, a := range e.Addresses {
			name := "?" + a
			for n, addr := range epAddr {
				if addr == a {
					name = n
				}
			}
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// sliceOn is what e's metaserver serves of slice name: its endpoints' node names.
func sliceOn(t *testing.T, e *edge, name string) string {
	t.Helper()
	code, body := do(t, http.MethodGet, e.url(paths["endpointslices"]+"/"+name), "", nil)
	if code != http.StatusOK {
		return fmt.Sprintf("HTTP %d", code)
	}
	return endpointNames(t, body)
}

var receivedRe = regexp.MustCompile(`(?m)^tether_edge_hub_received_messages_total\{type="(Upsert|Delete)"\} ([0-9.e+-]+)$`)

// dataMessages counts the upserts and deletes e has received.
func dataMessages(t *testing.T, e *edge) float64 {
	t.Helper()
	_, body := do(t, http.MethodGet, e.url("/metrics"), "", nil)
	n := 0.0
	for _, m := range receivedRe.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		n += v
	}
	return n
}

// TestNodeGroupTrafficClosure is SPEC §7 with real edges: groups ga (zone=a: a1, a2) and gb
// (zone=b: b1, b2), node solo in no group; Service web is range-nodegroup, Service api is plain,
// both with an endpoint on every node and one on none. After each cause — an endpoint change,
// a node relabelled into another group, a group's spec.nodes edited, the annotation toggled, a
// group deleted, a node catching up after an outage — every edge's metaserver serves exactly the
// filtered slice, and the edges the cause does not affect receive no message at all. At the end
// the stores on disk hold what the metaservers served.
func TestNodeGroupTrafficClosure(t *testing.T) {
	c := newCloud(t)
	a1 := newEdge(t, c, "a1", "--node-labels", "zone=a")
	a2 := newEdge(t, c, "a2", "--node-labels", "zone=a")
	b1 := newEdge(t, c, "b1", "--node-labels", "zone=b,rack=1")
	b2 := newEdge(t, c, "b2", "--node-labels", "zone=b")
	solo := newEdge(t, c, "solo")
	edges := []*edge{a1, a2, b1, b2, solo}
	all := "a1 a2 b1 b2 none solo"

	group := func(name string, nodes []string, match map[string]string) map[string]any {
		return map[string]any{"apiVersion": "apps.kubeedge.io/v1alpha1", "kind": "NodeGroup", "metadata": map[string]any{"name": name},
			"spec": map[string]any{"nodes": nodes, "matchLabels": match}}
	}
	mustDo(t, http.MethodPost, c.url(groupsPath), group("barrier", nil, nil))
	mustDo(t, http.MethodPost, c.url(groupsPath), group("ga", nil, map[string]string{"zone": "a"}))
	mustDo(t, http.MethodPost, c.url(groupsPath), group("gb", nil, map[string]string{"zone": "b"}))
	mustDo(t, http.MethodPost, c.url(paths["services"]), rangedService("web"))
	mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj("api"))
	mustDo(t, http.MethodPost, c.url(paths["endpointslices"]), topoSlice("web-1", "web", "a1", "a2", "b1", "b2", "solo", "none"))
	mustDo(t, http.MethodPost, c.url(paths["endpointslices"]), topoSlice("api-1", "api", "a1", "a2", "b1", "b2", "solo", "none"))

	// expect waits until every edge serves web-1 as want says (and api-1 whole).
	expect := func(what string, want map[*edge]string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for _, e := range edges {
			for slice, w := range map[string]string{"web-1": want[e], "api-1": all} {
				for got := sliceOn(t, e, slice); got != w; got = sliceOn(t, e, slice) {
					if time.Now().After(deadline) {
						t.Fatalf("%s: %s holds %s = %q, want %q", what, e.name, slice, got, w)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}
	}
	// quiet runs cause and checks that the edges in untouched receive no upsert or delete: it
	// waits for every edge's cursor to pass the cause (and what the controller wrote for it).
	quiet := func(what string, untouched []*edge, cause func()) {
		t.Helper()
		before := map[*edge]float64{}
		for _, e := range untouched {
			before[e] = dataMessages(t, e)
		}
		cause()
		// A NodeGroup that selects nothing is indexed but routed to no node: once every cursor
		// has passed its change, every change before it has been sent.
		var barrier struct {
			Metadata struct{ ResourceVersion string }
		}
		json.Unmarshal(mustDo(t, http.MethodPatch, c.url(groupsPath+"/barrier"),
			fmt.Sprintf(`{"metadata":{"annotations":{"step":%q}}}`, what)), &barrier)
		rev, _ := strconv.ParseInt(barrier.Metadata.ResourceVersion, 10, 64)
		for _, e := range edges {
			var cur float64
			deadline := time.Now().Add(15 * time.Second)
			for cur = metric(t, e.url("/metrics"), "tether_edge_sync_cursor"); cur < float64(rev); cur = metric(t, e.url("/metrics"), "tether_edge_sync_cursor") {
				if time.Now().After(deadline) {
					t.Fatalf("%s: %s's cursor is %v, not past the cloud's revision %d", what, e.name, cur, rev)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		for _, e := range untouched {
			if n := dataMessages(t, e) - before[e]; n != 0 {
				t.Errorf("%s: %s, which it does not affect, received %v messages", what, e.name, n)
			}
		}
	}
	groupOf := func(node string) string {
		var n struct {
			Metadata struct{ Labels map[string]string }
		}
		json.Unmarshal(mustDo(t, http.MethodGet, c.url("/api/v1/nodes/"+node), nil), &n)
		return n.Metadata.Labels[labelGroup]
	}
	status := func(name string) string {
		var g struct {
			Status struct {
				NodeStatuses []struct{ NodeName, ReadyStatus, SelectionStatus, SelectionStatusReason string }
			}
		}
		json.Unmarshal(mustDo(t, http.MethodGet, c.url(groupsPath+"/"+name), nil), &g)
		var out []string
		for _, s := range g.Status.NodeStatuses {
			out = append(out, s.NodeName+":"+s.ReadyStatus+":"+s.SelectionStatus)
		}
		return strings.Join(out, " ")
	}

	expect("groups formed from the labels given at join", map[*edge]string{
		a1: "a1 a2", a2: "a1 a2", b1: "b1 b2", b2: "b1 b2", solo: "solo"})
	for n, g := range map[string]string{"a1": "ga", "a2": "ga", "b1": "gb", "b2": "gb", "solo": ""} {
		if got := groupOf(n); got != g {
			t.Errorf("node %s carries %s=%q, want %q", n, labelGroup, got, g)
		}
	}
	waitFor(t, 10*time.Second, "ga's status lists its ready members", func() bool {
		return status("ga") == "a1:Ready:Succeeded a2:Ready:Succeeded"
	})

	quiet("an endpoint on a1 changes", []*edge{b1, b2, solo}, func() {
		mustDo(t, http.MethodPut, c.url(paths["endpointslices"]+"/web-1"), topoSlice("web-1", "web", "a1'", "a2", "b1", "b2", "solo", "none"))
		expect("an endpoint on a1 changed", map[*edge]string{a1: "a1' a2", a2: "a1' a2", b1: "b1 b2", b2: "b1 b2", solo: "solo"})
	})
	quiet("the endpoint on no node goes", edges, func() {
		mustDo(t, http.MethodPut, c.url(paths["endpointslices"]+"/web-1"), topoSlice("web-1", "web", "a1'", "a2", "b1", "b2", "solo"))
		mustDo(t, http.MethodPut, c.url(paths["endpointslices"]+"/web-1"), topoSlice("web-1", "web", "a1'", "a2", "b1", "b2", "solo", "none"))
	})
	quiet("a younger group claims a1", edges, func() {
		mustDo(t, http.MethodPost, c.url(groupsPath), group("gc", []string{"a1", "ghost"}, nil))
		waitFor(t, 10*time.Second, "gc reports its claims as failed", func() bool {
			return status("gc") == "a1:Ready:Failed ghost:Unknown:Failed"
		})
	})
	quiet("b1 is relabelled into ga", []*edge{solo}, func() {
		mustDo(t, http.MethodPatch, c.url("/api/v1/nodes/b1"), `{"metadata":{"labels":{"zone":"a"}}}`)
		expect("b1 moved to ga", map[*edge]string{a1: "a1' a2 b1", a2: "a1' a2 b1", b1: "a1' a2 b1", b2: "b2", solo: "solo"})
	})
	quiet("gb names solo in spec.nodes", []*edge{a1, a2, b1}, func() {
		mustDo(t, http.MethodPatch, c.url(groupsPath+"/gb"), `{"spec":{"nodes":["solo"]}}`)
		expect("solo joined gb", map[*edge]string{a1: "a1' a2 b1", a2: "a1' a2 b1", b1: "a1' a2 b1", b2: "b2 solo", solo: "b2 solo"})
	})
	waitFor(t, 10*time.Second, "gb's status", func() bool { return status("gb") == "b2:Ready:Succeeded solo:Ready:Succeeded" })
	quiet("web loses its annotation", nil, func() {
		mustDo(t, http.MethodPatch, c.url(paths["services"]+"/web"), `{"metadata":{"annotations":null}}`)
		allNow := "a1' a2 b1 b2 none solo"
		expect("web is plain", map[*edge]string{a1: allNow, a2: allNow, b1: allNow, b2: allNow, solo: allNow})
	})
	quiet("web gets it back", nil, func() {
		mustDo(t, http.MethodPatch, c.url(paths["services"]+"/web"), fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, topologyKey, rangeTopology))
		expect("web is filtered again", map[*edge]string{a1: "a1' a2 b1", a2: "a1' a2 b1", b1: "a1' a2 b1", b2: "b2 solo", solo: "b2 solo"})
	})
	quiet("gb is deleted", []*edge{a1, a2, b1}, func() {
		mustDo(t, http.MethodDelete, c.url(groupsPath+"/gb"), nil)
		expect("gb's members are on their own", map[*edge]string{a1: "a1' a2 b1", a2: "a1' a2 b1", b1: "a1' a2 b1", b2: "b2", solo: "solo"})
	})
	if g := groupOf("b2") + groupOf("solo"); g != "" {
		t.Errorf("after gb was deleted, b2 and solo still carry %s (%q)", labelGroup, g)
	}

	// a2 is away while a1 leaves ga (for gc, which named it all along and now gets it), then
	// again while b1's endpoint changes; each time it catches up from its cursor.
	resets := metric(t, c.url("/metrics"), "tether_cloud_hub_resets_total")
	a2.stop()
	mustDo(t, http.MethodPatch, c.url("/api/v1/nodes/a1"), `{"metadata":{"labels":{"zone":"c"}}}`)
	waitFor(t, 10*time.Second, "a1 moves from ga to gc", func() bool { return groupOf("a1") == "gc" })
	a2.restart(t)
	expect("a2 caught up with a1's move", map[*edge]string{a1: "a1'", a2: "a2 b1", b1: "a2 b1", b2: "b2", solo: "solo"})
	a2.stop()
	mustDo(t, http.MethodPut, c.url(paths["endpointslices"]+"/web-1"), topoSlice("web-1", "web", "a1'", "a2", "b1'", "b2", "solo", "none"))
	a2.restart(t)
	expect("a2 caught up with b1's endpoint", map[*edge]string{a1: "a1'", a2: "a2 b1'", b1: "a2 b1'", b2: "b2", solo: "solo"})
	if r := metric(t, c.url("/metrics"), "tether_cloud_hub_resets_total"); r != resets {
		t.Errorf("a2 was reset (%v resets) instead of catching up from its cursor", r-resets)
	}

	// What the metaservers served is what the stores hold.
	served := map[*edge]string{}
	for _, e := range edges {
		served[e] = sliceOn(t, e, "web-1")
		e.stop()
	}
	for _, e := range edges {
		st, err := edgestore.Open(edgestore.DefaultConfig(filepath.Join(e.dir, "edge.db")), resource.New(), zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := st.Get(resource.StoreKey(resource.Key{Resource: resource.EndpointSlices, Namespace: ns, Name: "web-1"}))
		st.Close()
		if err != nil || rec == nil {
			t.Fatalf("%s: web-1 not in the store: %v", e.name, err)
		}
		if got := endpointNames(t, rec.Object); got != served[e] {
			t.Errorf("%s's store holds web-1 = %q, its metaserver served %q", e.name, got, served[e])
		}
	}
}
