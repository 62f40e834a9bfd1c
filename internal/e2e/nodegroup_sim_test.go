package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/edgehub"
	"github.com/tetherhub/tether/nodegroup"
	"github.com/tetherhub/tether/pki"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/sim"
)

// held is what one simulated edge stores of each key, object bytes included, applying the edge
// store's rules (a message older than the stored one is ignored outside a reset; a reset sweeps
// what it did not name), fed by sim.MemStore.SetOnApply.
type held struct {
	mu        sync.Mutex
	objects   map[string]heldObject
	resetting bool
	seen      map[string]bool
}

type heldObject struct {
	rev uint64
	raw []byte
}

func (h *held) apply(msgs []protocol.Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range msgs {
		switch m := m.(type) {
		case *protocol.Upsert:
			k := resource.StoreKey(m.Key)
			if old, ok := h.objects[k]; ok && old.rev > m.Rev && !h.resetting {
				continue
			}
			h.objects[k] = heldObject{m.Rev, bytes.Clone(m.Object)}
			if h.resetting {
				h.seen[k] = true
			}
		case *protocol.Delete:
			k := resource.StoreKey(m.Key)
			if old, ok := h.objects[k]; ok && old.rev > m.Rev && !h.resetting {
				continue
			}
			delete(h.objects, k)
		case *protocol.ResetBegin:
			h.resetting, h.seen = true, map[string]bool{}
		case *protocol.ResetEnd:
			if h.resetting {
				for k := range h.objects {
					if !h.seen[k] {
						delete(h.objects, k)
					}
				}
				h.resetting = false
			}
		}
	}
}

// slices renders the EndpointSlices held, key → canonical JSON without resourceVersion.
func (h *held) slices(t *testing.T) map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]string{}
	for k, o := range h.objects {
		if strings.HasPrefix(k, resource.Prefix(resource.EndpointSlices, "")) {
			out[k] = canonicalSlice(t, o.raw, nil)
		}
	}
	return out
}

// canonicalSlice is raw without metadata.resourceVersion, and with only the endpoints keep
// accepts (all if keep is nil), endpoints spelled as a list even when empty.
func canonicalSlice(t *testing.T, raw []byte, keep func(node string) bool) string {
	var o map[string]any
	if err := json.Unmarshal(raw, &o); err != nil {
		t.Fatalf("a held slice is not JSON: %v", err)
	}
	delete(o["metadata"].(map[string]any), "resourceVersion")
	eps, _ := o["endpoints"].([]any)
	kept := []any{}
	for _, e := range eps {
		n, _ := e.(map[string]any)["nodeName"].(string)
		if keep == nil || keep(n) {
			kept = append(kept, e)
		}
	}
	o["endpoints"] = kept
	b, _ := json.Marshal(o)
	return string(b)
}

// TestNodeGroupsRandomized drives thousands of random operations through the cloud API of a
// real tether-cloud — endpoints created, changed and deleted, nodes relabelled, groups created,
// edited and deleted, the range-nodegroup annotation toggled — while simulated edges (the real hub
// client) disconnect and reconnect. Then every edge's stored slices must equal SPEC §7's filter
// computed from scratch over the final cloud state (written here independently of package view),
// and the cloud's belonging-to labels must equal the membership computed from the final groups
// and nodes.
func TestNodeGroupsRandomized(t *testing.T) {
	const (
		nEdges = 16
		nOps   = 2500
	)
	c := newCloud(t)
	tok, err := pki.ParseToken(c.token(t, "--any-node", "--ttl", "1h"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hc := edgehub.DefaultConfig()
	hc.Heartbeat, hc.BackoffMax = time.Second, time.Second
	fleet, err := sim.JoinFleet(ctx, sim.FleetConfig{Cloud: []string{c.hub}, Join: "https://" + c.join, Token: tok,
		Nodes: nEdges, Prefix: "sim-", Hub: hc}, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	holds := make([]*held, nEdges)
	for i, e := range fleet.Edges {
		h := &held{objects: map[string]heldObject{}}
		holds[i] = h
		e.Store.SetOnApply(h.apply)
		e.Start(ctx)
	}
	defer func() {
		for _, e := range fleet.Edges {
			e.Stop()
		}
	}()

	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	seed := rng.Int63()
	rng.Seed(seed)
	t.Logf("seed %d", seed)
	pick := func(n int) int { return rng.Intn(n) }
	nodeName := func(i int) string { return fleet.Edges[i].Name }
	zones := []string{"z0", "z1", "z2", "z3"}
	services := []string{"s0", "s1", "s2"}
	groups := []string{"g0", "g1", "g2"}
	sliceNames := []string{"s0-a", "s0-b", "s1-a", "s1-b", "s2-a", "s2-b"}

	// try sends a request; 404s and 409s are the expected outcomes of random operations.
	try := func(method, path string, body any) {
		t.Helper()
		var b []byte
		switch v := body.(type) {
		case nil:
		case string:
			b = []byte(v)
		default:
			b = mustJSON(v)
		}
		ct := "application/json"
		if method == http.MethodPatch {
			ct = "application/merge-patch+json"
		}
		if code, out := do(t, method, c.url(path), ct, b); code/100 != 2 && code != 404 && code != 409 {
			t.Fatalf("%s %s: %d %s", method, path, code, out)
		}
	}
	minEndpoints := 0
	endpoints := func() []any {
		var eps []any
		for range minEndpoints + pick(6) {
			ep := map[string]any{"addresses": []string{fmt.Sprintf("10.%d.%d.%d", pick(4), pick(250), pick(250))}}
			if pick(8) > 0 {
				ep["nodeName"] = nodeName(pick(nEdges))
			}
			eps = append(eps, ep)
		}
		return eps
	}
	putNamedSlice := func(name string) {
		m := meta(name)
		m["labels"] = map[string]string{"kubernetes.io/service-name": strings.Split(name, "-")[0]}
		obj := map[string]any{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": m,
			"addressType": "IPv4", "endpoints": endpoints()}
		code, _ := do(t, http.MethodPut, c.url(paths["endpointslices"]+"/"+name), "application/json", mustJSON(obj))
		if code == 404 {
			try(http.MethodPost, paths["endpointslices"], obj)
		}
	}
	putSlice := func() { putNamedSlice(sliceNames[pick(len(sliceNames))]) }
	for _, s := range services {
		try(http.MethodPost, paths["services"], rangedService(s))
	}
	for range 6 {
		putSlice()
	}
	ops := []struct {
		weight int
		run    func()
	}{
		{30, putSlice},
		{5, func() { try(http.MethodDelete, paths["endpointslices"]+"/"+sliceNames[pick(len(sliceNames))], nil) }},
		{20, func() { // relabel a node
			var zone any
			if z := pick(len(zones) + 1); z < len(zones) {
				zone = zones[z]
			}
			try(http.MethodPatch, "/api/v1/nodes/"+nodeName(pick(nEdges)), map[string]any{"metadata": map[string]any{"labels": map[string]any{"zone": zone}}})
		}},
		{10, func() { // create or edit a group: a zone, and a few nodes by name
			g := groups[pick(len(groups))]
			var named []string
			for range pick(3) {
				named = append(named, nodeName(pick(nEdges)))
			}
			spec := map[string]any{"nodes": named, "matchLabels": map[string]string{"zone": zones[pick(len(zones))]}}
			code, _ := do(t, http.MethodPatch, c.url(groupsPath+"/"+g), "application/merge-patch+json", mustJSON(map[string]any{"spec": spec}))
			if code == 404 {
				try(http.MethodPost, groupsPath, map[string]any{"apiVersion": "apps.kubeedge.io/v1alpha1", "kind": "NodeGroup",
					"metadata": map[string]any{"name": g}, "spec": spec})
			}
		}},
		{3, func() { try(http.MethodDelete, groupsPath+"/"+groups[pick(len(groups))], nil) }},
		{6, func() { // toggle the annotation
			var v any
			if pick(2) == 0 {
				v = rangeTopology
			}
			try(http.MethodPatch, paths["services"]+"/"+services[pick(len(services))], map[string]any{"metadata": map[string]any{"annotations": map[string]any{topologyKey: v}}})
		}},
		{4, func() { // an edge goes away or comes back
			e := fleet.Edges[pick(nEdges)]
			if pick(2) == 0 {
				e.Stop()
			} else {
				e.Start(ctx)
			}
		}},
	}
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	start := time.Now()
	for range nOps {
		n := pick(total)
		for _, o := range ops {
			if n < o.weight {
				o.run()
				break
			}
			n -= o.weight
		}
	}
	// A last stretch with half the edges away and only membership changing (no slice changes,
	// which would re-send whole slices and hide a catch-up rule that misses a move), over
	// filtered slices with many endpoints.
	minEndpoints = 4
	for _, s := range services {
		try(http.MethodPatch, paths["services"]+"/"+s, map[string]any{"metadata": map[string]any{"annotations": map[string]any{topologyKey: rangeTopology}}})
	}
	for _, name := range sliceNames {
		putNamedSlice(name)
	}
	for i, e := range fleet.Edges {
		if i%2 == 0 {
			e.Stop()
		}
	}
	for range nOps / 20 {
		if pick(3) == 0 {
			ops[3].run() // group edit
		} else {
			ops[2].run() // relabel
		}
	}
	opsDone := time.Now()
	t.Logf("%d operations in %s", nOps, opsDone.Sub(start).Round(time.Millisecond))
	for _, e := range fleet.Edges {
		e.Start(ctx)
	}

	// expected computes, from the cloud's final state, the membership and every node's slices.
	type list struct {
		Metadata struct{ ResourceVersion string }
		Items    []json.RawMessage
	}
	get := func(path string) list {
		var l list
		if err := json.Unmarshal(mustDo(t, http.MethodGet, c.url(path), nil), &l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	type objMeta struct {
		Metadata struct {
			Name              string
			CreationTimestamp time.Time
			Labels            map[string]string
			Annotations       map[string]string
		}
	}
	filtered := 0 // slices held in a form that differs from the stored slice, at the last check
	check := func() (problems []string) {
		filtered = 0
		var nodes []nodegroup.Node
		labelled := map[string]string{}
		for _, raw := range get("/api/v1/nodes").Items {
			var n objMeta
			json.Unmarshal(raw, &n)
			nodes = append(nodes, nodegroup.Node{Name: n.Metadata.Name, Labels: n.Metadata.Labels})
			if g := n.Metadata.Labels[labelGroup]; g != "" {
				labelled[n.Metadata.Name] = g
			}
		}
		var gs []nodegroup.Group
		for _, raw := range get(groupsPath).Items {
			var g struct {
				objMeta
				Spec struct {
					Nodes       []string
					MatchLabels map[string]string
				}
			}
			json.Unmarshal(raw, &g)
			gs = append(gs, nodegroup.Group{Name: g.Metadata.Name, Created: g.Metadata.CreationTimestamp, Nodes: g.Spec.Nodes, MatchLabels: g.Spec.MatchLabels})
		}
		if want := nodegroup.Compute(gs, nodes).Of; fmt.Sprint(want) != fmt.Sprint(labelled) {
			problems = append(problems, fmt.Sprintf("belonging-to labels %v, membership %v", labelled, want))
		}
		ranged := map[string]bool{}
		for _, raw := range get(paths["services"]).Items {
			var s objMeta
			json.Unmarshal(raw, &s)
			ranged[s.Metadata.Name] = s.Metadata.Annotations[topologyKey] == rangeTopology
		}
		slices := map[string][]byte{}
		for _, raw := range get(paths["endpointslices"]).Items {
			var s objMeta
			json.Unmarshal(raw, &s)
			slices[s.Metadata.Name] = raw
		}
		for i, e := range fleet.Edges {
			want := map[string]string{}
			for name, raw := range slices {
				var s objMeta
				json.Unmarshal(raw, &s)
				key := resource.StoreKey(resource.Key{Resource: resource.EndpointSlices, Namespace: ns, Name: name})
				var keep func(string) bool
				if ranged[s.Metadata.Labels["kubernetes.io/service-name"]] {
					mine := labelled[e.Name]
					keep = func(n string) bool {
						if mine == "" {
							return n == e.Name
						}
						return n != "" && labelled[n] == mine
					}
				}
				want[key] = canonicalSlice(t, raw, keep)
				if want[key] != canonicalSlice(t, raw, nil) {
					filtered++
				}
			}
			got := holds[i].slices(t)
			for k, w := range want {
				if got[k] != w {
					problems = append(problems, fmt.Sprintf("%s holds %s as\n  %s\nwant\n  %s", e.Name, k, got[k], w))
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					problems = append(problems, fmt.Sprintf("%s holds %s, which does not exist", e.Name, k))
				}
			}
		}
		sort.Strings(problems)
		return problems
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		problems := check()
		if len(problems) == 0 {
			break
		}
		if time.Now().After(deadline) {
			if len(problems) > 10 {
				problems = append(problems[:10], fmt.Sprintf("… and %d more", len(problems)-10))
			}
			t.Fatalf("seed %d: the edges did not converge:\n%s", seed, strings.Join(problems, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("converged %s after the last operation; %d of the slices held are filtered; %v resets, %v catch-up messages",
		time.Since(opsDone).Round(time.Millisecond), filtered, metric(t, c.url("/metrics"), "tether_cloud_hub_resets_total"),
		metric(t, c.url("/metrics"), "tether_cloud_hub_catchup_messages_total"))
	if filtered == 0 {
		t.Error("no edge holds a filtered slice: the test exercises nothing of SPEC §7")
	}
}
