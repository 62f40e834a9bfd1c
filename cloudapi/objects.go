package cloudapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/tetherhub/tether/cloudhub"
	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
)

// Objects is the cloud's kubeapi.Storage: writes go to the store with optimistic concurrency,
// reads come from the index at (or after) the store's current revision, watches from a cache fed
// by the index.
type Objects struct {
	backend store.Backend
	ix      *index.Index
	reg     *resource.Registry
	cache   *kubeapi.Cache
	now     func() time.Time

	prime sync.Once // sets the cache's floor to the index's history start, once
}

// NewObjects returns the cloud's object storage and subscribes its watch cache to ix. It must be
// called before ix.Run.
func NewObjects(backend store.Backend, ix *index.Index, reg *resource.Registry, cacheSize, watchBuffer int, now func() time.Time) *Objects {
	o := &Objects{backend: backend, ix: ix, reg: reg, cache: kubeapi.NewCache(cacheSize, watchBuffer), now: now}
	ix.Subscribe(o.onUpdate)
	ix.OnProgress(func(rev int64) {
		o.primeCache()
		o.cache.Progress(rev)
	})
	return o
}

// WatchCache is the cache watches are served from (kubeapi reports its size).
func (o *Objects) WatchCache() *kubeapi.Cache { return o.cache }

func (o *Objects) primeCache() {
	o.prime.Do(func() { o.cache.Reset(o.ix.HistoryFrom()) })
}

// onUpdate feeds the watch cache; it runs on the index goroutine.
func (o *Objects) onUpdate(u index.Update) {
	o.primeCache()
	ev := kubeapi.Event{Rev: u.Rev()}
	switch {
	case u.Old == nil:
		ev.Type, ev.Resource, ev.Meta, ev.Object = kubeapi.Added, u.New.Key.Resource, eventMeta(u.New), u.New.Raw
	case u.New == nil:
		ev.Type, ev.Resource, ev.Meta = kubeapi.Deleted, u.Old.Key.Resource, eventMeta(u.Old)
		prev := ev.Meta
		ev.Prev = &prev
		// A deleted object is reported with the revision of its deletion, as Kubernetes does.
		raw, err := index.SetResourceVersion(u.Old.Raw, u.Rev())
		if err != nil {
			raw = u.Old.Raw
		}
		ev.Object = raw
	default:
		ev.Type, ev.Resource, ev.Meta, ev.Object = kubeapi.Modified, u.New.Key.Resource, eventMeta(u.New), u.New.Raw
		prev := eventMeta(u.Old)
		ev.Prev = &prev
	}
	o.cache.Add(ev)
}

// eventMeta is metaOf with the object fields (a Pod's phase, a Secret's type) read from the
// object: a watch selecting on them must know what the object was before a change, and only
// here is the old object at hand. Lists do without them (the Handler reads them from the items
// it is about to send), so they cost a parse per change, not one per object listed.
func eventMeta(obj *index.Object) kubeapi.Meta {
	m := metaOf(obj)
	if f := kubeapi.ObjectFields(obj.Key.Resource, obj.Raw); f != nil {
		if m.Fields == nil {
			m.Fields = f
		} else {
			maps.Copy(m.Fields, f)
		}
	}
	return m
}

func metaOf(obj *index.Object) kubeapi.Meta {
	m := kubeapi.Meta{Namespace: obj.Key.Namespace, Name: obj.Key.Name, Labels: obj.Labels}
	switch obj.Key.Resource {
	case resource.Pods, resource.Devices:
		m.Fields = map[string]string{"spec.nodeName": obj.Node}
	}
	return m
}

func storeKey(info resource.Info, ns, name string) string {
	return resource.StoreKey(resource.Key{Resource: info.GroupResource(), Namespace: ns, Name: name})
}

// latest returns a snapshot that includes every write committed before the call.
func (o *Objects) latest(ctx context.Context) (index.Snapshot, error) {
	rev, err := o.backend.Rev(ctx)
	if err != nil {
		return index.Snapshot{}, kubeapi.Unavailable("the store is unavailable: %v", err)
	}
	return o.ix.WaitFor(ctx, rev)
}

// Get implements kubeapi.Storage.
func (o *Objects) Get(ctx context.Context, info resource.Info, ns, name string) ([]byte, error) {
	snap, err := o.latest(ctx)
	if err != nil {
		return nil, err
	}
	obj := snap.Get(storeKey(info, ns, name))
	if obj == nil {
		return nil, kubeapi.NotFound(info.Group, info.Resource, name)
	}
	return obj.Raw, nil
}

// List implements kubeapi.Storage. The index keeps no old snapshots, so pages after the first
// are read from the current index; they report the first page's version (as Kubernetes does),
// so a client that watches from it receives every change made while it paged. A token older
// than the watch cache's memory is a 410, like a compacted one.
func (o *Objects) List(ctx context.Context, info resource.Info, ns string, opts kubeapi.ListOptions) (*kubeapi.ListResult, error) {
	var listRV int64 = -1
	after := ""
	var snap index.Snapshot
	var err error
	if opts.Continue != "" {
		rev, key, err := kubeapi.DecodeContinue(opts.Continue)
		if err != nil {
			return nil, err
		}
		o.primeCache()
		if !o.cache.Knows(rev) {
			return nil, kubeapi.Gone("the provided continue parameter is too old to display a consistent list result; start a new list")
		}
		listRV, after = rev, key
		if snap, err = o.latest(ctx); err != nil {
			return nil, err
		}
	} else if snap, err = o.snapshotFor(ctx, opts); err != nil {
		return nil, err
	}
	if listRV < 0 {
		listRV = snap.Rev
	}
	res := &kubeapi.ListResult{ResourceVersion: strconv.FormatInt(listRV, 10), Items: [][]byte{}}
	prefix := resource.Prefix(info.GroupResource(), ns)
	var last string
	for _, obj := range snap.List(prefix, after, 0) {
		if !opts.Matches(metaOf(obj)) {
			continue
		}
		if opts.Limit > 0 && int64(len(res.Items)) == opts.Limit {
			res.Continue = kubeapi.EncodeContinue(listRV, last)
			break
		}
		res.Items = append(res.Items, obj.Raw)
		last = obj.StoreKey
	}
	return res, nil
}

// snapshotFor picks the snapshot a list or watch reads, by the resourceVersion semantics of
// Kubernetes: "" is the most recent, "0" any, N with NotOlderThan at least N, N Exact exactly N.
func (o *Objects) snapshotFor(ctx context.Context, opts kubeapi.ListOptions) (index.Snapshot, error) {
	switch opts.ResourceVersion {
	case "":
		return o.latest(ctx)
	case "0":
		return o.ix.Snapshot(), nil
	}
	rv, _ := strconv.ParseInt(opts.ResourceVersion, 10, 64) // checked by kubeapi
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	snap, err := o.ix.WaitFor(wctx, rv)
	if err != nil {
		return snap, kubeapi.TooLargeVersion(rv, o.ix.Snapshot().Rev)
	}
	if opts.ResourceVersionMatch == "Exact" && snap.Rev != rv {
		return snap, kubeapi.Gone("resource version %d is not available for an exact read (current: %d)", rv, snap.Rev)
	}
	return snap, nil
}

// Watch implements kubeapi.Storage.
func (o *Objects) Watch(ctx context.Context, info resource.Info, ns string, opts kubeapi.ListOptions) (*kubeapi.Watch, error) {
	select {
	case <-o.ix.Current():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	o.primeCache()
	var from int64
	var initial []kubeapi.Event
	if opts.ResourceVersion == "" || opts.ResourceVersion == "0" || opts.SendInitialEvents {
		snap, err := o.snapshotFor(ctx, opts)
		if err != nil {
			return nil, err
		}
		from = snap.Rev
		for _, obj := range snap.List(resource.Prefix(info.GroupResource(), ns), "", 0) {
			if m := metaOf(obj); opts.Matches(m) {
				initial = append(initial, kubeapi.Event{Type: kubeapi.Added, Rev: obj.ModRev, Resource: obj.Key.Resource, Meta: m, Object: obj.Raw})
			}
		}
		if opts.SendInitialEvents && opts.AllowWatchBookmarks {
			initial = append(initial, kubeapi.Event{Type: kubeapi.Bookmark, Rev: from, Resource: info.GroupResource(), Object: kubeapi.BookmarkObject(info, from, true)})
		}
	} else {
		from, _ = strconv.ParseInt(opts.ResourceVersion, 10, 64)
		// A version the cloud has not reached yet is waited for (briefly), as Kubernetes does:
		// starting after it would skip every change up to it.
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := o.ix.WaitFor(wctx, from)
		cancel()
		if err != nil {
			return nil, kubeapi.TooLargeVersion(from, o.ix.Snapshot().Rev)
		}
	}
	return o.cache.Watch(info.GroupResource(), ns, opts, from, initial)
}

// Create implements kubeapi.Storage.
func (o *Objects) Create(ctx context.Context, info resource.Info, ns string, body []byte) ([]byte, error) {
	obj, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	md := obj.metadata()
	if err := checkNamespace(info, ns, md); err != nil {
		return nil, err
	}
	if rv, _ := md["resourceVersion"].(string); rv != "" {
		return nil, kubeapi.BadRequest("metadata.resourceVersion must not be set on objects to be created")
	}
	name, _ := md["name"].(string)
	if name == "" {
		gen, _ := md["generateName"].(string)
		if gen == "" {
			return nil, kubeapi.Invalid(info.Kind, "", "metadata.name: Required value: name or generateName is required")
		}
		name = gen + randomSuffix()
		md["name"] = name
	}
	obj["apiVersion"], obj["kind"] = info.APIVersion(), info.Kind
	md["uid"] = newUID()
	md["creationTimestamp"] = o.now().UTC().Format(time.RFC3339)
	if _, hasSpec := obj["spec"]; hasSpec {
		md["generation"] = 1
	}
	delete(md, "resourceVersion")
	delete(md, "deletionTimestamp")
	delete(md, "deletionGracePeriodSeconds")
	dropReportEpoch(md)
	statusOnCreate(info, obj)
	if err := mergeStringData(info, obj); err != nil {
		return nil, err
	}
	raw, err := validate(o.reg, info, ns, name, obj)
	if err != nil {
		return nil, err
	}
	if info.Namespaced {
		if err := o.namespaceAccepts(ctx, ns); err != nil {
			return nil, err
		}
	}
	if info.GroupResource() == resource.Devices {
		snap, err := o.latest(ctx)
		if err != nil {
			return nil, err
		}
		if err := checkDesired(snap, ns, name, raw); err != nil {
			return nil, err
		}
	}
	key := storeKey(info, ns, name)
	rev, err := o.backend.Create(ctx, key, raw)
	switch {
	case errors.Is(err, store.ErrExists):
		return nil, kubeapi.AlreadyExists(info.Group, info.Resource, name)
	case errors.Is(err, store.ErrTooLarge):
		return nil, tooLarge(info, err)
	case err != nil:
		return nil, kubeapi.Unavailable("the store refused the write: %v", err)
	}
	snap, err := o.ix.WaitFor(ctx, rev)
	if err != nil {
		return nil, err
	}
	if info.Namespaced {
		// The namespace may have been marked for deletion between the check above and this
		// write, too late for the finalizer to see the object: the snapshot the answer is read
		// from has both, and the object goes again.
		if err := namespaceOpen(snap, ns); err != nil {
			if _, _, derr := o.backend.Delete(ctx, key, rev); derr != nil && !errors.Is(derr, store.ErrNotFound) && !errors.Is(derr, store.ErrConflict) {
				return nil, kubeapi.Unavailable("the namespace went while the object was written, and the object could not be removed: %v", derr)
			}
			return nil, err
		}
	}
	return rawOf(snap, info, ns, name)
}

// statusOnCreate sets the status a new object starts with, as Kubernetes does: a Namespace
// starts Active (its DELETE makes it Terminating), a Pod Pending; a Service, Device or NodeGroup
// with none (the status its writers report comes later, through /status). A Node keeps the
// status it is created with, as in Kubernetes (an agent registering writes its own).
func statusOnCreate(info resource.Info, obj object) {
	switch info.Kind {
	case "Namespace":
		obj["status"] = map[string]any{"phase": "Active"}
	case "Pod":
		obj["status"] = map[string]any{"phase": "Pending"}
	case "Node":
	default:
		if kubeapi.HasStatus(info.Kind) {
			delete(obj, "status")
		}
	}
}

// readBack returns the object as stored at rev, once the index has it.
func (o *Objects) readBack(ctx context.Context, info resource.Info, ns, name string, rev int64) ([]byte, error) {
	snap, err := o.ix.WaitFor(ctx, rev)
	if err != nil {
		return nil, err
	}
	return rawOf(snap, info, ns, name)
}

// rawOf is the object as snap has it.
func rawOf(snap index.Snapshot, info resource.Info, ns, name string) ([]byte, error) {
	obj := snap.Get(storeKey(info, ns, name))
	if obj == nil {
		return nil, kubeapi.NotFound(info.Group, info.Resource, name)
	}
	return obj.Raw, nil
}

// Update implements kubeapi.Storage.
func (o *Objects) Update(ctx context.Context, info resource.Info, ns, name, sub string, body []byte) ([]byte, error) {
	obj, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	md := obj.metadata()
	if err := checkNamespace(info, ns, md); err != nil {
		return nil, err
	}
	if n, _ := md["name"].(string); n != name {
		return nil, kubeapi.BadRequest("the name of the object (%q) does not match the name on the URL (%q)", n, name)
	}
	var precondition int64
	if rv, _ := md["resourceVersion"].(string); rv != "" {
		if precondition, err = strconv.ParseInt(rv, 10, 64); err != nil || precondition <= 0 {
			return nil, kubeapi.BadRequest("invalid metadata.resourceVersion %q", rv)
		}
	}
	return o.write(ctx, info, ns, name, sub, precondition, func(object) (object, error) { return obj, nil })
}

// Patch implements kubeapi.Storage.
func (o *Objects) Patch(ctx context.Context, info resource.Info, ns, name, sub string, pt kubeapi.PatchType, patch []byte) ([]byte, error) {
	return o.write(ctx, info, ns, name, sub, 0, func(cur object) (object, error) {
		curJSON, err := json.Marshal(cur)
		if err != nil {
			return nil, kubeapi.Internal(err)
		}
		var out []byte
		switch pt {
		case kubeapi.MergePatch:
			out, err = jsonpatch.MergePatch(curJSON, patch)
		case kubeapi.JSONPatch:
			out, err = applyJSONPatch(curJSON, patch)
		case kubeapi.StrategicPatch:
			schema, ok := kubeapi.BuiltinType(info)
			if !ok {
				// As Kubernetes answers it for a custom resource.
				return nil, kubeapi.UnsupportedPatch(string(pt), kubeapi.JSONPatch, kubeapi.MergePatch)
			}
			out, err = strategicpatch.StrategicMergePatch(curJSON, patch, schema)
		default:
			return nil, kubeapi.UnsupportedPatch(string(pt), kubeapi.JSONPatch, kubeapi.MergePatch, kubeapi.StrategicPatch)
		}
		switch {
		case errors.Is(err, errPatchTooLarge):
			return nil, tooLarge(info, err)
		case errors.Is(err, errPatchNotApplicable):
			return nil, kubeapi.Invalid(info.Kind, name, "%v", err)
		case err != nil:
			return nil, kubeapi.BadRequest("the patch cannot be applied: %v", err)
		case len(out) > maxObjectBytes:
			return nil, tooLarge(info, fmt.Errorf("the patched object would be %d bytes, over the limit of %d", len(out), maxObjectBytes))
		}
		if err := kubeapi.CheckPatched(ctx, info, curJSON, out); err != nil {
			return nil, err
		}
		next, err := decodeObject(out)
		if err != nil {
			return nil, err
		}
		return next, nil
	})
}

// write is the read-modify-write of update and patch. mutate gets the current object (a fresh
// copy) and returns the wanted one; write then enforces what clients may not change (identity,
// creation time, the other half of a status subresource, the report epoch but for a report's
// write: see writeReport), bumps the generation when the spec
// changed, and stores it if the object has not changed meanwhile. A patch that races another
// writer is retried on the fresher object, as the Kubernetes API server does.
func (o *Objects) write(ctx context.Context, info resource.Info, ns, name, sub string, precondition int64, mutate func(object) (object, error)) ([]byte, error) {
	key := storeKey(info, ns, name)
	internal := ctx.Value(internalWriteKey{}) != nil
	for attempt := 0; ; attempt++ {
		// An internal write tries first on the index as it is, without waiting for it to
		// reach the store's revision: its compare-and-swap refuses a stale object. Only then,
		// or if the object is not in the index yet, or the write decided to write nothing
		// (which no compare-and-swap checks), does it wait and decide again.
		var snap index.Snapshot
		fresh := !internal || attempt > 0
		if fresh {
			var err error
			if snap, err = o.latest(ctx); err != nil {
				return nil, err
			}
		} else {
			snap = o.ix.Snapshot()
		}
		cur := snap.Get(key)
		if cur == nil && !fresh {
			continue
		}
		if cur == nil {
			return nil, kubeapi.NotFound(info.Group, info.Resource, name)
		}
		if precondition != 0 && precondition != cur.ModRev {
			return nil, conflict(info, name)
		}
		if uid, ok := ctx.Value(expectUIDKey{}).(string); ok && uid != cur.UID {
			return nil, kubeapi.Conflict(info.Group, info.Resource, name, fmt.Errorf("the object was replaced (UID %s, the request was checked against %s)", cur.UID, uid))
		}
		curObj, err := decodeObject(cur.Raw)
		if err != nil {
			return nil, kubeapi.Internal(err)
		}
		want, err := mutate(deepCopy(curObj))
		if err != nil && !fresh {
			continue // decided on an object that may be stale: only a write is checked
		}
		if err != nil {
			return nil, err
		}
		if err := checkNamespace(info, ns, want.metadata()); err != nil {
			if !fresh {
				continue
			}
			return nil, err
		}
		if sub == "" {
			if err := mergeStringData(info, want); err != nil {
				return nil, err
			}
			if err := checkImmutable(info, name, curObj, want); err != nil {
				return nil, err
			}
		}
		if rv, _ := want.metadata()["resourceVersion"].(string); rv != "" && rv != strconv.FormatInt(cur.ModRev, 10) {
			return nil, conflict(info, name)
		}
		next := merge(info, sub, curObj, want)
		if ctx.Value(joinWriteKey{}) == nil {
			keepCloudAnnotations(next.metadata(), curObj.metadata())
		}
		if rs, ok := ctx.Value(reportEpochKey{}).(reportSession); ok && rs.epoch > reportEpoch(curObj, rs.node) {
			setReportEpoch(next, rs.node, rs.epoch) // a report's write (see writeReport)
		}
		raw, err := validate(o.reg, info, ns, name, next)
		if err != nil && !fresh {
			continue // judged with a stale object
		}
		if err != nil {
			return nil, err
		}
		if info.GroupResource() == resource.Devices && sub == "" && !jsonEqual(curObj["spec"], next["spec"]) {
			// Only a changed spec is checked: a Device stored before its model changed keeps
			// taking label and finalizer edits.
			if err := checkDesired(snap, ns, name, raw); err != nil {
				return nil, err
			}
		}
		if sameStored(curObj, raw) {
			if !fresh {
				continue
			}
			// Nothing to write, as in Kubernetes: no new version, no watch event.
			return cur.Raw, nil
		}
		if _, deleting := curObj.metadata()["deletionTimestamp"]; deleting {
			if err := checkNoNewFinalizers(info, name, curObj, next); err != nil {
				return nil, err
			}
			if fs, _ := next.metadata()["finalizers"].([]any); info.GroupResource() != resource.Namespaces && len(fs) == 0 {
				// The last finalizer is gone: the DELETE that marked it ends here.
				out, err := o.finishDelete(ctx, info, ns, name, raw, cur.ModRev)
				if errors.Is(err, store.ErrConflict) {
					if precondition == 0 && attempt < 5 {
						continue
					}
					return nil, conflict(info, name)
				}
				return out, err
			}
		}
		rev, err := o.backend.Update(ctx, key, raw, cur.ModRev)
		switch {
		case err != nil && !fresh:
			continue // the object was stale (a conflict) or too large with it: decide again
		case errors.Is(err, store.ErrConflict) && precondition == 0 && attempt < 5:
			continue
		case errors.Is(err, store.ErrConflict):
			return nil, conflict(info, name)
		case errors.Is(err, store.ErrNotFound):
			return nil, kubeapi.NotFound(info.Group, info.Resource, name)
		case errors.Is(err, store.ErrTooLarge):
			// The backend's own bound (etcd's request limit) is below maxObjectBytes: the
			// writer's fault as much as a body over maxObjectBytes, and as final.
			return nil, tooLarge(info, err)
		case err != nil:
			return nil, kubeapi.Unavailable("the store refused the write: %v", err)
		}
		if internal {
			return nil, nil // nobody reads the answer
		}
		return o.readBack(ctx, info, ns, name, rev)
	}
}

// internalWriteKey marks the context of the cloud's own status writes (a node's Ready
// condition, its reports): they need no answer and may start from the index as it is (see
// write), so that a storm of them does not wait, each, for the index to catch up with the
// store: under 10,000 nodes connecting at once on etcd, that wait made thousands of them miss
// their deadline, and their retries kept the store behind.
type internalWriteKey struct{}

// sameStored reports whether raw, an object about to be stored, is what cur (as decoded from
// the store, with its resourceVersion) already is. Both are encoded from maps, so equal objects
// encode to equal bytes.
func sameStored(cur object, raw []byte) bool {
	c := maps.Clone(cur)
	md := maps.Clone(cur.metadata())
	delete(md, "resourceVersion")
	c["metadata"] = md
	b, err := json.Marshal(c)
	return err == nil && bytes.Equal(b, raw)
}

// cloudAnnotations are the annotations the cloud keeps on objects for itself: the report
// epoch (fence.go), and on a Node the UID and time of its join (cloudhub.AnnotationJoinedUID),
// which decide which certificates the hub lets in.
var cloudAnnotations = []string{resource.AnnotationReportEpoch, cloudhub.AnnotationJoinedUID, cloudhub.AnnotationCertificatesSince}

// joinWriteKey marks the context of Nodes.Register's write, the one client of write that sets
// the join annotations.
type joinWriteKey struct{}

// keepCloudAnnotations makes md, the metadata a client wrote, hold the cloud's annotations as
// curMD holds them. Removing one is refused as quietly as changing it: a manifest saved before it
// was set (kubectl replace) would otherwise take the report fence away, or lock the node out.
func keepCloudAnnotations(md, curMD map[string]any) {
	curAnn, _ := curMD["annotations"].(map[string]any)
	ann, _ := md["annotations"].(map[string]any)
	for _, k := range cloudAnnotations {
		v, held := curAnn[k]
		switch {
		case held && ann == nil:
			ann = map[string]any{k: v}
			md["annotations"] = ann
		case held:
			ann[k] = v
		case ann != nil:
			delete(ann, k)
		}
	}
}

// checkImmutable refuses, with 422 as Kubernetes does, an update that changes what may not
// change: the uid (taken silently from the stored object before), a Secret's type, and the
// data of a ConfigMap or Secret marked immutable, or that mark itself.
func checkImmutable(info resource.Info, name string, cur, want object) error {
	if uid, ok := want.metadata()["uid"].(string); ok && uid != "" && uid != cur.metadata()["uid"] {
		return kubeapi.Invalid(info.Kind, name, "metadata.uid: Invalid value: %q: field is immutable", uid)
	}
	switch info.GroupResource() {
	case resource.Secrets:
		typ := func(o object) string { // none is Opaque, as Kubernetes defaults it
			if t, _ := o["type"].(string); t != "" {
				return t
			}
			return "Opaque"
		}
		if wt := typ(want); wt != typ(cur) {
			return kubeapi.Invalid(info.Kind, name, "type: Invalid value: %q: field is immutable", wt)
		}
	case resource.ConfigMaps:
	default:
		return nil
	}
	if im, _ := cur["immutable"].(bool); !im {
		return nil
	}
	if im, _ := want["immutable"].(bool); !im {
		return kubeapi.Invalid(info.Kind, name, "immutable: Forbidden: field is immutable when `immutable` is set")
	}
	empty := func(v any) any { // an empty map is no map, as Kubernetes compares them
		if m, ok := v.(map[string]any); ok && len(m) == 0 {
			return nil
		}
		return v
	}
	for _, k := range []string{"data", "binaryData"} {
		if !jsonEqual(empty(cur[k]), empty(want[k])) {
			return kubeapi.Invalid(info.Kind, name, "%s: Forbidden: field is immutable when `immutable` is set", k)
		}
	}
	return nil
}

// expectUIDKey is the context key of the UID a write must find: the forwarder checks that an
// object is the node's, and the write must change that object, not one of the same name made
// since on another node.
type expectUIDKey struct{}

func conflict(info resource.Info, name string) error {
	return kubeapi.Conflict(info.Group, info.Resource, name, errors.New("the object has been modified; please apply your changes to the latest version and try again"))
}

// merge builds the object to store from the current one and the one a client sent.
func merge(info resource.Info, sub string, cur, want object) object {
	next := want
	if sub == "status" {
		// A status write changes the status and nothing else.
		next = deepCopy(cur)
		if st, ok := want["status"]; ok {
			next["status"] = st
		} else {
			delete(next, "status")
		}
	} else if kubeapi.HasStatus(info.Kind) {
		if st, ok := cur["status"]; ok {
			next["status"] = st
		} else {
			delete(next, "status")
		}
	}
	md, curMD := next.metadata(), cur.metadata()
	for _, k := range []string{"uid", "creationTimestamp", "namespace", "name", "deletionTimestamp", "deletionGracePeriodSeconds"} {
		if v, ok := curMD[k]; ok {
			md[k] = v
		} else if k == "deletionTimestamp" || k == "deletionGracePeriodSeconds" {
			delete(md, k) // set by a DELETE only
		}
	}
	delete(md, "resourceVersion")
	next["apiVersion"], next["kind"] = info.APIVersion(), info.Kind
	gen, _ := curMD["generation"].(json.Number)
	g, _ := gen.Int64()
	if !jsonEqual(cur["spec"], next["spec"]) {
		g++
	}
	if g > 0 {
		md["generation"] = g
	}
	return next
}

// object is a decoded JSON object; numbers stay json.Number so nothing is rounded.
type object map[string]any

func decodeObject(b []byte) (object, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, kubeapi.BadRequest("the object is not valid JSON: %v", err)
	}
	if m == nil {
		return nil, kubeapi.BadRequest("the object is null")
	}
	if d.More() {
		return nil, kubeapi.BadRequest("the body holds more than one JSON value")
	}
	// metadata() would take metadata of another type for none, and report a missing name.
	if md, ok := m["metadata"]; ok && md != nil {
		if _, ok := md.(map[string]any); !ok {
			return nil, kubeapi.BadRequest("the object is not valid: metadata: must be an object")
		}
	}
	// A resourceVersion that is not a string would be taken for "no precondition" below, and a
	// stale write would pass: refuse it, as Kubernetes does.
	if md, ok := m["metadata"].(map[string]any); ok {
		if rv, ok := md["resourceVersion"]; ok && rv != nil {
			if _, ok := rv.(string); !ok {
				return nil, kubeapi.BadRequest("metadata.resourceVersion must be a string")
			}
		}
	}
	return m, nil
}

func (o object) metadata() map[string]any {
	md, ok := o["metadata"].(map[string]any)
	if !ok {
		md = map[string]any{}
		o["metadata"] = md
	}
	return md
}

func checkNamespace(info resource.Info, ns string, md map[string]any) error {
	got, _ := md["namespace"].(string)
	switch {
	case !info.Namespaced && got != "":
		delete(md, "namespace") // Kubernetes ignores a namespace on a cluster-scoped object
	case info.Namespaced && got != "" && got != ns:
		return kubeapi.BadRequest("the namespace of the provided object (%q) does not match the namespace sent on the request (%q)", got, ns)
	case info.Namespaced:
		md["namespace"] = ns
	}
	return nil
}

func deepCopy(m object) object {
	var out map[string]any
	b, _ := json.Marshal(m)
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	d.Decode(&out)
	return out
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func newUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randomSuffix() string {
	const chars = "bcdfghjklmnpqrstvwxz2456789"
	var b [5]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	return string(b[:])
}

// Limits on what one patch may build, beside maxObjectBytes for its result. The body limit does
// not bound the result: each JSON patch "copy" can double the document (a 700-byte patch grew a
// ConfigMap to 34 MB).
const (
	maxPatchOps    = 1000 // operations in one JSON patch
	maxPatchCopies = 32   // "copy" operations in one JSON patch (each is applied and measured alone)
)

// errPatchTooLarge is returned by applyJSONPatch when the document grows past maxObjectBytes.
var errPatchTooLarge = errors.New("the patched object is over the size limit")

// errPatchNotApplicable is returned by applyJSONPatch for a well-formed patch whose operations
// do not apply to the object (a "test" that fails, a path that is not there): 422, as
// Kubernetes answers it, where a malformed patch is 400.
var errPatchNotApplicable = errors.New("the patch does not apply to the object")

// tooLarge is the 413 for an object a write would make larger than maxObjectBytes.
func tooLarge(info resource.Info, err error) error {
	return apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the %s cannot be stored: %v", info.Kind, err))
}

// applyJSONPatch applies an RFC 6902 patch to doc. Operations are applied in runs; a copy ends
// its run, and the document's size is checked after it, so no intermediate document grows past
// twice maxObjectBytes.
func applyJSONPatch(doc, patch []byte) (_ []byte, err error) {
	defer func() {
		// json-patch dereferences nil on some malformed operations (a "test" without a value):
		// that is the patch's fault, answered like any other bad patch.
		if r := recover(); r != nil {
			err = fmt.Errorf("the patch could not be applied: %v", r)
		}
	}()
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, err
	}
	if len(p) > maxPatchOps {
		return nil, fmt.Errorf("%d operations, more than the %d allowed", len(p), maxPatchOps)
	}
	copies, start := 0, 0
	for i := range p {
		if p[i].Kind() != "copy" && i < len(p)-1 {
			continue
		}
		if p[i].Kind() == "copy" {
			if copies++; copies > maxPatchCopies {
				return nil, fmt.Errorf("more than %d copy operations", maxPatchCopies)
			}
		}
		if doc, err = p[start : i+1].Apply(doc); err != nil {
			return nil, fmt.Errorf("%w: %v", errPatchNotApplicable, err)
		}
		if len(doc) > maxObjectBytes {
			return nil, fmt.Errorf("%w: it would pass %d bytes", errPatchTooLarge, maxObjectBytes)
		}
		start = i + 1
	}
	return doc, nil
}
