package view

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store/boltstore"
)

// TestGroupRulesReachOnlyTheAffected checks the SPEC §7 rules pair by pair: each change names
// exactly the (node, key) pairs whose form it altered, and the forms are what the spec says.
// Groups g-a {a1, a2} and g-b {b1, b2}, node solo in no group; Service web is range-nodegroup
// with slice web-1 holding an endpoint on every node and one on none; Service api is plain.
func TestGroupRulesReachOnlyTheAffected(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := boltstore.Open(boltstore.DefaultConfig(filepath.Join(t.TempDir(), "c.db")), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ix, err := index.New(index.DefaultConfig(), b, resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var emitted []string
	var seen int64 // the last revision the subscriber handled
	ix.Subscribe(func(u index.Update) {
		mu.Lock()
		defer mu.Unlock()
		seen = u.Rev()
		Affected(ChangeOf(u), u.Snap, func(node, key string) {
			emitted = append(emitted, node+" "+strings.TrimPrefix(key, "/"))
		})
	})
	go ix.Run(ctx)
	<-ix.Ready()

	node := func(name, group string) []byte {
		md := map[string]any{"name": name}
		if group != "" {
			md["labels"] = map[string]string{index.LabelGroup: group}
		}
		return mustJSON(map[string]any{"metadata": md, "spec": map[string]any{}})
	}
	service := func(name string, ranged bool) []byte {
		md := map[string]any{"name": name, "namespace": "ns"}
		if ranged {
			md["annotations"] = map[string]string{index.AnnotationTopology: index.TopologyRangeNodeGroup}
		}
		return mustJSON(map[string]any{"metadata": md, "spec": map[string]any{}})
	}
	// slice has one endpoint per "node=address" pair; an empty node is an endpoint on no node.
	slice := func(name, svc string, eps ...string) []byte {
		var list []any
		for _, e := range eps {
			n, addr, _ := strings.Cut(e, "=")
			ep := map[string]any{"addresses": []string{addr}}
			if n != "" {
				ep["nodeName"] = n
			}
			list = append(list, ep)
		}
		return mustJSON(map[string]any{"addressType": "IPv4", "endpoints": list, "metadata": map[string]any{
			"name": name, "namespace": "ns", "labels": map[string]string{index.LabelServiceName: svc}}})
	}
	put := func(key string, value []byte) {
		t.Helper()
		if _, err := b.Update(ctx, key, value, 0); err != nil {
			if _, err := b.Create(ctx, key, value); err != nil {
				t.Fatal(err)
			}
		}
	}
	settle := func() index.Snapshot {
		t.Helper()
		rev, _ := b.Rev(ctx)
		snap, err := ix.WaitFor(ctx, rev)
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	// expect makes one change and checks the pairs it names (after the index handed it over).
	// handled waits until the subscriber has handled everything up to snap: it runs after the
	// snapshot is published.
	handled := func(what string, snap index.Snapshot) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			done := seen >= snap.Rev
			mu.Unlock()
			if done {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the subscriber never handled revision %d", what, snap.Rev)
			}
			time.Sleep(time.Millisecond)
		}
	}
	expect := func(what, key string, value []byte, want ...string) index.Snapshot {
		t.Helper()
		// Earlier changes must be handled before the slate is wiped, or their pairs land on it.
		handled(what+" (earlier changes)", settle())
		mu.Lock()
		emitted = nil
		mu.Unlock()
		put(key, value)
		snap := settle()
		// Then compare once, after the change was handled (so "nothing named" is checked after
		// the fact, not before).
		handled(what, snap)
		mu.Lock()
		got := append([]string(nil), emitted...)
		mu.Unlock()
		sort.Strings(got)
		got = slices.Compact(got) // a pair named twice is one pair
		sort.Strings(want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: emitted\n  %v\nwant\n  %v", what, got, want)
		}
		return snap
	}
	for n, g := range map[string]string{"a1": "g-a", "a2": "g-a", "b1": "g-b", "b2": "g-b", "solo": ""} {
		put("/nodes/"+n, node(n, g))
	}
	put("/services/ns/web", service("web", true))
	put("/services/ns/api", service("api", false))
	web1 := "/endpointslices.discovery.k8s.io/ns/web-1"
	api1 := "/endpointslices.discovery.k8s.io/ns/api-1"
	eps := []string{"a1=10.0.0.1", "a2=10.0.0.2", "b1=10.0.0.3", "b2=10.0.0.4", "solo=10.0.0.5", "=10.0.0.6"}
	put(web1, slice("web-1", "web", eps...))
	put(api1, slice("api-1", "api", eps...))
	snap := settle()

	addrs := func(snap index.Snapshot, n, key string) string {
		_, raw := Visible(snap, n, key)
		var s struct {
			Endpoints []struct{ Addresses []string }
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range s.Endpoints {
			out = append(out, e.Addresses...)
		}
		return strings.Join(out, ",")
	}
	forms := map[string]string{
		"a1": "10.0.0.1,10.0.0.2", "a2": "10.0.0.1,10.0.0.2", "b1": "10.0.0.3,10.0.0.4", "b2": "10.0.0.3,10.0.0.4",
		"solo": "10.0.0.5", "stranger": "",
	}
	for n, want := range forms {
		if got := addrs(snap, n, web1); got != want {
			t.Errorf("%s holds web-1 with %q, want %q", n, got, want)
		}
		if got := addrs(snap, n, api1); got != "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5,10.0.0.6" {
			t.Errorf("%s holds the plain slice api-1 with %q", n, got)
		}
	}
	_, f1 := Visible(snap, "a1", web1)
	_, f2 := Visible(snap, "a2", web1)
	if &f1[0] != &f2[0] {
		t.Error("a1 and a2 hold separately encoded copies of one form; it must be encoded once and shared")
	}

	expect("an endpoint on a1 changes", web1, slice("web-1", "web", "a1=10.0.1.1", "a2=10.0.0.2", "b1=10.0.0.3", "b2=10.0.0.4", "solo=10.0.0.5", "=10.0.0.6"),
		"a1 endpointslices.discovery.k8s.io/ns/web-1", "a2 endpointslices.discovery.k8s.io/ns/web-1")
	expect("an endpoint on solo goes", web1, slice("web-1", "web", "a1=10.0.1.1", "a2=10.0.0.2", "b1=10.0.0.3", "b2=10.0.0.4", "=10.0.0.6"),
		"solo endpointslices.discovery.k8s.io/ns/web-1")
	expect("an endpoint on no node goes", web1, slice("web-1", "web", "a1=10.0.1.1", "a2=10.0.0.2", "b1=10.0.0.3", "b2=10.0.0.4"))
	expect("an endpoint on b1 comes back to solo", web1, slice("web-1", "web", "a1=10.0.1.1", "a2=10.0.0.2", "b1=10.0.0.3", "b2=10.0.0.4", "solo=10.0.0.5"),
		"solo endpointslices.discovery.k8s.io/ns/web-1")
	expect("the plain slice changes", api1, slice("api-1", "api", "a1=10.0.9.9"), "* endpointslices.discovery.k8s.io/ns/api-1")
	snap = expect("b2 moves to g-a", "/nodes/b2", node("b2", "g-a"),
		"b2 nodes/b2", "b2 endpointslices.discovery.k8s.io/ns/web-1",
		"a1 endpointslices.discovery.k8s.io/ns/web-1", "a2 endpointslices.discovery.k8s.io/ns/web-1", "b1 endpointslices.discovery.k8s.io/ns/web-1")
	if got := addrs(snap, "a1", web1); got != "10.0.1.1,10.0.0.2,10.0.0.4" {
		t.Errorf("after b2 joined g-a, a1 holds %q", got)
	}
	if got := addrs(snap, "b1", web1); got != "10.0.0.3" {
		t.Errorf("after b2 left g-b, b1 holds %q", got)
	}
	snap = expect("b1 leaves every group", "/nodes/b1", node("b1", ""), "b1 nodes/b1", "b1 endpointslices.discovery.k8s.io/ns/web-1")
	if got := addrs(snap, "b1", web1); got != "10.0.0.3" {
		t.Errorf("b1, in no group, holds %q", got)
	}
	expect("web loses the annotation", "/services/ns/web", service("web", false),
		"* services/ns/web", "* endpointslices.discovery.k8s.io/ns/web-1")
	expect("web gets it back", "/services/ns/web", service("web", true),
		"* services/ns/web", "* endpointslices.discovery.k8s.io/ns/web-1")
	expect("a label on solo changes, not its group", "/nodes/solo",
		mustJSON(map[string]any{"metadata": map[string]any{"name": "solo", "labels": map[string]string{"zone": "z"}}}), "solo nodes/solo")

	// A slice whose Service does not exist is held by no node (it could not be filtered as its
	// Service will ask); the Service's coming and going name it for every node. (b2 is in g-a now.)
	late1 := "/endpointslices.discovery.k8s.io/ns/late-1"
	snap = expect("a slice comes before its Service", late1, slice("late-1", "late", eps...), "* endpointslices.discovery.k8s.io/ns/late-1")
	held := func(snap index.Snapshot, n string) bool {
		for _, o := range Full(snap, n) {
			if o.StoreKey == late1 {
				return true
			}
		}
		return false
	}
	if o, raw := Visible(snap, "a1", late1); o != nil || raw != nil || held(snap, "a1") {
		t.Fatalf("a1 holds a slice whose Service does not exist: %s", raw)
	}
	snap = expect("its Service comes", "/services/ns/late", service("late", true),
		"* services/ns/late", "* endpointslices.discovery.k8s.io/ns/late-1")
	if got := addrs(snap, "a1", late1); got != "10.0.0.1,10.0.0.2,10.0.0.4" || !held(snap, "a1") {
		t.Errorf("once its Service came, a1 holds late-1 with %q (in its full view: %v)", got, held(snap, "a1"))
	}
	handled("the Service's deletion (earlier changes)", settle())
	mu.Lock()
	emitted = nil
	mu.Unlock()
	if _, _, err := b.Delete(ctx, "/services/ns/late", 0); err != nil {
		t.Fatal(err)
	}
	snap = settle()
	handled("the Service's deletion", snap)
	mu.Lock()
	got := slices.Sorted(slices.Values(emitted))
	mu.Unlock()
	if want := []string{"* endpointslices.discovery.k8s.io/ns/late-1", "* services/ns/late"}; !slices.Equal(slices.Compact(got), want) {
		t.Fatalf("the Service's deletion named %v, want %v", got, want)
	}
	if o, raw := Visible(snap, "a1", late1); o != nil || raw != nil || held(snap, "a1") {
		t.Fatalf("a1 holds the slice of a deleted Service: %s", raw)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
