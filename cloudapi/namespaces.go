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
				// One with finalizers is marked, as its own DELETE would; the namespace waits
				// for them.
				wait, err := n.objects.retire(ctx, info, obj)
				if err != nil {
					return fmt.Errorf("namespace %s: %w", ns, err)
				}
				if wait {
					held++
				} else {
					deleted++
				}
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
