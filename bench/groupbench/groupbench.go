package groupbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/bench/hubbench"
	"github.com/tetherhub/tether/edgehub"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/sim"
)

const (
	labelGroup    = "apps.kubeedge.io/belonging-to"
	topologyKey   = "apps.kubeedge.io/service-topology"
	rangeTopology = "range-nodegroup"
	namespace     = "bench"
)

// sizing is one run's shape.
type sizing struct {
	nodes, groups, slices, trials int
}

func sizeOf(size string) (sizing, error) {
	switch size {
	case "small": // a quick check of the benchmark itself
		return sizing{nodes: 60, groups: 6, slices: 3, trials: 5}, nil
	case "default":
		return sizing{nodes: 1000, groups: 10, slices: 10, trials: 20}, nil
	case "full":
		return sizing{nodes: 5000, groups: 50, slices: 50, trials: 20}, nil
	}
	return sizing{}, fmt.Errorf("groupbench: unknown size %q (small, default, full)", size)
}

// Run measures node groups with tether-cloud from bin and prints each figure to w as it is found.
func Run(ctx context.Context, bin string, size string, w io.Writer) error {
	sz, err := sizeOf(size)
	if err != nil {
		return err
	}
	emit := func(r hubbench.Result) { fmt.Fprintln(w, hubbench.Format(r)) }
	dir, err := os.MkdirTemp("", "groupbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c, err := sim.StartCloud(bin, dir, "--progress-interval", "1s")
	if err != nil {
		return err
	}
	defer c.Stop()
	b := &bench{ctx: ctx, c: c, api: c.URL(""), sz: sz, variant: map[[3]any]int{}}
	if err := b.setUp(); err != nil {
		return err
	}
	defer b.stop()
	for _, ranged := range []bool{true, false} {
		if err := b.endpointChange(ranged, emit); err != nil {
			return err
		}
	}
	return b.relabel(emit)
}

type bench struct {
	ctx  context.Context
	c    *sim.Cloud
	api  string
	sz   sizing
	f    *sim.Fleet
	stop func()
	rec  *recorder
	// group of each node (by fleet index), as the benchmark last set it
	group []int
	// nodes of each slice (by fleet index), in endpoint order
	sliceNodes [][]int
	barrierN   int
	// address variant of each endpoint, by service, slice and index
	variant map[[3]any]int
}

// recorder sees every batch each simulated edge commits.
type recorder struct {
	mu       sync.Mutex
	data     []int             // upserts and deletes per node since reset
	key      string            // the key watched for ("" for none)
	at       []time.Time       // when each node first committed it since reset
	atRev    []uint64          // and the revision it came with
	received int               // nodes with at least one data message since reset
	web      []map[string]held // per node, the web slices it holds
}

type held struct {
	rev uint64
	raw []byte
}

func (r *recorder) hook(i int) func([]protocol.Message) {
	return func(msgs []protocol.Message) {
		now := time.Now()
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, m := range msgs {
			var key string
			var rev uint64
			switch m := m.(type) {
			case *protocol.Upsert:
				key, rev = m.Key.Name, m.Rev
				if strings.HasPrefix(key, "web-") && r.web[i][key].rev <= rev {
					r.web[i][key] = held{rev, bytes.Clone(m.Object)}
				}
			case *protocol.Delete:
				key, rev = m.Key.Name, m.Rev
			default:
				continue
			}
			if r.data[i] == 0 {
				r.received++
			}
			r.data[i]++
			// The watched key changes only by the measured change after reset, so its first
			// upsert is that change; its revision is checked by the waiter.
			if key == r.key && r.at[i].IsZero() {
				r.at[i], r.atRev[i] = now, rev
			}
		}
	}
}

// reset starts a measurement: counts from zero, watching key.
func (r *recorder) reset(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.data)
	clear(r.at)
	clear(r.atRev)
	r.received, r.key = 0, key
}

func (b *bench) request(method, path string, body any) ([]byte, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	ct := "application/json"
	if method == http.MethodPatch {
		ct = "application/merge-patch+json"
	}
	if body == nil {
		raw = nil
	}
	return sim.Request(b.api, method, path, ct, raw)
}

// parallel runs fn(0..n-1) on 32 goroutines and returns the first error.
func parallel(n int, fn func(i int) error) error {
	var next int
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func (b *bench) setUp() error {
	n := b.sz.nodes
	tok, err := b.c.Token(2 * time.Hour)
	if err != nil {
		return err
	}
	hc := edgehub.DefaultConfig()
	hc.Agent = "groupbench"
	f, err := sim.JoinFleet(b.ctx, sim.FleetConfig{Cloud: []string{b.c.Hub}, Join: "https://" + b.c.Join, Token: tok, Nodes: n,
		Prefix: "gb-", LocalAddrs: sim.LoopbackAddrs(8), Hub: hc, JoinConcurrency: 32}, zerolog.Nop(), nil)
	if err != nil {
		return err
	}
	b.f = f
	b.rec = &recorder{data: make([]int, n), at: make([]time.Time, n), atRev: make([]uint64, n), web: make([]map[string]held, n)}
	for i := range b.rec.web {
		b.rec.web[i] = map[string]held{}
	}
	for i, e := range f.Edges {
		e.Store.SetOnApply(b.rec.hook(i))
	}
	if b.stop, err = f.RunUntilConnected(b.ctx, 2*time.Minute); err != nil {
		return err
	}

	// Groups: node i is in group i mod G, by a zone label the groups match.
	b.group = make([]int, n)
	for i := range b.group {
		b.group[i] = i % b.sz.groups
	}
	if err := b.labelAll(); err != nil {
		return err
	}
	for g := range b.sz.groups {
		if _, err := b.request(http.MethodPost, "/apis/apps.kubeedge.io/v1alpha1/nodegroups", map[string]any{
			"apiVersion": "apps.kubeedge.io/v1alpha1", "kind": "NodeGroup", "metadata": map[string]any{"name": groupName(g)},
			"spec": map[string]any{"matchLabels": map[string]string{"zone": zone(g)}}}); err != nil {
			return err
		}
	}
	if _, err := b.request(http.MethodPost, "/apis/apps.kubeedge.io/v1alpha1/nodegroups", map[string]any{
		"apiVersion": "apps.kubeedge.io/v1alpha1", "kind": "NodeGroup", "metadata": map[string]any{"name": "barrier"}, "spec": map[string]any{}}); err != nil {
		return err
	}
	if err := b.waitMembership(2 * time.Minute); err != nil {
		return err
	}

	// Services web (range-nodegroup) and api (plain), each with S slices; slice k holds an
	// endpoint on each node of the k-th block of N/S nodes, so (groups being i mod G) every
	// slice has endpoints in every group, as Kubernetes fills slices without regard to groups.
	b.sliceNodes = make([][]int, b.sz.slices)
	for j := range n {
		k := j * b.sz.slices / n
		b.sliceNodes[k] = append(b.sliceNodes[k], j)
	}
	if _, err := b.request(http.MethodPost, "/api/v1/namespaces", map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": namespace}}); err != nil {
		return err
	}
	for _, svc := range []string{"web", "api"} {
		md := map[string]any{"name": svc, "namespace": namespace}
		if svc == "web" {
			md["annotations"] = map[string]string{topologyKey: rangeTopology}
		}
		if _, err := b.request(http.MethodPost, "/api/v1/namespaces/"+namespace+"/services", map[string]any{
			"apiVersion": "v1", "kind": "Service", "metadata": md, "spec": map[string]any{"ports": []any{map[string]any{"port": 80}}}}); err != nil {
			return err
		}
		for k := range b.sz.slices {
			if _, err := b.request(http.MethodPost, "/apis/discovery.k8s.io/v1/namespaces/"+namespace+"/endpointslices", b.slice(svc, k)); err != nil {
				return err
			}
		}
	}
	_, err = b.settle(2 * time.Minute)
	return err
}

func zone(g int) string      { return fmt.Sprintf("z%d", g) }
func groupName(g int) string { return fmt.Sprintf("g%d", g) }
func sliceName(svc string, k int) string {
	return fmt.Sprintf("%s-%d", svc, k)
}

// slice builds slice k of svc, each endpoint's address from its variant in b.variant.
func (b *bench) slice(svc string, k int) map[string]any {
	var eps []any
	for idx, j := range b.sliceNodes[k] {
		v := b.variant[[3]any{svc, k, idx}]
		eps = append(eps, map[string]any{"addresses": []string{fmt.Sprintf("10.%d.%d.%d", v%250, j/250, j%250)},
			"nodeName": b.f.Edges[j].Name, "conditions": map[string]any{"ready": true}})
	}
	return map[string]any{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
		"metadata": map[string]any{"name": sliceName(svc, k), "namespace": namespace,
			"labels": map[string]string{"kubernetes.io/service-name": svc}},
		"addressType": "IPv4", "endpoints": eps, "ports": []any{map[string]any{"port": 8080, "protocol": "TCP"}}}
}

// labelAll sets every node's zone label to its group's.
func (b *bench) labelAll() error {
	return parallel(b.sz.nodes, func(i int) error {
		_, err := b.request(http.MethodPatch, "/api/v1/nodes/"+b.f.Edges[i].Name,
			map[string]any{"metadata": map[string]any{"labels": map[string]string{"zone": zone(b.group[i])}}})
		return err
	})
}

// waitMembership waits until every node carries the belonging-to label of its group.
func (b *bench) waitMembership(d time.Duration) error {
	want := map[string]string{}
	for i, e := range b.f.Edges {
		want[e.Name] = groupName(b.group[i])
	}
	var wrong int
	err := sim.WaitUntil(b.ctx, d, func() bool {
		raw, err := b.request(http.MethodGet, "/api/v1/nodes", nil)
		if err != nil {
			return false
		}
		var l struct {
			Items []struct {
				Metadata struct {
					Name   string
					Labels map[string]string
				}
			}
		}
		json.Unmarshal(raw, &l)
		wrong = 0
		for _, it := range l.Items {
			if it.Metadata.Labels[labelGroup] != want[it.Metadata.Name] {
				wrong++
			}
		}
		return wrong == 0
	})
	if err != nil {
		return fmt.Errorf("membership: %d nodes not in their group: %w", wrong, err)
	}
	return nil
}

// settle changes the barrier (a NodeGroup that selects nothing: indexed, sent to no node) and
// waits until every edge's cursor has passed it, so everything before it has been sent. It
// returns the barrier's revision.
func (b *bench) settle(d time.Duration) (uint64, error) {
	b.barrierN++
	raw, err := b.request(http.MethodPatch, "/apis/apps.kubeedge.io/v1alpha1/nodegroups/barrier",
		map[string]any{"metadata": map[string]any{"annotations": map[string]string{"n": fmt.Sprint(b.barrierN)}}})
	if err != nil {
		return 0, err
	}
	rev := sim.ResourceVersion(raw)
	info, err := sim.GetInfo(b.api)
	if err != nil {
		return 0, err
	}
	if err := sim.WaitUntil(b.ctx, d, func() bool { return b.f.Synced(info.Cluster, rev) == b.sz.nodes }); err != nil {
		return 0, fmt.Errorf("settling at %d: %d of %d edges in sync: %w", rev, b.f.Synced(info.Cluster, rev), b.sz.nodes, err)
	}
	return rev, nil
}

func (b *bench) sentBytes() (float64, error) {
	m, err := sim.Scrape(b.c.URL("/metrics"), "tether_cloud_hub_sent_bytes_total")
	return m["tether_cloud_hub_sent_bytes_total"], err
}

// endpointChange changes one endpoint per trial, in web (ranged) or api (plain).
func (b *bench) endpointChange(ranged bool, emit func(hubbench.Result)) error {
	svc, what := "api", "plain Service"
	if ranged {
		svc, what = "web", "range-nodegroup Service"
	}
	var all, each, received, bytes []float64
	for trial := range b.sz.trials {
		k := trial % b.sz.slices
		idx := (trial * 7) % len(b.sliceNodes[k])
		changed := b.sliceNodes[k][idx]
		affected := map[int]bool{}
		for i := range b.sz.nodes {
			if !ranged || b.group[i] == b.group[changed] {
				affected[i] = true
			}
		}
		b.variant[[3]any{svc, k, idx}]++ // this endpoint's address changes, no other
		b.rec.reset(sliceName(svc, k))
		sent0, err := b.sentBytes()
		if err != nil {
			return err
		}
		t0 := time.Now()
		raw, err := b.request(http.MethodPut, "/apis/discovery.k8s.io/v1/namespaces/"+namespace+"/endpointslices/"+sliceName(svc, k),
			b.slice(svc, k))
		if err != nil {
			return err
		}
		rev := sim.ResourceVersion(raw)
		var lat []time.Duration
		var bad error
		err = sim.WaitUntil(b.ctx, time.Minute, func() bool {
			b.rec.mu.Lock()
			defer b.rec.mu.Unlock()
			lat = lat[:0]
			for i := range affected {
				if b.rec.at[i].IsZero() {
					return false
				}
				if b.rec.atRev[i] < rev {
					bad = fmt.Errorf("%s got %s at revision %d, before the change at %d", b.f.Edges[i].Name, sliceName(svc, k), b.rec.atRev[i], rev)
					return true
				}
				lat = append(lat, b.rec.at[i].Sub(t0))
			}
			return true
		})
		if err == nil {
			err = bad
		}
		if err != nil {
			b.rec.mu.Lock()
			missing := 0
			for i := range affected {
				if b.rec.at[i].IsZero() {
					missing++
				}
			}
			b.rec.mu.Unlock()
			return fmt.Errorf("%s trial %d: %d of %d affected nodes did not get the change: %w", what, trial, missing, len(affected), err)
		}
		if _, err := b.settle(time.Minute); err != nil {
			return err
		}
		sent1, err := b.sentBytes()
		if err != nil {
			return err
		}
		worst := time.Duration(0)
		for _, d := range lat {
			each = append(each, ms(d))
			worst = max(worst, d)
		}
		all = append(all, ms(worst))
		b.rec.mu.Lock()
		received = append(received, float64(b.rec.received))
		b.rec.mu.Unlock()
		bytes = append(bytes, sent1-sent0)
	}
	n := b.sz.nodes
	affected := n
	if ranged {
		affected = n / b.sz.groups
	}
	name := fmt.Sprintf("1 endpoint change, %s, %d nodes in %d groups", what, n, b.sz.groups)
	emit(hubbench.Result{Name: name + ": affected all acked p50", Unit: "ms", Value: percentile(all, 0.5),
		Note: fmt.Sprintf("%d affected nodes", affected)})
	emit(hubbench.Result{Name: name + ": affected all acked p99", Unit: "ms", Value: percentile(all, 0.99)})
	emit(hubbench.Result{Name: name + ": per affected node p99", Unit: "ms", Value: percentile(each, 0.99)})
	goal := ""
	if ranged {
		goal = fmt.Sprintf("= %d (the group)", affected)
	}
	emit(hubbench.Result{Name: name + ": nodes that received a message, max", Unit: "nodes", Value: percentile(received, 1), Goal: goal,
		Note: fmt.Sprintf("min %.0f", percentile(received, 0))})
	emit(hubbench.Result{Name: name + ": hub bytes sent per change, p50", Unit: "KB", Value: percentile(bytes, 0.5) / 1024,
		Note: "includes progress marks to every node"})
	return nil
}

// relabel moves every node into the next group by relabelling it through the cloud API.
func (b *bench) relabel(emit func(hubbench.Result)) error {
	n := b.sz.nodes
	for i := range b.group {
		b.group[i] = (b.group[i] + 1) % b.sz.groups
	}
	b.rec.reset("")
	sent0, err := b.sentBytes()
	if err != nil {
		return err
	}
	m0, err := sim.Scrape(b.c.URL("/metrics"), "tether_cloud_hub_sent_messages_total")
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := b.labelAll(); err != nil {
		return err
	}
	apiDone := time.Since(t0)
	if err := b.waitMembership(5 * time.Minute); err != nil {
		return err
	}
	moved := time.Since(t0)
	if _, err := b.settle(5 * time.Minute); err != nil {
		return err
	}
	synced := time.Since(t0)
	sent1, err := b.sentBytes()
	if err != nil {
		return err
	}
	m1, err := sim.Scrape(b.c.URL("/metrics"), "tether_cloud_hub_sent_messages_total")
	if err != nil {
		return err
	}
	if err := b.checkForms(); err != nil {
		return err
	}
	name := fmt.Sprintf("relabel %d nodes into another group (%d groups, %d filtered slices)", n, b.sz.groups, b.sz.slices)
	emit(hubbench.Result{Name: name + ": all moved and edges in sync", Unit: "s", Value: synced.Seconds(),
		Note: fmt.Sprintf("API writes done at %.1f s, labels at %.1f s", apiDone.Seconds(), moved.Seconds())})
	emit(hubbench.Result{Name: name + ": hub bytes sent", Unit: "MB", Value: (sent1 - sent0) / (1 << 20),
		Note: fmt.Sprintf("%.0f KB per node, %.0f messages", (sent1-sent0)/1024/float64(n), m1["tether_cloud_hub_sent_messages_total"]-m0["tether_cloud_hub_sent_messages_total"])})
	return nil
}

// checkForms checks that every node holds every web slice with exactly the endpoints on the
// nodes of its group, so that a figure is never reported for a run that went wrong.
func (b *bench) checkForms() error {
	b.rec.mu.Lock()
	defer b.rec.mu.Unlock()
	groupOf := map[string]int{}
	for i, e := range b.f.Edges {
		groupOf[e.Name] = b.group[i]
	}
	for i, e := range b.f.Edges {
		for k := range b.sz.slices {
			h, ok := b.rec.web[i][sliceName("web", k)]
			if !ok {
				return fmt.Errorf("%s does not hold %s", e.Name, sliceName("web", k))
			}
			var s struct{ Endpoints []struct{ NodeName string } }
			if err := json.Unmarshal(h.raw, &s); err != nil {
				return fmt.Errorf("%s holds %s as %v", e.Name, sliceName("web", k), err)
			}
			want := 0
			for _, j := range b.sliceNodes[k] {
				if b.group[j] == b.group[i] {
					want++
				}
			}
			for _, ep := range s.Endpoints {
				if groupOf[ep.NodeName] != b.group[i] {
					return fmt.Errorf("%s (group %d) holds an endpoint of %s (group %d)", e.Name, b.group[i], ep.NodeName, groupOf[ep.NodeName])
				}
			}
			if len(s.Endpoints) != want {
				return fmt.Errorf("%s holds %d endpoints of %s, want %d", e.Name, len(s.Endpoints), sliceName("web", k), want)
			}
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[int(float64(len(s)-1)*p)]
}
