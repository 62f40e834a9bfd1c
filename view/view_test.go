package view

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
	"github.com/tetherhub/tether/store/boltstore"
)

// TestRandomChangesConverge drives random creates, updates and deletes of every routed kind
// through a real store and index, node groups included: Nodes changing group, Services gaining
// and losing the range-nodegroup annotation, slices with endpoints on every node (and on none),
// edited one endpoint at a time or wholesale. Followers per node apply the rules as the hub does:
// one live, as each change happens (Affected + Visible), and some that catch up later from a
// cursor (AffectedOn over the remembered changes, against the final index, + Visible). Every one
// must end holding exactly Full, each object in the form Visible gives (filtered slices included).
func TestRandomChangesConverge(t *testing.T) {
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
	nodes := []string{"n1", "n2", "n3", "n4", "n5"}
	var mu sync.Mutex
	live := map[string]map[string]string{} // node → key → form held
	for _, n := range nodes {
		live[n] = map[string]string{}
	}
	var changes []Change
	var handled int64 // last revision the subscriber finished, guarded by mu
	cond := sync.NewCond(&mu)
	ix.Subscribe(func(u index.Update) {
		mu.Lock()
		defer mu.Unlock()
		defer cond.Broadcast()
		handled = u.Rev()
		if !Routed(u) {
			return // as the hub: status-only changes are neither sent nor remembered
		}
		c := ChangeOf(u)
		changes = append(changes, c)
		Affected(c, u.Snap, func(node, key string) {
			for _, n := range nodes {
				if node == AllNodes || node == n {
					setFrom(live[n], u.Snap, n, key)
				}
			}
		})
	})
	go ix.Run(ctx)
	<-ix.Ready()

	rng := rand.New(rand.NewSource(1))
	names := []string{"a", "b", "c"}
	pick := func(s []string) string { return s[rng.Intn(len(s))] }
	groups := []string{"g1", "g2", ""}
	epNodes := append(append([]string{}, nodes...), "ghost", "") // ghost never exists
	endpoint := func() map[string]any {
		e := map[string]any{"addresses": []string{fmt.Sprintf("10.0.%d.%d", rng.Intn(4), rng.Intn(250))}}
		if n := pick(epNodes); n != "" {
			e["nodeName"] = n
		}
		return e
	}
	objFor := func(res, name string) []byte {
		var o map[string]any
		md := map[string]any{"name": name, "namespace": "default"}
		switch res {
		case resource.Nodes:
			md = map[string]any{"name": name}
			if g := pick(groups); g != "" {
				md["labels"] = map[string]string{index.LabelGroup: g}
			}
			o = map[string]any{"spec": map[string]any{}}
		case resource.Services:
			if rng.Intn(3) > 0 {
				md["annotations"] = map[string]string{index.AnnotationTopology: index.TopologyRangeNodeGroup}
			}
			o = map[string]any{"spec": map[string]any{"ports": []any{map[string]any{"port": 80}}}}
		case resource.EndpointSlices:
			md["labels"] = map[string]string{index.LabelServiceName: pick(names)}
			var eps []any
			for range rng.Intn(6) {
				eps = append(eps, endpoint())
			}
			o = map[string]any{"addressType": "IPv4", "endpoints": eps}
		case resource.Pods:
			o = map[string]any{"spec": map[string]any{"nodeName": pick(append(nodes, "")),
				"volumes":    []any{map[string]any{"configMap": map[string]any{"name": pick(names)}}},
				"containers": []any{map[string]any{"envFrom": []any{map[string]any{"secretRef": map[string]any{"name": pick(names)}}}}}}}
		case resource.Devices:
			o = map[string]any{"spec": map[string]any{"nodeName": pick(nodes), "deviceModelRef": map[string]any{"name": pick(names)}}}
		default:
			o = map[string]any{"data": map[string]any{"v": rng.Int()}}
		}
		o["metadata"] = md
		raw, _ := json.Marshal(o)
		return raw
	}
	// editEndpoint changes one endpoint of a stored slice (or adds or removes one), leaving the
	// rest as it is: the change whose reach is narrower than every node.
	editEndpoint := func(raw []byte) []byte {
		var o map[string]any
		json.Unmarshal(raw, &o)
		eps, _ := o["endpoints"].([]any)
		switch i := rng.Intn(len(eps) + 1); {
		case i == len(eps):
			eps = append(eps, endpoint())
		case rng.Intn(3) == 0:
			eps = append(eps[:i], eps[i+1:]...)
		default:
			eps[i] = endpoint()
		}
		o["endpoints"] = eps
		out, _ := json.Marshal(o)
		return out
	}
	kinds := []string{resource.Pods, resource.ConfigMaps, resource.Secrets, resource.Services, resource.EndpointSlices,
		resource.EndpointSlices, resource.EndpointSlices, resource.Devices, resource.DeviceModels, resource.Nodes}
	step := func() {
		res, name := pick(kinds), pick(names)
		key := resource.StoreKey(resource.Key{Resource: res, Namespace: "default", Name: name})
		if res == resource.Nodes {
			name = pick(nodes[1:]) // n1 is never deleted
			key = resource.StoreKey(resource.Key{Resource: res, Name: name})
		}
		// Objects mostly exist, so that the state stays rich; deletes still come often.
		kv, err := b.Get(ctx, key)
		switch op := rng.Intn(20); {
		case err == store.ErrNotFound:
			_, err = b.Create(ctx, key, objFor(res, name))
		case err != nil:
		case op < 14 && res == resource.EndpointSlices:
			_, err = b.Update(ctx, key, editEndpoint(kv.Value), 0)
		case op < 17:
			_, err = b.Update(ctx, key, objFor(res, name), 0)
		default:
			_, _, err = b.Delete(ctx, key, 0)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Create(ctx, "/nodes/n1", objFor(resource.Nodes, "n1")); err != nil {
		t.Fatal(err)
	}
	// check compares every follower with Full at the current revision: the live ones, and ones
	// caught up from each cursor (holding the full view as of then).
	filteredSeen := 0
	now := func() index.Snapshot {
		t.Helper()
		rev, _ := b.Rev(ctx)
		snap, err := ix.WaitFor(ctx, rev)
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	check := func(past []index.Snapshot) {
		t.Helper()
		snap := now()
		rev := snap.Rev
		mu.Lock()
		defer mu.Unlock()
		// The index publishes a snapshot before it hands the change to subscribers.
		for handled < rev {
			cond.Wait()
		}
		for _, n := range nodes {
			want := map[string]string{}
			for _, o := range Full(snap, n) {
				setFrom(want, snap, n, o.StoreKey)
				if _, raw := Visible(snap, n, o.StoreKey); o.Slice != nil && string(raw) != string(o.Raw) {
					filteredSeen++
				}
			}
			if got := dump(live[n]); got != dump(want) {
				t.Fatalf("at %d, node %s live view\n got %s\nwant %s", rev, n, got, dump(want))
			}
			for _, at := range past {
				cursor := at.Rev
				caught := map[string]string{}
				for _, o := range Full(at, n) {
					setFrom(caught, at, n, o.StoreKey)
				}
				for _, c := range changes {
					if c.Rev > cursor {
						AffectedOn(c, snap, n, func(key string) { setFrom(caught, snap, n, key) })
					}
				}
				if got := dump(caught); got != dump(want) {
					t.Fatalf("at %d, node %s caught up from %d\n got %s\nwant %s", rev, n, cursor, got, dump(want))
				}
			}
		}
	}
	// Short rounds with many cursors: a change a rule misses is caught before a later change
	// happens to cover it.
	for round := 0; round < 40; round++ {
		var past []index.Snapshot // index snapshots are immutable: the state as of a cursor
		for i := 0; i < 60; i++ {
			if i%6 == 0 || i > 55 {
				past = append(past, now())
			}
			step()
		}
		check(past)
	}
	if filteredSeen == 0 {
		t.Error("no node ever held a filtered slice: the test exercises nothing of SPEC §7")
	}
}

// setFrom records what node holds of key: the form Visible gives, without its resourceVersion
// (an edge that was not re-sent an unchanged form keeps the older version, which is allowed).
func setFrom(view map[string]string, snap index.Snapshot, node, key string) {
	if o, raw := Visible(snap, node, key); o != nil {
		view[key] = withoutVersion(raw)
	} else {
		delete(view, key)
	}
}

func withoutVersion(raw []byte) string {
	var o map[string]any
	if err := json.Unmarshal(raw, &o); err != nil {
		return "undecodable: " + string(raw)
	}
	if md, ok := o["metadata"].(map[string]any); ok {
		delete(md, "resourceVersion")
	}
	out, _ := json.Marshal(o)
	return string(out)
}

func dump(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, k+"="+m[k])
	}
	return "\n  " + strings.Join(out, "\n  ")
}
