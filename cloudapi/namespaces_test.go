package cloudapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/store"
)

const nsPath = "/api/v1/namespaces"

func nsJSON(name string) string {
	return `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"` + name + `"}}`
}

// TestCreateNeedsANamespace: as in Kubernetes, an object is created only in a namespace that
// exists (the system ones always do) and is not being deleted; the refusal stores nothing.
func TestCreateNeedsANamespace(t *testing.T) {
	c := newCloudWith(t, 1000, 0, nil) // no finalizer: a deleted namespace stays Terminating
	cm := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"}}`
	code, out := c.do(http.MethodPost, "/api/v1/namespaces/nope/configmaps", "application/json", cm)
	if code != 404 || !strings.Contains(out, `namespaces \"nope\" not found`) {
		t.Fatalf("create in a missing namespace: %d %s", code, out)
	}
	if code, _ := c.do(http.MethodGet, "/api/v1/namespaces/nope/configmaps/cfg", "", ""); code != 404 {
		t.Fatalf("the refused object was stored: %d", code)
	}
	c.must(http.MethodPost, "/api/v1/namespaces/default/configmaps", cm)
	c.must(http.MethodPost, "/api/v1/namespaces/kube-system/configmaps", cm)

	created := c.must(http.MethodPost, nsPath, nsJSON("shop"))
	if !strings.Contains(created, `"phase":"Active"`) {
		t.Fatalf("a new namespace is not Active: %s", created)
	}
	c.must(http.MethodPost, "/api/v1/namespaces/shop/configmaps", cm)
	// A client cannot mark a namespace deleted by writing it.
	patched := c.must(http.MethodPatch, nsPath+"/shop", `{"metadata":{"deletionTimestamp":"2026-01-01T00:00:00Z"}}`)
	if strings.Contains(patched, "deletionTimestamp") {
		t.Fatalf("a patch set deletionTimestamp: %s", patched)
	}

	code, out = c.do(http.MethodDelete, nsPath+"/shop", "", "")
	if code != 200 || !strings.Contains(out, `"phase":"Terminating"`) || !strings.Contains(out, "deletionTimestamp") {
		t.Fatalf("delete of a namespace: %d %s", code, out)
	}
	code, out = c.do(http.MethodPost, "/api/v1/namespaces/shop/configmaps", "application/json", strings.Replace(cm, "cfg", "late", 1))
	if code != 403 || !strings.Contains(out, "because it is being terminated") {
		t.Fatalf("create in a terminating namespace: %d %s", code, out)
	}
	// Writes to what is already there go on (the edges still report status meanwhile), and a
	// write cannot take the mark away.
	c.must(http.MethodPatch, "/api/v1/namespaces/shop/configmaps/cfg", `{"data":{"k":"v"}}`)
	if out := c.must(http.MethodPut, nsPath+"/shop", nsJSON("shop")); !strings.Contains(out, "deletionTimestamp") {
		t.Fatalf("an update cleared deletionTimestamp: %s", out)
	}
}

// TestDeletingANamespaceDeletesWhatIsInIt: the finalizer deletes every object in a Terminating
// namespace, then the namespace; other namespaces keep theirs; the system namespaces appear.
func TestDeletingANamespaceDeletesWhatIsInIt(t *testing.T) {
	c := newCloud(t, 1000)
	c.must(http.MethodPost, nsPath, nsJSON("shop"))
	c.must(http.MethodPost, nodesPath, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	for _, ns := range []string{"shop", "ns"} {
		c.must(http.MethodPost, "/api/v1/namespaces/"+ns+"/pods", strings.Replace(podJSON("p", "edge-1"), `"namespace":"ns"`, `"namespace":"`+ns+`"`, 1))
		c.must(http.MethodPost, "/api/v1/namespaces/"+ns+"/configmaps", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"}}`)
		c.must(http.MethodPost, "/api/v1/namespaces/"+ns+"/services", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"svc"},"spec":{"ports":[{"port":80}]}}`)
		c.must(http.MethodPost, "/apis/devices.kubeedge.io/v1beta1/namespaces/"+ns+"/devices", strings.Replace(deviceJSON("d", "edge-1"), `"namespace":"ns"`, `"namespace":"`+ns+`"`, 1))
	}
	c.must(http.MethodDelete, nsPath+"/shop", "")

	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := c.do(http.MethodGet, nsPath+"/shop", "", "")
		if code == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace still there after 10 s: %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range []string{"/api/v1/namespaces/%s/pods", "/api/v1/namespaces/%s/configmaps", "/api/v1/namespaces/%s/services", "/apis/devices.kubeedge.io/v1beta1/namespaces/%s/devices"} {
		if n := count(t, c.must(http.MethodGet, strings.Replace(p, "%s", "shop", 1), "")); n != 0 {
			t.Errorf("%s: %d objects left in the deleted namespace", p, n)
		}
		if n := count(t, c.must(http.MethodGet, strings.Replace(p, "%s", "ns", 1), "")); n != 1 {
			t.Errorf("%s: %d objects in the other namespace, want 1", p, n)
		}
	}
	for _, ns := range SystemNamespaces() {
		c.must(http.MethodGet, nsPath+"/"+ns, "")
	}
}

func count(t *testing.T, list string) int {
	t.Helper()
	var l struct{ Items []json.RawMessage }
	if err := json.Unmarshal([]byte(list), &l); err != nil {
		t.Fatal(err)
	}
	return len(l.Items)
}

// markFirst is a backend whose next Create of key first runs mark: the namespace is marked
// for deletion between a create's namespace check and its write, an interleaving no real
// store produces on demand.
type markFirst struct {
	store.Backend
	key  string
	mark func()
}

func (m *markFirst) Create(ctx context.Context, key string, value []byte) (int64, error) {
	if key == m.key && m.mark != nil {
		mark := m.mark
		m.mark = nil
		mark()
	}
	return m.Backend.Create(ctx, key, value)
}

// TestCreateRacingANamespaceDelete: an object written just after its namespace was marked
// (its check came first) is removed again and refused, so it cannot outlive the namespace.
func TestCreateRacingANamespaceDelete(t *testing.T) {
	var mf *markFirst
	c := newCloudWith(t, 1000, 0, func(b store.Backend) store.Backend {
		mf = &markFirst{Backend: b, key: "/configmaps/shop/late"}
		return mf
	})
	c.must(http.MethodPost, nsPath, nsJSON("shop"))
	mf.mark = func() { c.must(http.MethodDelete, nsPath+"/shop", "") }
	code, out := c.do(http.MethodPost, "/api/v1/namespaces/shop/configmaps", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"late"}}`)
	if code != 403 || !strings.Contains(out, "being terminated") {
		t.Fatalf("a create racing the namespace's delete: %d %s", code, out)
	}
	if code, out := c.do(http.MethodGet, "/api/v1/namespaces/shop/configmaps/late", "", ""); code != 404 {
		t.Fatalf("the racing object was left: %d %s", code, out)
	}
}

// TestSystemNamespacesNotDeleted: deleting default (or kube-system, kube-public,
// kube-node-lease) is refused with 403, as Kubernetes does, and what is in it stays; it was
// deleted with everything in it, on every edge.
func TestSystemNamespacesNotDeleted(t *testing.T) {
	c := newCloud(t, 1000)
	for _, ns := range []string{"default", "kube-system"} {
		// The cloud makes default itself at start, perhaps not yet: made here if not.
		if code, body := c.do(http.MethodPost, nsPath, "application/json", nsJSON(ns)); code != http.StatusCreated && code != http.StatusConflict {
			t.Fatalf("create namespace %s: %d %s", ns, code, body)
		}
		c.must(http.MethodPost, "/api/v1/namespaces/"+ns+"/configmaps", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"}}`)
		code, body := c.do(http.MethodDelete, nsPath+"/"+ns, "", "")
		if code != http.StatusForbidden || !strings.Contains(string(body), "may not be deleted") {
			t.Fatalf("DELETE namespace %s: %d %s, want 403", ns, code, body)
		}
		if code, _ := c.do(http.MethodGet, "/api/v1/namespaces/"+ns+"/configmaps/cfg", "", ""); code != 200 {
			t.Fatalf("the ConfigMap in %s after the refused delete: %d", ns, code)
		}
		if _, body := c.do(http.MethodGet, nsPath+"/"+ns, "", ""); strings.Contains(string(body), "deletionTimestamp") {
			t.Fatalf("namespace %s marked for deletion: %s", ns, body)
		}
	}
}
