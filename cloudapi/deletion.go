package cloudapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
)

// Deletion follows Kubernetes. An object that lists metadata.finalizers is not deleted by its
// DELETE but marked (deletionTimestamp); no finalizer may be added to it then, and the write
// that removes the last one deletes it (Objects.write). A Namespace is marked too, and
// Namespaces deletes what is in it and then it. Every decision is taken on the object the store
// write is made against (its revision), so a finalizer added or removed meanwhile is never
// missed: the write conflicts, and the decision is taken again on the fresher object.

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

// Delete implements kubeapi.Storage. A resourceVersion precondition pins the object: if it
// changes meanwhile the answer is 409. Otherwise a write racing the delete (a status report)
// makes it look again at the fresher object.
func (o *Objects) Delete(ctx context.Context, info resource.Info, ns, name string, opts kubeapi.DeleteOptions) ([]byte, error) {
	if info.GroupResource() == resource.Namespaces && immortal(name) {
		// As Kubernetes answers: deleting one would delete everything in it, on every edge.
		return nil, kubeapi.Forbidden(info.Group, info.Resource, name, errors.New("this namespace may not be deleted"))
	}
	for attempt := 0; ; attempt++ {
		snap, err := o.latest(ctx)
		if err != nil {
			return nil, err
		}
		cur := snap.Get(storeKey(info, ns, name))
		if cur == nil {
			return nil, kubeapi.NotFound(info.Group, info.Resource, name)
		}
		if opts.UID != "" && opts.UID != cur.UID {
			return nil, kubeapi.Conflict(info.Group, info.Resource, name, fmt.Errorf("precondition failed: UID in precondition: %s, UID in object meta: %s", opts.UID, cur.UID))
		}
		if opts.ResourceVersion != "" && opts.ResourceVersion != strconv.FormatInt(cur.ModRev, 10) {
			return nil, conflict(info, name)
		}
		out, err := o.deleteOrMark(ctx, info, cur)
		if errors.Is(err, store.ErrConflict) {
			if opts.ResourceVersion == "" && attempt < 5 {
				continue
			}
			return nil, conflict(info, name)
		}
		return out, err
	}
}

// deleteOrMark deletes cur, or marks it if it cannot go at once (a Namespace, an object with
// finalizers), if it is still at its revision; store.ErrConflict if not.
func (o *Objects) deleteOrMark(ctx context.Context, info resource.Info, cur *index.Object) ([]byte, error) {
	if info.GroupResource() == resource.Namespaces || heldByFinalizers(cur.Raw) {
		return o.markDeleting(ctx, info, cur)
	}
	if _, _, err := o.backend.Delete(ctx, cur.StoreKey, cur.ModRev); err != nil {
		return nil, deletionWriteError(info, cur.Key.Name, err)
	}
	return json.Marshal(map[string]any{
		"kind": "Status", "apiVersion": "v1", "status": "Success",
		"details": map[string]any{"name": cur.Key.Name, "group": info.Group, "kind": info.Resource, "uid": cur.UID},
	})
}

// markDeleting is the DELETE of an object that cannot go at once: it sets deletionTimestamp,
// if cur is still at its revision (store.ErrConflict if not), and answers with the object. A
// Namespace also turns Terminating, and new objects may not be created in it meanwhile. A Pod is
// given its grace period, as Kubernetes gives it (spec.terminationGracePeriodSeconds, 30 s if
// unset); anything else none. An object already marked is answered as it is.
func (o *Objects) markDeleting(ctx context.Context, info resource.Info, cur *index.Object) ([]byte, error) {
	if terminating(cur.Raw) {
		return cur.Raw, nil
	}
	obj, err := decodeObject(cur.Raw)
	if err != nil {
		return nil, kubeapi.Internal(err)
	}
	md := obj.metadata()
	delete(md, "resourceVersion")
	at := o.now().UTC()
	switch info.GroupResource() {
	case resource.Namespaces:
		st, _ := obj["status"].(map[string]any)
		if st == nil {
			st = map[string]any{}
		}
		st["phase"] = "Terminating"
		obj["status"] = st
	case resource.Pods:
		grace := int64(30)
		spec, _ := obj["spec"].(map[string]any)
		if g, ok := spec["terminationGracePeriodSeconds"].(json.Number); ok {
			if n, err := g.Int64(); err == nil && n >= 0 {
				grace = n
			}
		}
		at = at.Add(time.Duration(grace) * time.Second)
		md["deletionGracePeriodSeconds"] = grace
	default:
		md["deletionGracePeriodSeconds"] = 0
	}
	md["deletionTimestamp"] = at.Format(time.RFC3339)
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, kubeapi.Internal(err)
	}
	rev, err := o.backend.Update(ctx, cur.StoreKey, raw, cur.ModRev)
	if err != nil {
		return nil, deletionWriteError(info, cur.Key.Name, err)
	}
	return o.readBack(ctx, info, cur.Key.Namespace, cur.Key.Name, rev)
}

// retire is deleteOrMark for the namespace finisher: it decides on cur first, and on the object
// as it is now whenever the store says it changed. held says the object is still there, marked
// and waiting for its finalizers.
func (o *Objects) retire(ctx context.Context, info resource.Info, cur *index.Object) (held bool, err error) {
	for attempt := 0; ; attempt++ {
		_, err := o.deleteOrMark(ctx, info, cur)
		switch {
		case err == nil:
			return heldByFinalizers(cur.Raw), nil
		case apierrors.IsNotFound(err):
			return false, nil
		case !errors.Is(err, store.ErrConflict):
			return false, err
		case attempt >= 10:
			return false, fmt.Errorf("%s keeps changing while it is deleted", cur.StoreKey)
		}
		snap, err := o.latest(ctx)
		if err != nil {
			return false, err
		}
		if cur = snap.Get(cur.StoreKey); cur == nil {
			return false, nil
		}
	}
}

// finishDelete deletes an object whose last finalizer a write removed, if it is still at rev
// (store.ErrConflict if not, for the caller to look again), and answers with it as that write
// left it.
func (o *Objects) finishDelete(ctx context.Context, info resource.Info, ns, name string, raw []byte, rev int64) ([]byte, error) {
	drev, _, err := o.backend.Delete(ctx, storeKey(info, ns, name), rev)
	if err != nil {
		return nil, deletionWriteError(info, name, err)
	}
	if _, err := o.ix.WaitFor(ctx, drev); err != nil {
		return nil, err
	}
	last, err := decodeObject(raw)
	if err != nil {
		return nil, kubeapi.Internal(err)
	}
	last.metadata()["resourceVersion"] = strconv.FormatInt(drev, 10)
	out, err := json.Marshal(last)
	if err != nil {
		return nil, kubeapi.Internal(err)
	}
	return out, nil
}

// checkNoNewFinalizers refuses, with 422 as Kubernetes does, a write that adds a finalizer to
// an object being deleted: its deletion could otherwise be put off for ever.
func checkNoNewFinalizers(info resource.Info, name string, cur, next object) error {
	list := func(o object) []string {
		var out []string
		fs, _ := o.metadata()["finalizers"].([]any)
		for _, f := range fs {
			s, _ := f.(string)
			out = append(out, s)
		}
		return out
	}
	had := list(cur)
	var added []string
	for _, f := range list(next) {
		if !slices.Contains(had, f) {
			added = append(added, f)
		}
	}
	if len(added) > 0 {
		return kubeapi.Invalid(info.Kind, name, "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers %q", added)
	}
	return nil
}

// immortal says whether Kubernetes refuses to delete the namespace name.
func immortal(name string) bool {
	switch name {
	case "default", "kube-system", "kube-public", "kube-node-lease":
		return true
	}
	return false
}

// deletionWriteError is the answer to a failed store write of the deletion rules: a conflict as
// it is (the caller looks again), a missing object 404, anything else 503.
func deletionWriteError(info resource.Info, name string, err error) error {
	switch {
	case errors.Is(err, store.ErrConflict):
		return err
	case errors.Is(err, store.ErrNotFound):
		return kubeapi.NotFound(info.Group, info.Resource, name)
	}
	return kubeapi.Unavailable("the store refused the write: %v", err)
}
