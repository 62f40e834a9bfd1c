package cloudapi

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhub/tether/store"
)

// racingBackend runs a hook once, just before the next write to a key, as a client writing at
// that moment would: the write then finds the object changed.
type racingBackend struct {
	store.Backend
	mu    sync.Mutex
	hooks map[string]func(value []byte) bool // key → hook; a hook that returns false stays armed
}

func (b *racingBackend) arm(key string, hook func(value []byte) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hooks[key] = hook
}

func (b *racingBackend) fire(key string, value []byte) {
	b.mu.Lock()
	hook := b.hooks[key]
	delete(b.hooks, key)
	b.mu.Unlock()
	if hook != nil && !hook(value) {
		b.arm(key, hook)
	}
}

func (b *racingBackend) Update(ctx context.Context, key string, value []byte, rev int64) (int64, error) {
	b.fire(key, value)
	return b.Backend.Update(ctx, key, value, rev)
}

func (b *racingBackend) Delete(ctx context.Context, key string, rev int64) (int64, store.KV, error) {
	b.fire(key, nil)
	return b.Backend.Delete(ctx, key, rev)
}

func newRacingCloud(t *testing.T) (*cloud, *racingBackend) {
	var rb *racingBackend
	c := newCloudWith(t, 1000, testSweep, func(b store.Backend) store.Backend {
		rb = &racingBackend{Backend: b, hooks: map[string]func([]byte) bool{}}
		return rb
	})
	return c, rb
}

// TestDeleteRacingFinalizerRemoval: a DELETE whose mark races the removal of the object's last
// finalizer deletes the object, as Kubernetes would on the object as it is then. Before, the
// retried mark left it with a deletionTimestamp and no finalizer, for good.
func TestDeleteRacingFinalizerRemoval(t *testing.T) {
	c, rb := newRacingCloud(t)
	c.must(http.MethodPost, cmsPath, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","finalizers":["example.com/a"]}}`)
	rb.arm("/configmaps/ns/held", func(value []byte) bool {
		if !strings.Contains(string(value), "deletionTimestamp") {
			return false // not the mark
		}
		c.must(http.MethodPatch, cmsPath+"/held", `{"metadata":{"finalizers":null}}`)
		return true
	})
	c.must(http.MethodDelete, cmsPath+"/held", "")
	if code, out := c.do(http.MethodGet, cmsPath+"/held", "", ""); code != 404 {
		t.Fatalf("after a delete that raced the removal of the last finalizer: %d %s", code, out)
	}
}

// TestFinalizerRemovalRacingIs409: an update with a resourceVersion that removes the last
// finalizer, racing another write, is a 409 that client-go's RetryOnConflict retries. Before, it
// was a 500.
func TestFinalizerRemovalRacingIs409(t *testing.T) {
	c, rb := newRacingCloud(t)
	c.must(http.MethodPost, cmsPath, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","finalizers":["example.com/a"]},"data":{"k":"v"}}`)
	marked := c.must(http.MethodDelete, cmsPath+"/held", "")
	rb.arm("/configmaps/ns/held", func([]byte) bool {
		c.must(http.MethodPatch, cmsPath+"/held", `{"data":{"k":"w"}}`)
		return true
	})
	put := strings.Replace(marked, `"finalizers":["example.com/a"],`, "", 1)
	if put == marked {
		t.Fatalf("no finalizer to take out of %s", marked)
	}
	if code, out := c.do(http.MethodPut, cmsPath+"/held", "application/json", put); code != http.StatusConflict {
		t.Fatalf("removing the last finalizer at a version a write just passed: %d %s, want 409", code, out)
	}
	if code, _ := c.do(http.MethodGet, cmsPath+"/held", "", ""); code != 200 {
		t.Fatalf("the object went although its update was refused: %d", code)
	}
}

// TestNamespaceFinisherSeesANewFinalizer: a finalizer added to an object just before the
// namespace finisher deletes it holds the object, which is marked instead, and the namespace
// waits. Before, the finisher deleted what its snapshot showed, without finalizers.
func TestNamespaceFinisherSeesANewFinalizer(t *testing.T) {
	c, rb := newRacingCloud(t)
	const shopCMs = "/api/v1/namespaces/shop/configmaps"
	c.must(http.MethodPost, nsPath, nsJSON("shop"))
	c.must(http.MethodPost, shopCMs, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"}}`)
	rb.arm("/configmaps/shop/cm", func(value []byte) bool {
		if value != nil {
			return false // not the finisher's delete
		}
		c.must(http.MethodPatch, shopCMs+"/cm", `{"metadata":{"finalizers":["example.com/a"]}}`)
		return true
	})
	c.must(http.MethodDelete, nsPath+"/shop", "")
	waitUntil(t, "the object is marked", func() bool {
		code, out := c.do(http.MethodGet, shopCMs+"/cm", "", "")
		if code != 200 {
			t.Fatalf("the object whose finalizer came just before the finisher's delete: %d %s", code, out)
		}
		return strings.Contains(out, "deletionTimestamp")
	})
	if code, out := c.do(http.MethodGet, nsPath+"/shop", "", ""); code != 200 {
		t.Fatalf("the namespace went before its held object: %d %s", code, out)
	}
}

// TestPodMarkedWithItsGracePeriod: a Pod held by a finalizer is marked with its grace period,
// as Kubernetes marks it (spec.terminationGracePeriodSeconds); other kinds with none.
func TestPodMarkedWithItsGracePeriod(t *testing.T) {
	c := newCloud(t, 1000)
	pod := strings.Replace(podJSON("p", "edge-1"), `"namespace":"ns"`, `"namespace":"ns","finalizers":["example.com/a"]`, 1)
	pod = strings.Replace(pod, `"nodeName":"edge-1"`, `"nodeName":"edge-1","terminationGracePeriodSeconds":10`, 1)
	if !strings.Contains(pod, "finalizers") || !strings.Contains(pod, "terminationGracePeriodSeconds") {
		t.Fatalf("test pod: %s", pod)
	}
	c.must(http.MethodPost, podsPath, pod)
	if out := c.must(http.MethodDelete, podsPath+"/p", ""); !strings.Contains(out, `"deletionGracePeriodSeconds":10`) {
		t.Fatalf("the marked pod: %s", out)
	}
}

// waitUntil fails the test if ok is not true within 10 s.
func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
