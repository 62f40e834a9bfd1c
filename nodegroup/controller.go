package nodegroup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/resource"
)

// Source is the index the controller follows; *index.Index implements it.
type Source interface {
	Subscribe(func(index.Update))
	Snapshot() index.Snapshot
	Current() <-chan struct{}
}

// Patcher applies patches to stored objects and returns once the index has the result;
// *cloudapi.Objects implements it.
type Patcher interface {
	Patch(ctx context.Context, info resource.Info, ns, name, sub string, pt kubeapi.PatchType, patch []byte) ([]byte, error)
}

// Config configures the controller.
type Config struct {
	// Writers bounds the label and status writes in flight; the store commits concurrent writes
	// together, so a relabelling of many nodes costs few commits.
	Writers int
	// WriteTimeout bounds one write.
	WriteTimeout time.Duration
	// Retry is the wait before a pass that failed to write is tried again.
	Retry time.Duration
	// MaxQueued bounds the nodes queued for a readiness check; past it the next pass recomputes
	// everything instead, which costs the same whatever the backlog.
	MaxQueued int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Writers: 32, WriteTimeout: 10 * time.Second, Retry: 2 * time.Second, MaxQueued: 4096}
}

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	switch {
	case c.Writers < 1:
		return fmt.Errorf("nodegroup: writers must be at least 1, got %d", c.Writers)
	case c.WriteTimeout <= 0 || c.Retry <= 0:
		return fmt.Errorf("nodegroup: write timeout and retry must be positive")
	case c.MaxQueued < 1:
		return fmt.Errorf("nodegroup: max queued must be at least 1, got %d", c.MaxQueued)
	}
	return nil
}

// Controller keeps NodeGroup membership labels and NodeGroup status in step with the groups'
// specs and the nodes' labels.
type Controller struct {
	cfg    Config
	src    Source
	store  Patcher
	nodes  resource.Info // set at construction
	groups resource.Info // set at construction
	log    zerolog.Logger
	wake   chan struct{} // capacity 1: a pending wake-up

	writes *prometheus.CounterVec
	passes *prometheus.CounterVec

	mu      sync.Mutex          // guards the fields below
	all     bool                // recompute everything on the next pass
	queued  map[string]struct{} // nodes whose readiness may have changed
	started bool                // Run has begun: updates before it are covered by its first pass

	// Owned by Run.
	ready map[string]readiness // per node, the readiness last read and the version it was read from
	specs map[string]spec      // per group, the spec last decoded
}

type readiness struct {
	rev   int64
	ready string
}

type spec struct {
	rev    int64
	group  Group
	status []NodeStatus // status.nodeStatuses as stored
}

// New returns a controller subscribed to src. It must be called before the index runs.
func New(cfg Config, src Source, store Patcher, reg *resource.Registry, log zerolog.Logger, metrics prometheus.Registerer) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	nodes, ok1 := reg.ByGroupResource(resource.Nodes)
	groups, ok2 := reg.ByGroupResource(resource.NodeGroups)
	if !ok1 || !ok2 {
		return nil, errors.New("nodegroup: the registry does not serve Nodes and NodeGroups")
	}
	c := &Controller{
		cfg: cfg, src: src, store: store, nodes: nodes, groups: groups,
		log:    log.With().Str("component", "nodegroup").Logger(),
		wake:   make(chan struct{}, 1),
		queued: map[string]struct{}{},
		ready:  map[string]readiness{},
		specs:  map[string]spec{},
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_cloud_nodegroup_writes_total", Help: "Writes of the NodeGroup controller, by what was written (label, status) and outcome.",
		}, []string{"kind", "outcome"}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_cloud_nodegroup_passes_total", Help: "Membership computations of the NodeGroup controller, by what started them (full, readiness).",
		}, []string{"cause"}),
	}
	if metrics != nil {
		metrics.MustRegister(c.writes, c.passes)
	}
	src.Subscribe(c.onUpdate)
	return c, nil
}

// onUpdate runs on the index goroutine: it only notes what changed and wakes Run.
func (c *Controller) onUpdate(u index.Update) {
	if u.Historical {
		return
	}
	o := u.New
	if o == nil {
		o = u.Old
	}
	switch o.Key.Resource {
	case resource.NodeGroups:
		c.mark(true, "")
	case resource.Nodes:
		if u.Old == nil || u.New == nil || !maps.Equal(u.Old.Labels, u.New.Labels) {
			c.mark(true, "")
		} else {
			// Most Node changes are heartbeats: only a readiness flip changes a group's status.
			c.mark(false, o.Key.Name)
		}
	}
}

func (c *Controller) mark(all bool, node string) {
	c.mu.Lock()
	switch {
	case !c.started:
	case all:
		c.all = true
	case !c.all:
		c.queued[node] = struct{}{}
		if len(c.queued) > c.cfg.MaxQueued {
			c.all, c.queued = true, map[string]struct{}{}
		}
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Controller) take() (all bool, queued []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	all, c.all = c.all, false
	for n := range c.queued {
		queued = append(queued, n)
	}
	clear(c.queued)
	return all, queued
}

// Run keeps membership and status up to date until ctx ends. It starts once the index has
// replayed its history, with a pass over everything.
func (c *Controller) Run(ctx context.Context) error {
	select {
	case <-c.src.Current():
	case <-ctx.Done():
		return nil
	}
	c.mu.Lock()
	c.started, c.all = true, true
	c.mu.Unlock()
	var retry <-chan time.Time
	for {
		all, queued := c.take()
		snap := c.src.Snapshot()
		cause := "full"
		if !all && c.readinessChanged(snap, queued) {
			all, cause = true, "readiness"
		}
		if all {
			c.passes.WithLabelValues(cause).Inc()
			if err := c.reconcile(ctx, snap); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				c.log.Warn().Err(err).Dur("retry_in", c.cfg.Retry).Msg("could not write NodeGroup membership; retrying")
				retry = time.After(c.cfg.Retry)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.wake:
		case <-retry:
			retry = nil
			c.mark(true, "")
		}
	}
}

// readinessChanged reports whether any of nodes changed readiness since it was last read.
func (c *Controller) readinessChanged(snap index.Snapshot, nodes []string) bool {
	changed := false
	for _, n := range nodes {
		o := snap.Get(resource.StoreKey(resource.Key{Resource: resource.Nodes, Name: n}))
		if o == nil {
			continue // a deletion is a full pass anyway
		}
		before, known := c.ready[n]
		if now := c.readinessOf(o); !known || now != before.ready {
			changed = true
		}
	}
	return changed
}

// readinessOf reads a node's readiness, decoding its status only when it changed.
func (c *Controller) readinessOf(o *index.Object) string {
	if r, ok := c.ready[o.Key.Name]; ok && r.rev == o.ModRev {
		return r.ready
	}
	var n struct {
		Status struct {
			Conditions []struct{ Type, Status string }
		}
	}
	json.Unmarshal(o.Raw, &n)
	r := Unknown
	for _, cond := range n.Status.Conditions {
		if cond.Type == "Ready" {
			switch cond.Status {
			case "True":
				r = Ready
			case "False":
				r = NotReady
			}
		}
	}
	c.ready[o.Key.Name] = readiness{rev: o.ModRev, ready: r}
	return r
}

// groupOf decodes a NodeGroup's spec and stored status, once per version.
func (c *Controller) groupOf(o *index.Object) spec {
	if s, ok := c.specs[o.Key.Name]; ok && s.rev == o.ModRev {
		return s
	}
	var g struct {
		Spec struct {
			Nodes       []string          `json:"nodes"`
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"spec"`
		Status struct {
			NodeStatuses []NodeStatus `json:"nodeStatuses"`
		} `json:"status"`
	}
	json.Unmarshal(o.Raw, &g) // the API checked the shape of spec (cloudapi validate)
	s := spec{rev: o.ModRev, status: g.Status.NodeStatuses,
		group: Group{Name: o.Key.Name, Created: o.Created, Nodes: g.Spec.Nodes, MatchLabels: g.Spec.MatchLabels}}
	c.specs[o.Key.Name] = s
	return s
}

// reconcile computes membership from snap and writes the labels and statuses that differ.
func (c *Controller) reconcile(ctx context.Context, snap index.Snapshot) error {
	var groups []Group
	stored := map[string][]NodeStatus{}
	specs := map[string]spec{}
	for _, o := range snap.List(resource.Prefix(resource.NodeGroups, ""), "", 0) {
		s := c.groupOf(o)
		specs[o.Key.Name] = s
		groups = append(groups, s.group)
		stored[o.Key.Name] = s.status
	}
	c.specs = specs
	nodeObjs := snap.List(resource.Prefix(resource.Nodes, ""), "", 0)
	nodes := make([]Node, len(nodeObjs))
	ready := make(map[string]readiness, len(nodeObjs))
	for i, o := range nodeObjs {
		nodes[i] = Node{Name: o.Key.Name, Labels: o.Labels, Ready: c.readinessOf(o)}
		ready[o.Key.Name] = c.ready[o.Key.Name]
	}
	c.ready = ready
	m := Compute(groups, nodes)

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Writers)
	var failed int
	var failMu sync.Mutex
	write := func(kind, name string, fn func(context.Context) error) {
		g.Go(func() error {
			wctx, cancel := context.WithTimeout(gctx, c.cfg.WriteTimeout)
			err := fn(wctx)
			cancel()
			switch {
			case err == nil, apierrors.IsNotFound(err): // gone meanwhile: its change starts another pass
				c.writes.WithLabelValues(kind, "ok").Inc()
			default:
				c.writes.WithLabelValues(kind, "error").Inc()
				c.log.Debug().Err(err).Str(kind, name).Msg("write failed")
				failMu.Lock()
				failed++
				failMu.Unlock()
			}
			return nil // one failed write does not stop the others
		})
	}
	moved := 0
	for _, o := range nodeObjs {
		want, have := m.Of[o.Key.Name], o.Labels[index.LabelGroup]
		if want == have {
			continue
		}
		moved++
		c.log.Debug().Str("node", o.Key.Name).Str("from", have).Str("to", want).Msg("node changes group")
		var value any = want
		if want == "" {
			value = nil // a merge patch removes a key set to null
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{index.LabelGroup: value}}})
		name := o.Key.Name
		write("label", name, func(ctx context.Context) error {
			_, err := c.store.Patch(ctx, c.nodes, "", name, "", kubeapi.MergePatch, patch)
			return err
		})
	}
	statuses := 0
	for _, grp := range groups {
		want := m.Statuses[grp.Name]
		if slices.Equal(want, stored[grp.Name]) {
			continue
		}
		statuses++
		var value any = want
		if len(want) == 0 {
			value = nil
		}
		patch, _ := json.Marshal(map[string]any{"status": map[string]any{"nodeStatuses": value}})
		name := grp.Name
		write("status", name, func(ctx context.Context) error {
			_, err := c.store.Patch(ctx, c.groups, "", name, "status", kubeapi.MergePatch, patch)
			return err
		})
	}
	g.Wait()
	if moved > 0 || statuses > 0 {
		c.log.Info().Int("nodes_moved", moved).Int("statuses", statuses).Int("failed", failed).Msg("NodeGroup membership written")
	}
	if failed > 0 {
		return fmt.Errorf("nodegroup: %d of %d writes failed", failed, moved+statuses)
	}
	return nil
}
