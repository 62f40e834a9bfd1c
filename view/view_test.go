package view

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
	"github.com/tetherhub/tether/store/boltstore"
)

// TestRandomChangesConverge drives random creates, updates and deletes of every routed kind
// through a real store and index. Two followers per node apply the rules: one live, as each
// change happens (Affected + Visible), and one that catches up later from a random cursor
// (AffectedOn over the remembered changes + Visible). Both must end equal to Full.
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
	nodes := []string{"n1", "n2", "n3"}
	var mu sync.Mutex
	live := map[string]map[string]int64{} // node → key → ModRev held
	for _, n := range nodes {
		live[n] = map[string]int64{}
	}
	var changes []Change
	ix.Subscribe(func(u index.Update) {
		mu.Lock()
		defer mu.Unlock()
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
	objFor := func(res, name string) []byte {
		var o map[string]any
		switch res {
		case resource.Pods:
			o = map[string]any{"spec": map[string]any{"nodeName": pick(append(nodes, "")),
				"volumes":    []any{map[string]any{"configMap": map[string]any{"name": pick(names)}}},
				"containers": []any{map[string]any{"envFrom": []any{map[string]any{"secretRef": map[string]any{"name": pick(names)}}}}}}}
		case resource.Devices:
			o = map[string]any{"spec": map[string]any{"nodeName": pick(nodes), "deviceModelRef": map[string]any{"name": pick(names)}}}
		default:
			o = map[string]any{"data": map[string]any{"v": rng.Int()}}
		}
		o["metadata"] = map[string]any{"name": name, "namespace": "default"}
		raw, _ := json.Marshal(o)
		return raw
	}
	kinds := []string{resource.Pods, resource.ConfigMaps, resource.Secrets, resource.Services, resource.EndpointSlices, resource.Devices, resource.DeviceModels}
	var cursor int64 = -1
	for i := 0; i < 1500; i++ {
		res, name := pick(kinds), pick(names)
		key := resource.StoreKey(resource.Key{Resource: res, Namespace: "default", Name: name})
		var err error
		switch rng.Intn(3) {
		case 0:
			_, err = b.Create(ctx, key, objFor(res, name))
		case 1:
			_, err = b.Update(ctx, key, objFor(res, name), 0)
		case 2:
			_, _, err = b.Delete(ctx, key, 0)
		}
		if err != nil && err != store.ErrExists && err != store.ErrNotFound {
			t.Fatal(err)
		}
		if i == 700 {
			cursor, _ = b.Rev(ctx)
		}
	}
	rev, _ := b.Rev(ctx)
	snap, err := ix.WaitFor(ctx, rev)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, n := range nodes {
		want := map[string]int64{}
		for _, o := range Full(snap, n) {
			want[o.StoreKey] = o.ModRev
		}
		if got := dump(live[n]); got != dump(want) {
			t.Errorf("node %s live view\n got %s\nwant %s", n, got, dump(want))
		}
		// A follower that stopped at the cursor holds the full view as of then; catch it up.
		caught := map[string]int64{}
		for _, o := range Full(snapAt(t, b, cursor), n) {
			caught[o.StoreKey] = o.ModRev
		}
		for _, c := range changes {
			if c.Rev > cursor {
				AffectedOn(c, snap, n, func(key string) { setFrom(caught, snap, n, key) })
			}
		}
		if got := dump(caught); got != dump(want) {
			t.Errorf("node %s caught-up view\n got %s\nwant %s", n, got, dump(want))
		}
		if len(want) == 0 {
			t.Errorf("node %s has an empty view: the test exercises nothing", n)
		}
	}
}

func setFrom(view map[string]int64, snap index.Snapshot, node, key string) {
	if o := Visible(snap, node, key); o != nil {
		view[key] = o.ModRev
	} else {
		delete(view, key)
	}
}

// snapAt rebuilds an index of the store as it was at rev, by replaying its history into a
// second store. Views are compared by key, so the second store's own revisions do not matter.
func snapAt(t *testing.T, b store.Backend, rev int64) index.Snapshot {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tmp, err := boltstore.Open(boltstore.DefaultConfig(filepath.Join(t.TempDir(), "at.db")), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Close()
	ch, err := b.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := false
	for resp := range ch {
		for _, ev := range resp.Events {
			if ev.Rev() > rev {
				done = true
				break
			}
			if ev.Type == store.Delete {
				tmp.Delete(ctx, ev.KV.Key, 0)
			} else if _, err := tmp.Update(ctx, ev.KV.Key, ev.KV.Value, 0); err != nil {
				tmp.Create(ctx, ev.KV.Key, ev.KV.Value)
			}
		}
		if done {
			break
		}
	}
	ix, err := index.New(index.Config{}, tmp, resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	go ix.Run(ctx)
	<-ix.Ready()
	return ix.Snapshot()
}

func dump(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return fmt.Sprint(keys)
}
