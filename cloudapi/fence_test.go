package cloudapi

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
	"github.com/tetherhub/tether/store/boltstore"
	"github.com/tetherhub/tether/twin"
)

// gateKey is the context key of a gate: a write whose context carries one waits at the store
// until the gate is closed, as one from a replica whose store requests are slow.
type gateKey struct{}

// gated holds back the updates whose context carries a gate; it tells on entered when one waits.
type gated struct {
	store.Backend
	entered chan struct{}
}

func (b gated) Update(ctx context.Context, key string, value []byte, rev int64) (int64, error) {
	if gate, ok := ctx.Value(gateKey{}).(chan struct{}); ok {
		b.entered <- struct{}{}
		<-gate
	}
	return b.Backend.Update(ctx, key, value, rev)
}

// fenceRig is a cloud with one Device, ns/d1 on edge-1, its reports, and the store's epochs.
type fenceRig struct {
	c       *cloud
	reports *DeviceReports
	nodes   *NodeStatus
	epochs  *ReportEpochs
	backend store.Backend
	entered chan struct{}
}

func newFenceRig(t *testing.T) *fenceRig {
	r := &fenceRig{entered: make(chan struct{}, 1)}
	r.c = newCloudWith(t, 1000, testSweep, func(b store.Backend) store.Backend {
		r.epochs, r.backend = NewReportEpochs(b, 10*time.Second), b
		return gated{Backend: b, entered: r.entered}
	})
	r.c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	r.c.must(http.MethodPost, devsPath, deviceJSON("d1", "edge-1"))
	r.reports = NewDeviceReports(r.c.objects, resource.New(), nil, nil)
	r.nodes = NewNodeStatus(r.c.objects, resource.New(), "r1", time.Now)
	r.nodes.RouteDeviceReports(r.reports)
	return r
}

func (r *fenceRig) epoch(t *testing.T) int64 {
	t.Helper()
	e, err := r.epochs.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (r *fenceRig) state(t *testing.T, ctx context.Context, epoch int64, state string) {
	t.Helper()
	if err := r.nodes.Apply(ctx, "edge-1", epoch, stateReport(state)); err != nil {
		t.Fatal(err)
	}
}

// stateReport is edge-1's report that ns/d1 is in state.
func stateReport(state string) *protocol.Report {
	return &protocol.Report{Kind: protocol.ReportDeviceState, Subject: "ns/d1", Payload: []byte(`{"state":"` + state + `"}`)}
}

// device returns d1's state and the epoch it holds.
func (r *fenceRig) device(t *testing.T) (state, epoch string) {
	t.Helper()
	var d struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(r.c.must(http.MethodGet, devsPath+"/d1", "")), &d); err != nil {
		t.Fatal(err)
	}
	return d.Status.State, d.Metadata.Annotations[resource.AnnotationReportEpoch]
}

// held applies edge-1's report rep from session epoch with its store write held at the gate
// until the returned release is called; release returns Apply's error.
func (r *fenceRig) held(epoch int64, rep *protocol.Report) (release func() error) {
	gate, done := make(chan struct{}), make(chan error, 1)
	ctx := context.WithValue(context.Background(), gateKey{}, gate)
	go func() { done <- r.nodes.Apply(ctx, "edge-1", epoch, rep) }()
	<-r.entered
	return func() error { close(gate); return <-done }
}

// TestOlderSessionsReportDropped: a replica whose store write of a node's report was held up
// (the node's old session) does not overwrite what the node reported since on its new session,
// on another replica. Before the fence, the device went back to "offline" for good (until its
// next report): the held write failed its compare-and-swap, was tried again on the fresher
// object, and won.
func TestOlderSessionsReportDropped(t *testing.T) {
	r := newFenceRig(t)
	old := r.epoch(t)
	release := r.held(old, stateReport("offline"))
	// The edge reconnected elsewhere and sent the report again, and a newer one.
	newer := r.epoch(t)
	r.state(t, context.Background(), newer, "offline")
	r.state(t, context.Background(), newer, "online")
	if err := release(); err != nil {
		t.Fatalf("the old session's report: %v, want it dropped without an error (it is acknowledged)", err)
	}
	state, epoch := r.device(t)
	if state != "online" || epoch != held("edge-1", newer) {
		t.Fatalf("device: state %q, epoch %q; want online from epoch %d", state, epoch, newer)
	}
}

// TestNewerSessionsUnchangedReportFences: a report from a new session that changes nothing
// still moves the epoch, or the old session's held report, older, would land after it.
func TestNewerSessionsUnchangedReportFences(t *testing.T) {
	r := newFenceRig(t)
	r.state(t, context.Background(), r.epoch(t), "online")
	old := r.epoch(t)
	release := r.held(old, stateReport("offline"))
	newer := r.epoch(t)
	r.state(t, context.Background(), newer, "online") // what the device already shows
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if state, epoch := r.device(t); state != "online" || epoch != held("edge-1", newer) {
		t.Fatalf("device: state %q, epoch %q; want online from epoch %d", state, epoch, newer)
	}
	// A report from the same session that changes nothing writes nothing.
	before := r.c.must(http.MethodGet, devsPath+"/d1", "")
	r.state(t, context.Background(), newer, "online")
	if after := r.c.must(http.MethodGet, devsPath+"/d1", ""); after != before {
		t.Fatalf("an unchanged report from the same session wrote:\n%s\nthen\n%s", before, after)
	}
}

// TestNodeStatusReportFenced: the same holds for what a node reports about itself.
func TestNodeStatusReportFenced(t *testing.T) {
	r := newFenceRig(t)
	kernel := func(version string) *protocol.Report {
		return &protocol.Report{Kind: protocol.ReportNodeStatus, Payload: []byte(`{"nodeInfo":{"kernelVersion":"` + version + `"}}`)}
	}
	release := r.held(r.epoch(t), kernel("5.10"))
	if err := r.nodes.Apply(context.Background(), "edge-1", r.epoch(t), kernel("6.1")); err != nil {
		t.Fatal(err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if out := r.c.must(http.MethodGet, nodesPath+"/edge-1", ""); !strings.Contains(out, `"kernelVersion":"6.1"`) {
		t.Fatalf("node after the old session's report: %s; want kernelVersion 6.1", out)
	}
}

// TestReportEpochIsTheClouds: clients cannot set, change or remove the epoch, and a Device
// created from another's manifest does not take its epoch.
func TestReportEpochIsTheClouds(t *testing.T) {
	r := newFenceRig(t)
	e := r.epoch(t)
	r.state(t, context.Background(), e, "online")
	want := held("edge-1", e)
	r.c.must(http.MethodPatch, devsPath+"/d1", `{"metadata":{"annotations":{"`+resource.AnnotationReportEpoch+`":"999999999","a":"b"}}}`)
	if _, got := r.device(t); got != want {
		t.Fatalf("after a patch setting it: epoch %q, want %q", got, want)
	}
	r.c.must(http.MethodPut, devsPath+"/d1", deviceJSON("d1", "edge-1"))
	if _, got := r.device(t); got != want {
		t.Fatalf("after a replace without it: epoch %q, want %q", got, want)
	}
	r.c.must(http.MethodPatch, devsPath+"/d1/status", `{"metadata":{"annotations":{"`+resource.AnnotationReportEpoch+`":"1"}},"status":{"state":"offline"}}`)
	if state, got := r.device(t); got != want || state != "offline" {
		t.Fatalf("after a status patch: state %q, epoch %q; want offline, %q", state, got, want)
	}
	out := r.c.must(http.MethodPost, devsPath, `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":"d2","namespace":"ns","annotations":{"`+
		resource.AnnotationReportEpoch+`":"999999999"}},"spec":{"nodeName":"edge-1","deviceModelRef":{"name":"m"}}}`)
	if strings.Contains(out, resource.AnnotationReportEpoch) {
		t.Fatalf("created with another's epoch: %s", out)
	}
}

// held is the annotation's value for node's session epoch.
func held(node string, epoch int64) string { return node + "/" + strconv.FormatInt(epoch, 10) }

// TestMovedDeviceTakesItsNewNodesReports: epochs are numbered across all nodes, so a Device
// moved to another node takes that node's reports even when their session is older than the
// one of the old node whose report the Device holds. Before the epoch named its node, every
// report of the new node was dropped as stale until that node reconnected.
func TestMovedDeviceTakesItsNewNodesReports(t *testing.T) {
	r := newFenceRig(t)
	onEdge2 := r.epoch(t) // edge-2's session, which goes on through the move
	r.state(t, context.Background(), r.epoch(t), "online")
	r.c.must(http.MethodPut, devsPath+"/d1", deviceJSON("d1", "edge-2"))
	err := r.nodes.Apply(context.Background(), "edge-2", onEdge2, stateReport("offline"))
	if err != nil {
		t.Fatal(err)
	}
	if state, epoch := r.device(t); state != "offline" || epoch != held("edge-2", onEdge2) {
		t.Fatalf("device moved to edge-2: state %q, epoch %q; want offline from edge-2's epoch %d", state, epoch, onEdge2)
	}
}

// TestForeignReportEpochIgnored: an epoch at or above the object's own version was not written
// by a report on this store (a value from before the cloud owned the annotation, or from an etcd
// whose revisions ran higher), and holds back nothing.
func TestForeignReportEpochIgnored(t *testing.T) {
	r := newFenceRig(t)
	ctx := context.Background()
	key := resource.StoreKey(resource.Key{Resource: resource.Devices, Namespace: "ns", Name: "d1"})
	kv, err := r.backend.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	json.Unmarshal(kv.Value, &d)
	d["metadata"].(map[string]any)["annotations"] = map[string]any{resource.AnnotationReportEpoch: "edge-1/1000000"}
	raw, _ := json.Marshal(d)
	if _, err := r.backend.Update(ctx, key, raw, 0); err != nil {
		t.Fatal(err)
	}
	e := r.epoch(t)
	r.state(t, ctx, e, "online")
	if state, epoch := r.device(t); state != "online" || epoch != held("edge-1", e) {
		t.Fatalf("device: state %q, epoch %q; want online from epoch %d", state, epoch, e)
	}
}

// countingUpdates counts the store's updates.
type countingUpdates struct {
	store.Backend
	n atomic.Int64
}

func (b *countingUpdates) Update(ctx context.Context, key string, value []byte, rev int64) (int64, error) {
	b.n.Add(1)
	return b.Backend.Update(ctx, key, value, rev)
}

// TestReportEpochsOrderedAndShared: an epoch is greater than every epoch returned before it
// was asked for, and sessions asking at once share a write.
func TestReportEpochsOrderedAndShared(t *testing.T) {
	bs, err := boltstore.Open(boltstore.DefaultConfig(filepath.Join(t.TempDir(), "cloud.db")), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	b := &countingUpdates{Backend: bs}
	epochs := NewReportEpochs(b, 10*time.Second)
	type call struct {
		asked, got time.Time
		epoch      int64
	}
	const workers, each = 50, 20
	calls := make([][]call, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				asked := time.Now()
				e, err := epochs.Next(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				calls[w] = append(calls[w], call{asked, time.Now(), e})
			}
		}()
	}
	wg.Wait()
	var all []call
	for _, cs := range calls {
		all = append(all, cs...)
	}
	for _, a := range all {
		for _, b := range all {
			if a.got.Before(b.asked) && a.epoch >= b.epoch {
				t.Fatalf("epoch %d returned at %s; %d asked for after it, at %s", a.epoch, a.got.Format(time.StampMicro), b.epoch, b.asked.Format(time.StampMicro))
			}
		}
	}
	if n := b.n.Load(); n >= workers*each {
		t.Fatalf("%d writes for %d epochs asked for by %d sessions at once; want them shared", n, workers*each, workers)
	}
	t.Logf("%d epochs from %d writes", workers*each, b.n.Load())
}

// TestReportOfAReplacedDeviceDropped: a report naming the uid of a Device that was deleted and
// made again under its name (one still queued at the edge then) is dropped, not shown on the
// new Device; a report naming the new uid, or none (an older edge), is applied. Before, reports
// named no uid and the old Device's landed on the new one.
func TestReportOfAReplacedDeviceDropped(t *testing.T) {
	r := newFenceRig(t)
	uidOf := func() string {
		var d struct{ Metadata struct{ UID string } }
		if err := json.Unmarshal([]byte(r.c.must(http.MethodGet, devsPath+"/d1", "")), &d); err != nil {
			t.Fatal(err)
		}
		return d.Metadata.UID
	}
	old := uidOf()
	r.c.must(http.MethodDelete, devsPath+"/d1", "")
	r.c.must(http.MethodPost, devsPath, deviceJSON("d1", "edge-1"))
	epoch := r.epoch(t)
	report := func(state, uid string) {
		t.Helper()
		rep := &protocol.Report{Kind: protocol.ReportDeviceState, Subject: "ns/d1", Payload: twin.EncodeStateReport(twin.DeviceState{State: state}, uid)}
		if err := r.nodes.Apply(context.Background(), "edge-1", epoch, rep); err != nil {
			t.Fatal(err)
		}
	}
	report("offline", old)
	if state, _ := r.device(t); state != "" {
		t.Fatalf("the replaced Device's report landed on the new one: state %q", state)
	}
	twinRep := &protocol.Report{Kind: protocol.ReportTwin, Subject: "ns/d1", Payload: []byte(`{"twins":[{"propertyName":"t","reported":{"value":"1"}}],"uid":"` + old + `"}`)}
	if err := r.nodes.Apply(context.Background(), "edge-1", epoch, twinRep); err != nil {
		t.Fatal(err)
	}
	if out := r.c.must(http.MethodGet, devsPath+"/d1", ""); strings.Contains(out, `"twins"`) {
		t.Fatalf("the replaced Device's twin report landed on the new one: %s", out)
	}
	report("online", uidOf())
	if state, _ := r.device(t); state != "online" {
		t.Fatalf("a report naming the Device's uid: state %q, want online", state)
	}
	report("offline", "")
	if state, _ := r.device(t); state != "offline" {
		t.Fatalf("a report naming no uid: state %q, want offline", state)
	}
}
