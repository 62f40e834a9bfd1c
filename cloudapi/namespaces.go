package cloudapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
)

// SystemNamespaces are the namespaces that exist from the first start, as in Kubernetes:
// objects may be created in them before their Namespace objects are (Namespaces.Run creates
// those).
func SystemNamespaces() []string {
	return []string{"default", "kube-system", "kube-public", "kube-node-lease"}
}

func isSystemNamespace(ns string) bool { return slices.Contains(SystemNamespaces(), ns) }

// namespaceAccepts says whether an object may be created in ns, as Kubernetes' namespace
// lifecycle admission does: only in a namespace that exists and is not being deleted. The index
// as it is answers almost always (a client that created the namespace was answered once the
// index had it); only a namespace it does not have, which another replica may just have
// created, costs a read of the store's revision.
func (o *Objects) namespaceAccepts(ctx context.Context, ns string) error {
	err := namespaceOpen(o.ix.Snapshot(), ns)
	if apierrors.IsNotFound(err) {
		snap, lerr := o.latest(ctx)
		if lerr != nil {
			return lerr
		}
		err = namespaceOpen(snap, ns)
	}
	return err
}

// namespaceOpen is namespaceAccepts as of one snapshot.
func namespaceOpen(snap index.Snapshot, ns string) error {
	obj := snap.Get(resource.Prefix(resource.Namespaces, "") + ns)
	switch {
	case obj == nil && isSystemNamespace(ns):
		return nil
	case obj == nil:
		return kubeapi.NotFound("", resource.Namespaces, ns)
	case terminating(obj.Raw):
		return kubeapi.Forbidden("", resource.Namespaces, ns,
			fmt.Errorf("unable to create new content in namespace %s because it is being terminated", ns))
	}
	return nil
}

// deletionMeta is what the deletion rules read of a stored object.
type deletionMeta struct {
	Metadata struct {
		DeletionTimestamp *string  `json:"deletionTimestamp"`
		Finalizers        []string `json:"finalizers"`
	} `json:"metadata"`
}

func readDeletionMeta(raw []byte) (deletionMeta, bool) {
	var m deletionMeta
	return m, json.Unmarshal(raw, &m) == nil
}

// terminating says whether a stored object carries a deletionTimestamp.
func terminating(raw []byte) bool {
	m, ok := readDeletionMeta(raw)
	return ok && m.Metadata.DeletionTimestamp != nil
}

// heldByFinalizers says whether a stored object lists finalizers: its DELETE only marks it.
func heldByFinalizers(raw []byte) bool {
	m, ok := readDeletionMeta(raw)
	return ok && len(m.Metadata.Finalizers) > 0
}

// markDeleting is the DELETE of an object that cannot go at once, as in Kubernetes: a
// Namespace (Namespaces deletes what is in it, then it) or an object that lists finalizers (it
// goes when an update removes the last one: see write). It sets deletionTimestamp and answers
// with the object; a Namespace also turns Terminating, and new objects may not be created in it
// meanwhile. An object already marked is answered as it is. Without a precondition (expect 0)
// a write racing the mark (a status report) makes it try again on the fresher object.
func (o *Objects) markDeleting(ctx context.Context, info resource.Info, cur *index.Object, expect int64) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		if terminating(cur.Raw) {
			return cur.Raw, nil
		}
		obj, err := decodeObject(cur.Raw)
		if err != nil {
			return nil, kubeapi.Internal(err)
		}
		md := obj.metadata()
		delete(md, "resourceVersion")
		md["deletionTimestamp"] = o.now().UTC().Format(time.RFC3339)
		if info.GroupResource() == resource.Namespaces {
			st, _ := obj["status"].(map[string]any)
			if st == nil {
				st = map[string]any{}
			}
			st["phase"] = "Terminating"
			obj["status"] = st
		} else {
			md["deletionGracePeriodSeconds"] = 0
		}
		raw, err := json.Marshal(obj)
		if err != nil {
			return nil, kubeapi.Internal(err)
		}
		want := expect
		if want == 0 {
			want = cur.ModRev
		}
		rev, err := o.backend.Update(ctx, cur.StoreKey, raw, want)
		switch {
		case errors.Is(err, store.ErrConflict) && expect == 0 && attempt < 5:
			snap, err := o.latest(ctx)
			if err != nil {
				return nil, err
			}
			name := cur.Key.Name
			if cur = snap.Get(cur.StoreKey); cur == nil {
				return nil, kubeapi.NotFound(info.Group, info.Resource, name)
			}
			continue
		case errors.Is(err, store.ErrConflict):
			return nil, conflict(info, cur.Key.Name)
		case errors.Is(err, store.ErrNotFound):
			return nil, kubeapi.NotFound(info.Group, info.Resource, cur.Key.Name)
		case err != nil:
			return nil, kubeapi.Unavailable("the store refused the write: %v", err)
		}
		return o.readBack(ctx, info, cur.Key.Namespace, cur.Key.Name, rev)
	}
}

// Namespaces finishes what a Namespace's DELETE starts, as Kubernetes' namespace controller
// does: it deletes every object in a Terminating namespace (each deletion reaches the edges as
// any other; one that lists finalizers is marked, and waited for), then the Namespace. It also creates the SystemNamespaces that are missing. Every
// replica runs one; their deletions are idempotent.
type Namespaces struct {
	objects *Objects
	reg     *resource.Registry
	info    resource.Info
	log     zerolog.Logger
	wake    chan struct{}
	// Sweep is how often every namespace is looked at even without a change (a replica that
	// restarted mid-deletion, a deletion that failed).
	Sweep time.Duration
}

// NewNamespaces returns the namespace finalizer; it must be called before the index runs.
func NewNamespaces(objects *Objects, reg *resource.Registry, log zerolog.Logger) *Namespaces {
	info, _ := reg.ByGroupResource(resource.Namespaces)
	n := &Namespaces{objects: objects, reg: reg, info: info, log: log, wake: make(chan struct{}, 1), Sweep: 30 * time.Second}
	objects.ix.Subscribe(n.onUpdate)
	return n
}

// onUpdate runs on the index goroutine: a Namespace that is now Terminating wakes Run.
func (n *Namespaces) onUpdate(u index.Update) {
	nsChanged := u.New != nil && u.New.Key.Resource == resource.Namespaces && terminating(u.New.Raw)
	// An object whose finalizers held its namespace's deletion went.
	heldGone := u.New == nil && u.Old != nil && u.Old.Key.Namespace != "" && terminating(u.Old.Raw)
	if nsChanged || heldGone {
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
}

// Run creates the missing system namespaces, then finishes Terminating namespaces until ctx
// ends. Failures are logged and retried at the next sweep.
func (n *Namespaces) Run(ctx context.Context) error {
	select {
	case <-n.objects.ix.Ready():
	case <-ctx.Done():
		return nil
	}
	for _, ns := range SystemNamespaces() {
		body, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
		if _, err := n.objects.Create(ctx, n.info, "", body); err != nil && !apierrors.IsAlreadyExists(err) {
			if ctx.Err() != nil {
				return nil
			}
			n.log.Warn().Err(err).Str("namespace", ns).Msg("cannot create a system namespace; will retry at the next start")
		}
	}
	t := time.NewTicker(n.Sweep)
	defer t.Stop()
	for {
		if err := n.sweep(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn().Err(err).Msg("cannot finish deleting a namespace; retrying")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-n.wake:
		case <-t.C:
		}
	}
}

// sweep finishes every Terminating namespace.
func (n *Namespaces) sweep(ctx context.Context) error {
	snap, err := n.objects.latest(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range snap.List(resource.Prefix(resource.Namespaces, ""), "", 0) {
		if terminating(ns.Raw) {
			errs = append(errs, n.finish(ctx, snap, ns.Key.Name))
		}
	}
	return errors.Join(errs...)
}

// finish deletes what is in namespace ns, then ns. snap is at or after the mark, so it holds
// every object written before it; a create that checked the namespace before the mark and wrote
// after it removes its object itself (Objects.Create). One look is therefore enough; another is
// taken only when the Namespace itself changed meanwhile (a label edit).
func (n *Namespaces) finish(ctx context.Context, snap index.Snapshot, ns string) error {
	deleted := 0
	for pass := 0; ; pass++ {
		held := 0
		for _, info := range n.reg.All() {
			if !info.Namespaced {
				continue
			}
			for _, obj := range snap.List(resource.Prefix(info.GroupResource(), ns), "", 0) {
				if heldByFinalizers(obj.Raw) {
					// Marked, as its own DELETE would; the namespace waits for its finalizers.
					held++
					if _, err := n.objects.markDeleting(ctx, info, obj, 0); err != nil && !apierrors.IsNotFound(err) {
						return fmt.Errorf("namespace %s: marking %s deleted: %w", ns, obj.StoreKey, err)
					}
					continue
				}
				if _, _, err := n.objects.backend.Delete(ctx, obj.StoreKey, 0); err != nil && !errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("namespace %s: deleting %s: %w", ns, obj.StoreKey, err)
				}
				deleted++
			}
		}
		cur := snap.Get(resource.Prefix(resource.Namespaces, "") + ns)
		if cur == nil {
			return nil
		}
		if held > 0 || heldByFinalizers(cur.Raw) {
			// Looked at again when a marked object goes (onUpdate) or the Namespace changes.
			n.log.Debug().Str("namespace", ns).Int("held", held).Msg("namespace waits for finalizers")
			return nil
		}
		_, _, err := n.objects.backend.Delete(ctx, cur.StoreKey, cur.ModRev)
		switch {
		case err == nil:
			n.log.Info().Str("namespace", ns).Int("objects", deleted).Msg("namespace deleted with what was in it")
			return nil
		case errors.Is(err, store.ErrNotFound):
			return nil
		case !errors.Is(err, store.ErrConflict):
			return fmt.Errorf("namespace %s: %w", ns, err)
		case pass >= 10:
			return fmt.Errorf("namespace %s: it keeps changing while it is deleted", ns)
		}
		if snap, err = n.objects.latest(ctx); err != nil {
			return err
		}
	}
}
