package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCloudDownEdgeServes: with the cloud stopped the edge keeps serving its data at once; the
// link's state shows in /readyz?verbose without making the edge unready.
func TestCloudDownEdgeServes(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-1")
	mustDo(t, http.MethodPost, c.url(paths["configmaps"]), configMapObj("cfg", map[string]string{"v": "1"}))
	mustDo(t, http.MethodPost, c.url(paths["pods"]), podObj("app", "edge-1", []string{"cfg"}, nil))
	waitNames(t, e.url(paths["configmaps"]), q("cfg")...)

	c.stop()
	waitFor(t, 10*time.Second, "edge notices the cloud is gone", func() bool {
		_, body := do(t, http.MethodGet, e.url("/readyz?verbose"), "", nil)
		return strings.Contains(string(body), "[~]cloud-link")
	})
	for i := 0; i < 20; i++ {
		start := time.Now()
		code, body := do(t, http.MethodGet, e.url(paths["pods"]+"/app"), "", nil)
		if code != http.StatusOK || !strings.Contains(string(body), `"nodeName":"edge-1"`) {
			t.Fatalf("offline get: %d %s", code, body)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("offline get took %s", d)
		}
	}
	if got := names(t, e.url(paths["configmaps"])); fmt.Sprint(got) != fmt.Sprint(q("cfg")) {
		t.Fatalf("offline list = %v", got)
	}
	if !httpOK(e.url("/readyz")) {
		t.Fatal("the edge went unready without the cloud")
	}
}

// TestChangesWhileAway: changes made while the edge is stopped (creates, updates, deletes and a
// dependency removal) arrive when it comes back; the same after the cloud restarts too.
func TestChangesWhileAway(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-1")
	create := func(res string, obj map[string]any) { mustDo(t, http.MethodPost, c.url(paths[res]), obj) }
	create("configmaps", configMapObj("keep", map[string]string{"v": "1"}))
	create("configmaps", configMapObj("drop", map[string]string{"v": "1"}))
	create("pods", podObj("app", "edge-1", []string{"keep", "drop"}, nil))
	create("services", serviceObj("old"))
	waitNames(t, e.url(paths["configmaps"]), q("drop", "keep")...)
	waitNames(t, e.url(paths["services"]), q("old")...)

	e.stop()
	mustDo(t, http.MethodDelete, c.url(paths["services"]+"/old"), nil)
	create("services", serviceObj("new"))
	mustDo(t, http.MethodPatch, c.url(paths["configmaps"]+"/keep"), `{"data":{"v":"2"}}`)
	mustDo(t, http.MethodPut, c.url(paths["pods"]+"/app"), podObj("app", "edge-1", []string{"keep"}, nil))
	create("configmaps", configMapObj("later", nil))
	create("pods", podObj("app2", "edge-1", []string{"later"}, nil))
	e.restart(t)
	waitNames(t, e.url(paths["services"]), q("new")...)
	waitNames(t, e.url(paths["configmaps"]), q("keep", "later")...)
	waitNames(t, e.url(paths["pods"]), q("app", "app2")...)
	_, body := do(t, http.MethodGet, e.url(paths["configmaps"]+"/keep"), "", nil)
	if !strings.Contains(string(body), `"v":"2"`) {
		t.Fatalf("keep = %s", body)
	}

	// Both stop; the cloud changes after a restart; both come back.
	e.stop()
	c.stop()
	c.start(t)
	mustDo(t, http.MethodDelete, c.url(paths["pods"]+"/app2"), nil)
	create("services", serviceObj("after-restart"))
	e.restart(t)
	waitNames(t, e.url(paths["pods"]), q("app")...)
	waitNames(t, e.url(paths["configmaps"]), q("keep")...)
	waitNames(t, e.url(paths["services"]), q("after-restart", "new")...)
}

// TestKillDuringStream: kill -9 of the edge while a stream of changes is arriving; after a
// restart the edge converges to exactly the cloud's view and its store passes bbolt's check.
func TestKillDuringStream(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-1")
	const n = 400
	var refs []string
	for i := 0; i < n; i++ {
		refs = append(refs, fmt.Sprintf("cfg-%03d", i))
	}
	mustDo(t, http.MethodPost, c.url(paths["pods"]), podObj("big", "edge-1", refs, nil))
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				code, body := do(t, http.MethodPost, c.url(paths["configmaps"]), "application/json", mustJSON(configMapObj(refs[i], map[string]string{"i": fmt.Sprint(i)})))
				if code != http.StatusCreated {
					errs <- fmt.Errorf("create %s: %d %s", refs[i], code, body)
				}
			}
		}(w)
	}
	// Kill the edge once part of the stream has landed.
	waitFor(t, 20*time.Second, "some configmaps on the edge", func() bool {
		return len(names(t, e.url(paths["configmaps"]))) >= n/8
	})
	e.kill()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	e.check(t)
	e.restart(t)
	want := make([]string, n)
	for i, r := range refs {
		want[i] = ns + "/" + r
	}
	waitNames(t, e.url(paths["configmaps"]), want...)
	// And the deletes of a half-delivered stream too.
	mustDo(t, http.MethodPut, c.url(paths["pods"]+"/big"), podObj("big", "edge-1", refs[:10], nil))
	waitNames(t, e.url(paths["configmaps"]), want[:10]...)
	e.stop()
	e.check(t)
}

// TestRestoredBackupNewClusterID: a cloud restored from a backup of its store and started with
// --replace-cluster-id (the ID the restored store holds) gives every edge a full reset, even
// after the restored history has written past the edge's cursor: what only the lost history
// had goes from the edge. Without the flag such an edge was caught up incrementally from a
// cursor of the lost history, and kept that object for good. Started again with the flag left
// on, the cloud keeps its new ID.
func TestRestoredBackupNewClusterID(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-1")
	mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj("before"))
	waitNames(t, e.url(paths["services"]), q("before")...)
	id := clusterID(t, c)
	c.stop()
	db := filepath.Join(c.dir, "cloud.db")
	backup, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	c.start(t)
	mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj("lost"))
	waitNames(t, e.url(paths["services"]), q("before", "lost")...)
	head := cloudRV(t, c)
	e.stop()
	c.stop()
	if err := os.WriteFile(db, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	c.extra = append(c.extra, "--replace-cluster-id", id)
	c.start(t)
	newID := clusterID(t, c)
	if newID == id {
		t.Fatalf("cluster ID %s kept", id)
	}
	// The restored history writes past the revision the edge had reached.
	for i := 0; cloudRV(t, c) <= head+2; i++ {
		mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj(fmt.Sprint("after-", i)))
	}
	e.restart(t)
	waitFor(t, 20*time.Second, "the edge to drop what only the lost history had", func() bool {
		got := names(t, e.url(paths["services"]))
		return !slices.Contains(got, q("lost")[0]) && slices.Contains(got, q("before")[0]) && slices.Contains(got, q("after-0")[0])
	})
	c.stop()
	c.start(t) // the flag still given
	if got := clusterID(t, c); got != newID {
		t.Fatalf("started again with the flag: cluster ID %s, want %s kept", got, newID)
	}
}

// clusterID is the cloud's cluster ID, from /tether/v1/info.
func clusterID(t *testing.T, c *cloud) string {
	t.Helper()
	var info struct{ Cluster string }
	json.Unmarshal(mustDo(t, http.MethodGet, c.url("/tether/v1/info"), nil), &info)
	if info.Cluster == "" {
		t.Fatal("no cluster ID in /tether/v1/info")
	}
	return info.Cluster
}

// cloudRV is the cloud's current revision, as a list of Services reports it.
func cloudRV(t *testing.T, c *cloud) int64 {
	t.Helper()
	var l struct {
		Metadata struct{ ResourceVersion string }
	}
	json.Unmarshal(mustDo(t, http.MethodGet, c.url(paths["services"]), nil), &l)
	rv, err := strconv.ParseInt(l.Metadata.ResourceVersion, 10, 64)
	if err != nil {
		t.Fatalf("list resourceVersion %q", l.Metadata.ResourceVersion)
	}
	return rv
}
