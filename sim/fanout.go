package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tetherhub/tether/protocol"
)

// FanoutProbe measures how long one change to a Service takes to reach every edge of a fleet:
// it owns the Service namespace/name and watches each edge's store for it.
type FanoutProbe struct {
	api       string // the cloud API's base URL
	namespace string
	name      string
	pad       string // brings the object to about the asked size
	edges     []*Edge

	mu  sync.Mutex
	got [][]fanoutSeen // per edge, the versions of the Service it applied and when
}

type fanoutSeen struct {
	at  time.Time
	rev uint64
}

// FanoutTrial is one change's figures. Latencies run from just before the API call that made
// the change to each edge's commit of it (the edge's ack leaves right after).
type FanoutTrial struct {
	API  time.Duration   // until the API answered
	Each []time.Duration // per edge, in fleet order
	All  time.Duration   // until the last edge had it
}

// NewFanoutProbe hooks every edge's store (replacing any OnApply) and creates the Service of
// about size bytes, or takes over one left by an earlier run. It returns once every edge has
// the Service, so the first measured change does not share the wire with the creation. Close
// unhooks the stores.
func NewFanoutProbe(ctx context.Context, api string, edges []*Edge, namespace, name string, size int) (*FanoutProbe, error) {
	p := &FanoutProbe{api: api, namespace: namespace, name: name, pad: strings.Repeat("x", max(0, size-200)), edges: edges, got: make([][]fanoutSeen, len(edges))}
	for i, e := range edges {
		e.Store.SetOnApply(func(msgs []protocol.Message) {
			now := time.Now()
			for _, m := range msgs {
				if u, ok := m.(*protocol.Upsert); ok && u.Key.Resource == "services" && u.Key.Namespace == namespace && u.Key.Name == name {
					p.mu.Lock()
					p.got[i] = append(p.got[i], fanoutSeen{now, u.Rev})
					p.mu.Unlock()
				}
			}
		})
	}
	svc, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Service",
		"metadata": map[string]any{"name": name, "namespace": namespace, "annotations": map[string]string{"change": "0", "pad": p.pad}},
		"spec":     map[string]any{"ports": []any{map[string]any{"port": 80}}}})
	if err := EnsureNamespace(api, namespace); err != nil {
		return nil, err
	}
	resp, err := Request(api, http.MethodPost, "/api/v1/namespaces/"+namespace+"/services", "application/json", svc)
	if err != nil {
		if !strings.Contains(err.Error(), "409") {
			p.Close()
			return nil, err
		}
		// Left by an earlier run: a change brings it to this run's size and names a version
		// every edge must reach.
		if resp, err = p.patch(map[string]string{"change": "0", "pad": p.pad}); err != nil {
			p.Close()
			return nil, err
		}
	}
	if _, err := p.wait(ctx, time.Minute, time.Now(), ResourceVersion(resp)); err != nil {
		p.Close()
		return nil, fmt.Errorf("the fan-out Service did not reach every node: %w", err)
	}
	return p, nil
}

// Close unhooks the edges' stores.
func (p *FanoutProbe) Close() {
	for _, e := range p.edges {
		e.Store.SetOnApply(nil)
	}
}

// Change makes one change to the Service and waits (up to timeout) until every edge has it.
func (p *FanoutProbe) Change(ctx context.Context, change int, timeout time.Duration) (FanoutTrial, error) {
	t0 := time.Now()
	resp, err := p.patch(map[string]string{"change": fmt.Sprint(change)})
	if err != nil {
		return FanoutTrial{}, err
	}
	tr := FanoutTrial{API: time.Since(t0)}
	if tr.Each, err = p.wait(ctx, timeout, t0, ResourceVersion(resp)); err != nil {
		return tr, fmt.Errorf("change %d did not reach every node: %w", change, err)
	}
	for _, d := range tr.Each {
		tr.All = max(tr.All, d)
	}
	return tr, nil
}

// patch merges annotations into the Service's.
func (p *FanoutProbe) patch(annotations map[string]string) ([]byte, error) {
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": annotations}})
	return Request(p.api, http.MethodPatch, "/api/v1/namespaces/"+p.namespace+"/services/"+p.name, "application/merge-patch+json", body)
}

// wait returns, once every edge has applied rev or later (within timeout), how long after t0
// each did; then it forgets what it saw.
func (p *FanoutProbe) wait(ctx context.Context, timeout time.Duration, t0 time.Time, rev uint64) ([]time.Duration, error) {
	lat := make([]time.Duration, len(p.edges))
	err := WaitUntil(ctx, timeout, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for i := range p.got {
			found := false
			for _, s := range p.got[i] {
				if s.rev >= rev {
					lat[i], found = s.at.Sub(t0), true
					break
				}
			}
			if !found {
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	for i := range p.got {
		p.got[i] = p.got[i][:0]
	}
	p.mu.Unlock()
	return lat, nil
}

// ms is d in milliseconds, the unit of the report's latencies.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
