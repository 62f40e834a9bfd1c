package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// watcher records every event of a watch on a metaserver, from the start of the test.
type watcher struct {
	mu     sync.Mutex
	events []string // "TYPE namespace/name"
}

func watchAll(t *testing.T, url string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"?watch=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch %s: %s", url, resp.Status)
	}
	w := &watcher{}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			var ev struct {
				Type   string
				Object struct {
					Metadata struct{ Name, Namespace string }
				}
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				w.mu.Lock()
				w.events = append(w.events, ev.Type+" "+ev.Object.Metadata.Namespace+"/"+ev.Object.Metadata.Name)
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *watcher) saw(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if strings.HasSuffix(e, " "+name) {
			return true
		}
	}
	return false
}

// TestRouting: objects created, updated and deleted through the cloud API reach and leave the
// right edge stores and only those, including the dependency rules for ConfigMaps, Secrets and
// DeviceModels. A second node never receives the first node's Pods, Secrets or Devices.
func TestRouting(t *testing.T) {
	c := newCloud(t)
	e1 := newEdge(t, c, "edge-1")
	e2 := newEdge(t, c, "edge-2")
	spy := map[string]*watcher{}
	for _, res := range []string{"pods", "secrets", "devices", "configmaps"} {
		spy[res] = watchAll(t, e2.url(paths[res]))
	}

	create := func(res string, obj map[string]any) { mustDo(t, http.MethodPost, c.url(paths[res]), obj) }
	create("configmaps", configMapObj("cfg-a", map[string]string{"v": "1"}))
	create("configmaps", configMapObj("cfg-b", map[string]string{"v": "1"}))
	create("secrets", secretObj("sec-1"))
	create("secrets", secretObj("sec-2"))
	create("pods", podObj("p1", "edge-1", []string{"cfg-a"}, []string{"sec-1"}))
	create("pods", podObj("p2", "edge-2", []string{"cfg-b"}, []string{"sec-2"}))
	create("services", serviceObj("web"))
	create("endpointslices", sliceObj("web-1", "web", "edge-1", "edge-2"))
	create("devicemodels", modelObj("thermo"))
	create("devicemodels", modelObj("valve"))
	create("devices", deviceObj("d1", "edge-1", "thermo"))
	create("devices", deviceObj("d2", "edge-2", "valve"))

	want := func(e *edge, res string, names ...string) { waitNames(t, e.url(paths[res]), names...) }
	want(e1, "pods", q("p1")...)
	want(e1, "configmaps", q("cfg-a")...)
	want(e1, "secrets", q("sec-1")...)
	want(e1, "services", q("web")...)
	want(e1, "endpointslices", q("web-1")...)
	want(e1, "devices", q("d1")...)
	want(e1, "devicemodels", q("thermo")...)
	want(e1, "nodes", "edge-1")
	want(e2, "pods", q("p2")...)
	want(e2, "configmaps", q("cfg-b")...)
	want(e2, "secrets", q("sec-2")...)
	want(e2, "devices", q("d2")...)
	want(e2, "devicemodels", q("valve")...)
	want(e2, "nodes", "edge-2")

	// A pod switching ConfigMaps takes the old one off its node and brings the new one.
	mustDo(t, http.MethodPut, c.url(paths["pods"]+"/p1"), podObj("p1", "edge-1", []string{"cfg-b"}, []string{"sec-1"}))
	want(e1, "configmaps", q("cfg-b")...)
	want(e2, "configmaps", q("cfg-b")...)

	// An update of a shared ConfigMap reaches both nodes that use it.
	mustDo(t, http.MethodPatch, c.url(paths["configmaps"]+"/cfg-b"), `{"data":{"v":"2"}}`)
	for _, e := range []*edge{e1, e2} {
		waitFor(t, 10*time.Second, e.name+" sees cfg-b v2", func() bool {
			_, body := do(t, http.MethodGet, e.url(paths["configmaps"]+"/cfg-b"), "", nil)
			return strings.Contains(string(body), `"v":"2"`)
		})
	}

	// Status set in the cloud reaches the edge (a Pod's phase), and so does the Ready condition
	// the hub keeps in the edge's own Node; the hub's heartbeat refreshes alone do not.
	mustDo(t, http.MethodPatch, c.url(paths["pods"]+"/p2/status"), `{"status":{"phase":"Succeeded"}}`)
	waitFor(t, 10*time.Second, "edge-2 sees p2 Succeeded", func() bool {
		_, body := do(t, http.MethodGet, e2.url(paths["pods"]+"/p2"), "", nil)
		return strings.Contains(string(body), `"phase":"Succeeded"`)
	})
	waitFor(t, 10*time.Second, "edge-1's Node is Ready on the edge", func() bool {
		_, body := do(t, http.MethodGet, e1.url("/api/v1/nodes/edge-1"), "", nil)
		return strings.Contains(string(body), `"type":"Ready","status":"True"`) || strings.Contains(string(body), `"status":"True","type":"Ready"`)
	})

	// A device moving to another node takes its model along.
	mustDo(t, http.MethodPut, c.url(paths["devices"]+"/d1"), deviceObj("d1", "edge-2", "thermo"))
	want(e1, "devices")
	want(e1, "devicemodels")
	want(e2, "devices", q("d1", "d2")...)
	want(e2, "devicemodels", q("thermo", "valve")...)
	mustDo(t, http.MethodPut, c.url(paths["devices"]+"/d1"), deviceObj("d1", "edge-1", "thermo"))
	want(e2, "devices", q("d2")...)
	want(e1, "devices", q("d1")...)

	// Deleting a pod removes it and what only it needed.
	mustDo(t, http.MethodDelete, c.url(paths["pods"]+"/p1"), nil)
	want(e1, "pods")
	want(e1, "configmaps")
	want(e1, "secrets")
	want(e2, "configmaps", q("cfg-b")...)

	// Deletes of shared objects reach every node.
	mustDo(t, http.MethodDelete, c.url(paths["services"]+"/web"), nil)
	mustDo(t, http.MethodDelete, c.url(paths["endpointslices"]+"/web-1"), nil)
	want(e1, "services")
	want(e2, "services")
	want(e2, "endpointslices")

	// edge-2 never saw edge-1's pod, secret or device... except d1, which was on edge-2 for a while.
	for res, name := range map[string]string{"pods": ns + "/p1", "secrets": ns + "/sec-1", "configmaps": ns + "/cfg-a"} {
		if spy[res].saw(name) {
			t.Errorf("edge-2 received %s %s, which only edge-1 should get", res, name)
		}
	}
	if !spy["devices"].saw(ns + "/d2") {
		t.Error("the watch on edge-2 saw nothing: the spy is not working")
	}

	e1.stop()
	e2.stop()
	for _, k := range e2.storedKeys(t) {
		if strings.Contains(k, "/p1") || strings.Contains(k, "sec-1") || strings.Contains(k, "cfg-a") || strings.Contains(k, "edge-1") {
			t.Errorf("edge-2's store holds %s", k)
		}
	}
	if got := e1.storedKeys(t); strings.Join(got, " ") != "/devicemodels.devices.kubeedge.io/shop/thermo /devices.devices.kubeedge.io/shop/d1 /nodes/edge-1" {
		t.Errorf("edge-1's store holds %v", got)
	}
}
