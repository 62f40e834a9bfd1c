package cloudapi

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestFinalizersHoldDeletion: as in Kubernetes, the DELETE of an object that lists finalizers
// only marks it (deletionTimestamp, a MODIFIED event); no finalizer may be added then; the
// update that removes the last one deletes it (a DELETED event). Before, the DELETE removed it
// at once.
func TestFinalizersHoldDeletion(t *testing.T) {
	c := newCloud(t, 1000)
	lines := c.watchLines(cmsPath + "?watch=1")
	cm := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","finalizers":["example.com/a","example.com/b"]},"data":{"k":"v"}}`
	c.must(http.MethodPost, cmsPath, cm)
	if typ, name := next(t, lines); typ != "ADDED" || name != "held" {
		t.Fatalf("event %s %s", typ, name)
	}

	code, out := c.do(http.MethodDelete, cmsPath+"/held", "", "")
	if code != 200 || !strings.Contains(out, `"deletionTimestamp"`) || !strings.Contains(out, `"deletionGracePeriodSeconds":0`) {
		t.Fatalf("delete of a held object: %d %s", code, out)
	}
	if typ, _ := next(t, lines); typ != "MODIFIED" {
		t.Fatalf("the mark is a %s event, want MODIFIED", typ)
	}
	got := c.must(http.MethodGet, cmsPath+"/held", "")
	if !strings.Contains(got, `"deletionTimestamp"`) {
		t.Fatalf("the held object lost its mark: %s", got)
	}
	// A second DELETE answers the object as it is and writes nothing.
	if again := c.must(http.MethodDelete, cmsPath+"/held", ""); rvOf(t, again) != rvOf(t, got) {
		t.Fatalf("a second delete wrote: %s then %s", got, again)
	}

	code, out = c.do(http.MethodPatch, cmsPath+"/held", "application/merge-patch+json", `{"metadata":{"finalizers":["example.com/a","example.com/b","example.com/c"]}}`)
	if code != 422 || !strings.Contains(out, "no new finalizers can be added") {
		t.Fatalf("adding a finalizer to a deleted object: %d %s", code, out)
	}
	// Other writes go on meanwhile; removing one finalizer of two keeps the object.
	c.must(http.MethodPatch, cmsPath+"/held", `{"metadata":{"finalizers":["example.com/b"]},"data":{"k":"w"}}`)
	if typ, _ := next(t, lines); typ != "MODIFIED" {
		t.Fatalf("event %s, want MODIFIED", typ)
	}
	code, out = c.do(http.MethodPatch, cmsPath+"/held", "application/json-patch+json", `[{"op":"remove","path":"/metadata/finalizers"}]`)
	if code != 200 || !strings.Contains(out, `"deletionTimestamp"`) {
		t.Fatalf("removing the last finalizer: %d %s", code, out)
	}
	if typ, name := next(t, lines); typ != "DELETED" || name != "held" {
		t.Fatalf("event %s %s, want DELETED held", typ, name)
	}
	if code, out := c.do(http.MethodGet, cmsPath+"/held", "", ""); code != 404 {
		t.Fatalf("the object is still there once its finalizers are gone: %d %s", code, out)
	}

	// A new object of the same name starts unmarked, whatever it is sent with.
	created := c.must(http.MethodPost, cmsPath, strings.Replace(cm, `"name":"held"`, `"name":"held","deletionTimestamp":"2026-01-01T00:00:00Z","deletionGracePeriodSeconds":0`, 1))
	if strings.Contains(created, "deletion") {
		t.Fatalf("a create kept a deletion mark: %s", created)
	}
	// An object without finalizers goes at once, as before.
	c.must(http.MethodPost, cmsPath, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"free"}}`)
	c.must(http.MethodDelete, cmsPath+"/free", "")
	if code, _ := c.do(http.MethodGet, cmsPath+"/free", "", ""); code != 404 {
		t.Fatalf("an object without finalizers is still there after its delete: %d", code)
	}
}

// TestNamespaceWaitsForFinalizers: deleting a namespace marks the objects in it that list
// finalizers and deletes the rest; the namespace goes once the last of them has gone, woken by
// its deletion (the finisher's sweep is an hour here).
func TestNamespaceWaitsForFinalizers(t *testing.T) {
	c := newCloudWith(t, 1000, time.Hour, nil)
	const shopCMs = "/api/v1/namespaces/shop/configmaps"
	c.must(http.MethodPost, nsPath, nsJSON("shop"))
	c.must(http.MethodPost, shopCMs, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","finalizers":["example.com/a"]}}`)
	c.must(http.MethodPost, shopCMs, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"free"}}`)
	c.must(http.MethodDelete, nsPath+"/shop", "")

	waitFor := func(what string, done func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !done() {
			if time.Now().After(deadline) {
				t.Fatalf("after 10 s: %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("the object without finalizers is still there", func() bool {
		code, _ := c.do(http.MethodGet, shopCMs+"/free", "", "")
		return code == 404
	})
	waitFor("the held object is not marked", func() bool {
		return strings.Contains(c.must(http.MethodGet, shopCMs+"/held", ""), "deletionTimestamp")
	})
	time.Sleep(200 * time.Millisecond) // the finisher had its chance to take the namespace
	if code, out := c.do(http.MethodGet, nsPath+"/shop", "", ""); code != 200 || !strings.Contains(out, "Terminating") {
		t.Fatalf("the namespace went before the object its finalizers hold: %d %s", code, out)
	}

	c.must(http.MethodPatch, shopCMs+"/held", `{"metadata":{"finalizers":null}}`)
	waitFor("the namespace is still there once its last object went", func() bool {
		code, _ := c.do(http.MethodGet, nsPath+"/shop", "", "")
		return code == 404
	})
}
