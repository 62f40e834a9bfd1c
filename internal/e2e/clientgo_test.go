package e2e

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// events records what informers deliver, as "ADD|UPDATE|DELETE kind name".
type events struct {
	mu  sync.Mutex
	all []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.all = append(e.all, s)
	e.mu.Unlock()
}

func (e *events) has(s string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, x := range e.all {
		if x == s {
			return true
		}
	}
	return false
}

func (e *events) snapshot() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.all...)
}

// wait waits until every event in want was delivered: a shared informer updates its
// store before it hands the event to the handlers, so a store that shows an object does not
// mean the handler has seen it yet.
func (e *events) wait(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		missing := ""
		for _, s := range want {
			if !e.has(s) {
				missing = s
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q among %v", missing, e.snapshot())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *events) handler(kind string, describe func(obj any) string) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { e.add("ADD " + kind + " " + describe(obj)) },
		UpdateFunc: func(_, obj any) { e.add("UPDATE " + kind + " " + describe(obj)) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			e.add("DELETE " + kind + " " + describe(obj))
		},
	}
}

func nameOf(obj any) string {
	if m, ok := obj.(metav1.Object); ok {
		return m.GetName()
	}
	return fmt.Sprintf("%T", obj)
}

func storeNames(s cache.Store) []string {
	var out []string
	for _, o := range s.List() {
		out = append(out, nameOf(o))
	}
	sort.Strings(out)
	return out
}

func waitStore(t *testing.T, s cache.Store, what string, want ...string) {
	t.Helper()
	sort.Strings(want)
	waitFor(t, 20*time.Second, what+" = "+fmt.Sprint(want), func() bool { return fmt.Sprint(storeNames(s)) == fmt.Sprint(want) })
}

// initialStates counts the requests a metaserver answered with a full state: LISTs, and
// watches that start by sending the current state (client-go's streamed lists).
func initialStates(t *testing.T, e *edge) int {
	t.Helper()
	_, body := do(t, http.MethodGet, e.url("/metrics"), "", nil)
	re := regexp.MustCompile(`(?m)^tether_edge_metaserver_requests_total\{code="2\d\d",verb="(list|watchlist)"\} ([0-9.e+]+)$`)
	n := 0
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		n += int(v)
	}
	return n
}

// TestInformersOnEdge: client-go shared informers (typed Pods, ConfigMaps and EndpointSlices,
// dynamic Devices) against the edge metaserver sync, see updates and deletes as such, and
// after the cloud is stopped and restarted with changes made meanwhile, converge without
// listing again and see the deletes.
func TestInformersOnEdge(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-i")
	create := func(res string, obj map[string]any) { mustDo(t, http.MethodPost, c.url(paths[res]), obj) }
	create("configmaps", configMapObj("cfg-a", map[string]string{"v": "1"}))
	create("configmaps", configMapObj("cfg-b", map[string]string{"v": "1"}))
	create("pods", podObj("app", "edge-i", []string{"cfg-a", "cfg-b"}, nil))
	create("services", serviceObj("web"))
	create("endpointslices", sliceObj("web-1", "web", "edge-i"))
	create("endpointslices", sliceObj("web-2", "web", "edge-i"))
	create("devicemodels", modelObj("thermo"))
	create("devices", deviceObj("d1", "edge-i", "thermo"))
	create("devices", deviceObj("d2", "edge-i", "thermo"))
	waitNames(t, e.url(paths["devices"]), q("d1", "d2")...)

	cfg := &rest.Config{Host: "http://" + e.meta, QPS: -1}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	dfactory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, ns, nil)
	var ev events
	pods := factory.Core().V1().Pods().Informer()
	cms := factory.Core().V1().ConfigMaps().Informer()
	slices := factory.Discovery().V1().EndpointSlices().Informer()
	devs := dfactory.ForResource(schema.GroupVersionResource{Group: "devices.kubeedge.io", Version: "v1beta1", Resource: "devices"}).Informer()
	pods.AddEventHandler(ev.handler("pod", nameOf))
	cms.AddEventHandler(ev.handler("configmap", func(o any) string {
		cm := o.(*corev1.ConfigMap)
		return cm.Name + " v=" + cm.Data["v"]
	}))
	slices.AddEventHandler(ev.handler("slice", func(o any) string { return o.(*discoveryv1.EndpointSlice).Name }))
	devs.AddEventHandler(ev.handler("device", func(o any) string {
		u := o.(*unstructured.Unstructured)
		state, _, _ := unstructured.NestedString(u.Object, "status", "state")
		return u.GetName() + " state=" + state
	}))
	factory.Start(ctx.Done())
	dfactory.Start(ctx.Done())
	for _, inf := range []cache.SharedIndexInformer{pods, cms, slices, devs} {
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			t.Fatal("informers did not sync")
		}
	}
	waitStore(t, pods.GetStore(), "pods", "app")
	waitStore(t, cms.GetStore(), "configmaps", "cfg-a", "cfg-b")
	waitStore(t, slices.GetStore(), "slices", "web-1", "web-2")
	waitStore(t, devs.GetStore(), "devices", "d1", "d2")
	ev.wait(t, "ADD pod app", "ADD configmap cfg-a v=1", "ADD slice web-1", "ADD device d1 state=")

	// An update and a delete arrive as such.
	mustDo(t, http.MethodPatch, c.url(paths["configmaps"]+"/cfg-a"), `{"data":{"v":"2"}}`)
	mustDo(t, http.MethodDelete, c.url(paths["devices"]+"/d2"), nil)
	waitFor(t, 15*time.Second, "update and delete events", func() bool {
		return ev.has("UPDATE configmap cfg-a v=2") && ev.has("DELETE device d2 state=")
	})
	// A device's status written through the metaserver (as a mapper would) reaches the
	// informer as an update, though the cloud does not route status changes down.
	code, body := do(t, http.MethodPatch, e.url(paths["devices"]+"/d1/status"), "application/merge-patch+json", []byte(`{"status":{"state":"online"}}`))
	if code != http.StatusOK {
		t.Fatalf("status patch through the metaserver: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "the status update event", func() bool { return ev.has("UPDATE device d1 state=online") })

	lists := initialStates(t, e)
	if lists < 4 {
		t.Fatalf("the metaserver counted %d full-state requests for four informers' initial sync", lists)
	}
	c.stop()
	waitFor(t, 10*time.Second, "edge notices the cloud is gone", func() bool {
		_, body := do(t, http.MethodGet, e.url("/readyz?verbose"), "", nil)
		return strings.Contains(string(body), "[~]cloud-link")
	})
	c.start(t)
	// Changes made before the edge is back: a delete with a dependency removal (cfg-b is
	// referenced by nothing once the pod references only cfg-a), a slice delete, new objects.
	mustDo(t, http.MethodPut, c.url(paths["pods"]+"/app"), podObj("app", "edge-i", []string{"cfg-a"}, nil))
	mustDo(t, http.MethodDelete, c.url(paths["endpointslices"]+"/web-2"), nil)
	create("configmaps", configMapObj("cfg-c", map[string]string{"v": "1"}))
	create("pods", podObj("app2", "edge-i", []string{"cfg-c"}, nil))
	create("devices", deviceObj("d3", "edge-i", "thermo"))

	waitStore(t, cms.GetStore(), "configmaps after the outage", "cfg-a", "cfg-c")
	waitStore(t, pods.GetStore(), "pods after the outage", "app", "app2")
	waitStore(t, slices.GetStore(), "slices after the outage", "web-1")
	waitStore(t, devs.GetStore(), "devices after the outage", "d1", "d3")
	ev.wait(t, "DELETE configmap cfg-b v=1", "DELETE slice web-2", "ADD device d3 state=", "ADD pod app2")
	if after := initialStates(t, e); after != lists {
		t.Fatalf("the informers listed again: %d full-state requests before the outage, %d after", lists, after)
	}
}
