package index

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
	"github.com/tetherhub/tether/store/boltstore"
)

const podJSON = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"default","labels":{"app":"web"}},
"spec":{"nodeName":"edge-1","volumes":[{"name":"c","configMap":{"name":"cfg"}},{"name":"s","secret":{"secretName":"creds"}},
{"name":"p","projected":{"sources":[{"configMap":{"name":"proj"}}]}}],
"containers":[{"name":"c","envFrom":[{"secretRef":{"name":"envsec"}}],"env":[{"name":"X","valueFrom":{"configMapKeyRef":{"name":"cfg","key":"x"}}}]}],
"imagePullSecrets":[{"name":"pull"}]}}`

func TestDecodeRoutes(t *testing.T) {
	reg := resource.New()
	o, err := Decode(reg, store.KV{Key: "/pods/default/web", Value: []byte(podJSON), CreateRev: 3, ModRev: 7})
	if err != nil {
		t.Fatal(err)
	}
	want := "[/configmaps/default/cfg /secrets/default/creds /configmaps/default/proj /secrets/default/envsec /secrets/default/pull]"
	if o.Node != "edge-1" || fmt.Sprint(o.Refs) != want {
		t.Fatalf("route = %+v\nwant refs %s", o.Route, want)
	}
	if o.Labels["app"] != "web" {
		t.Fatalf("labels = %v", o.Labels)
	}
	dev, err := Decode(reg, store.KV{Key: "/devices.devices.kubeedge.io/default/d1", ModRev: 1,
		Value: []byte(`{"metadata":{"name":"d1"},"spec":{"nodeName":"edge-2","deviceModelRef":{"name":"m"}}}`)})
	if err != nil {
		t.Fatal(err)
	}
	if dev.Node != "edge-2" || fmt.Sprint(dev.Refs) != "[/devicemodels.devices.kubeedge.io/default/m]" {
		t.Fatalf("device route = %+v", dev.Route)
	}
	if _, err := Decode(reg, store.KV{Key: "/pods/default/bad", Value: []byte(`{"spec":{"nodeName":5}}`)}); err == nil {
		t.Fatal("pod with a numeric nodeName decoded")
	}
	if _, err := Decode(reg, store.KV{Key: "/pods/default/null", Value: []byte(`null`)}); err == nil {
		t.Fatal("null decoded")
	}
}

func TestSetResourceVersionKeepsUnknownFields(t *testing.T) {
	out, err := SetResourceVersion([]byte(`{"kind":"X","metadata":{"name":"a","resourceVersion":"1"},"spec":{"big":12345678901234567890,"odd":[1,{"x":null}]}}`), 42)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"kind":"X","metadata":{"name":"a","resourceVersion":"42"},"spec":{"big":12345678901234567890,"odd":[1,{"x":null}]}}`
	if string(out) != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
}

type recorder struct {
	mu      sync.Mutex
	updates []Update
}

func (r *recorder) add(u Update) {
	r.mu.Lock()
	r.updates = append(r.updates, u)
	r.mu.Unlock()
}

func (r *recorder) wait(t *testing.T, n int) []Update {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		if len(r.updates) >= n {
			out := append([]Update(nil), r.updates...)
			r.mu.Unlock()
			return out
		}
		r.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("fewer than %d updates", n)
	return nil
}

func TestIndexFollowsStore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	path := filepath.Join(t.TempDir(), "cloud.db")
	b, err := boltstore.Open(boltstore.DefaultConfig(path), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Create(ctx, "/configmaps/default/cfg", []byte(`{"metadata":{"name":"cfg","namespace":"default"}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(ctx, "/tether/tokens/abc", []byte(`opaque`)); err != nil {
		t.Fatal(err)
	}
	ix, err := New(DefaultConfig(), b, resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	ix.Subscribe(rec.add)
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	<-ix.Ready()

	// The history before the start comes as historical updates (the token key is skipped).
	hist := rec.wait(t, 1)
	if !hist[0].Historical || hist[0].New == nil || hist[0].New.Key.Name != "cfg" {
		t.Fatalf("first update = %+v", hist[0])
	}

	rev, err := b.Create(ctx, "/pods/default/web", []byte(podJSON))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := ix.WaitFor(ctx, rev)
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.OnNode(resource.Pods, "edge-1"); len(got) != 1 || got[0].Key.Name != "web" {
		t.Fatalf("OnNode = %v", got)
	}
	if got := snap.Referencing("/configmaps/default/cfg"); len(got) != 1 {
		t.Fatalf("Referencing = %v", got)
	}
	if got := snap.Get("/pods/default/web"); got == nil || got.ModRev != rev {
		t.Fatalf("Get = %+v", got)
	}
	if got := snap.List("/configmaps/", "", 0); len(got) != 1 {
		t.Fatalf("List = %v", got)
	}
	if got := snap.List("/", "/configmaps/default/cfg", 1); len(got) != 1 || got[0].Key.Name != "web" {
		t.Fatalf("List after = %v", got)
	}

	drev, _, err := b.Delete(ctx, "/pods/default/web", 0)
	if err != nil {
		t.Fatal(err)
	}
	ups := rec.wait(t, 3)
	last := ups[2]
	if last.Historical || last.Rev() != drev || last.Old == nil || last.New != nil || last.Old.Node != "edge-1" {
		t.Fatalf("delete update = %+v", last)
	}
	if last.Snap.Get("/pods/default/web") != nil || len(last.Snap.OnNode(resource.Pods, "edge-1")) != 0 {
		t.Fatal("deleted pod still indexed")
	}
	// The snapshot handed with the create still shows the pod: snapshots are immutable.
	if ups[1].Snap.Get("/pods/default/web") == nil {
		t.Fatal("older snapshot changed")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestContentLeavesOutOnlyWhatTheEdgeReports: a change that only touches status the edge is the
// source of (a Device's status, a Node's heartbeat times) keeps the object's Content, so the hub
// does not echo it back; any other change, status included, changes it and is routed.
func TestContentLeavesOutOnlyWhatTheEdgeReports(t *testing.T) {
	reg := resource.New()
	content := func(key, value string, rev int64) uint64 {
		t.Helper()
		o, err := Decode(reg, store.KV{Key: key, Value: []byte(value), CreateRev: 1, ModRev: rev})
		if err != nil {
			t.Fatal(err)
		}
		return o.Content
	}
	const node = "/nodes/edge-1"
	ready := `{"metadata":{"name":"edge-1"},"status":{"conditions":[{"type":"Ready","status":"True","lastHeartbeatTime":"%s","lastTransitionTime":"2026-11-27T10:00:00Z"}]}}`
	base := content(node, fmt.Sprintf(ready, "2026-11-27T10:00:00Z"), 5)
	if c := content(node, fmt.Sprintf(ready, "2026-11-27T10:05:00Z"), 9); c != base {
		t.Error("a Node heartbeat refresh changed Content: every idle node would be sent its Node each StatusInterval")
	}
	unknown := `{"metadata":{"name":"edge-1"},"status":{"conditions":[{"type":"Ready","status":"Unknown","lastHeartbeatTime":"2026-11-27T10:00:00Z","lastTransitionTime":"2026-11-27T10:09:00Z"}]}}`
	if content(node, unknown, 9) == base {
		t.Error("a Node going Unknown kept its Content: the edge's copy would keep saying Ready")
	}
	if content(node, `{"metadata":{"name":"edge-1"}}`, 3) == base {
		t.Error("a Node's first status kept the Content of the Node without one")
	}

	const pod = "/pods/default/web"
	running := content(pod, `{"metadata":{"name":"web"},"spec":{"nodeName":"edge-1"},"status":{"phase":"Running"}}`, 5)
	if content(pod, `{"metadata":{"name":"web"},"spec":{"nodeName":"edge-1"},"status":{"phase":"Succeeded"}}`, 6) == running {
		t.Error("a Pod's phase change kept its Content: the edge would keep the old phase")
	}

	const dev = "/devices.devices.kubeedge.io/default/d1"
	d0 := content(dev, `{"metadata":{"name":"d1"},"spec":{"nodeName":"edge-1"}}`, 5)
	if content(dev, `{"metadata":{"name":"d1"},"spec":{"nodeName":"edge-1"},"status":{"twins":[{"propertyName":"t","reported":{"value":"21"}}]}}`, 8) != d0 {
		t.Error("a Device's reported twins changed its Content: every report would be echoed back to its edge")
	}
	if content(dev, `{"metadata":{"name":"d1","labels":{"a":"b"}},"spec":{"nodeName":"edge-1"}}`, 9) == d0 {
		t.Error("a Device's label change kept its Content")
	}
	if content(dev, `{"metadata":{"name":"d1","annotations":{"tether.dev/report-epoch":"edge-1/7"}},"spec":{"nodeName":"edge-1"},"status":{"state":"online"}}`, 10) != d0 {
		t.Error("a Device's first report epoch changed its Content: each Device would be sent to its edge again at its first report of a session")
	}
	withNote := `{"metadata":{"name":"d1","annotations":{"note":"x"%s}},"spec":{"nodeName":"edge-1"}}`
	if content(dev, fmt.Sprintf(withNote, ""), 11) != content(dev, fmt.Sprintf(withNote, `,"tether.dev/report-epoch":"edge-1/7"`), 12) {
		t.Error("a report epoch beside another annotation changed the Device's Content")
	}
}

// TestVolumePluginSecretsRouted: Secrets that volume plugins take (a CSI volume's
// nodePublishSecretRef, the secretRef of cephfs, rbd, iscsi, flexVolume, scaleIO, storageos and
// cinder, azureFile's secretName) reach the pod's node, as Kubernetes' node authorizer lets a
// node read them; they were not routed.
func TestVolumePluginSecretsRouted(t *testing.T) {
	pod := `{"metadata":{"name":"p","namespace":"default"},"spec":{"nodeName":"edge-1","volumes":[
		{"name":"a","csi":{"driver":"d","nodePublishSecretRef":{"name":"csi"}}},
		{"name":"b","cephfs":{"monitors":["m"],"secretRef":{"name":"ceph"}}},
		{"name":"c","rbd":{"monitors":["m"],"image":"i","secretRef":{"name":"rbd"}}},
		{"name":"d","iscsi":{"targetPortal":"t","iqn":"q","lun":0,"secretRef":{"name":"iscsi"}}},
		{"name":"e","flexVolume":{"driver":"f","secretRef":{"name":"flex"}}},
		{"name":"f","scaleIO":{"gateway":"g","system":"s","secretRef":{"name":"scaleio"}}},
		{"name":"g","storageos":{"volumeName":"v","secretRef":{"name":"storageos"}}},
		{"name":"h","cinder":{"volumeID":"v","secretRef":{"name":"cinder"}}},
		{"name":"i","azureFile":{"secretName":"azure","shareName":"s"}}]}}`
	o, err := Decode(resource.New(), store.KV{Key: "/pods/default/p", Value: []byte(pod), CreateRev: 1, ModRev: 1})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range o.Refs {
		got = append(got, strings.TrimPrefix(r, "/secrets/default/"))
	}
	if want := "[csi ceph rbd iscsi flex scaleio storageos cinder azure]"; fmt.Sprint(got) != want {
		t.Fatalf("refs %v, want %s", got, want)
	}
}
