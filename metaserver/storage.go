package metaserver

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	iradix "github.com/hashicorp/go-immutable-radix"

	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// Forwarder relays a write to the cloud and returns its answer. It fails at once when the edge
// is not connected (edgehub.Client implements it); an error means no answer came, so the
// write may not have been made.
type Forwarder interface {
	Forward(ctx context.Context, req *protocol.Request) (*protocol.Response, error)
}

// Storage is the metaserver's kubeapi.Storage.
type Storage struct {
	store *edgestore.Store
	reg   *resource.Registry
	cache *kubeapi.Cache
	fwd   Forwarder // nil: writes are refused with 503
	// waitVersion bounds how long a read at a version the store has not reached waits for it.
	waitVersion time.Duration
	// forwardTimeout bounds a forwarded write: the link may hang without being known dead.
	forwardTimeout time.Duration

	cur     atomic.Pointer[view] // replaced by onChanges, on the store's writer goroutine
	loadErr error                // set at construction: the store could not be read

	// statusLocks serialise the status writes of one Node or Device, by a hash of its key, from
	// the check of their local version until the answer is stored (see statusMovesUnseen).
	statusLocks [64]sync.Mutex
}

// New returns the storage and subscribes its watch cache to the store. Call before the store's
// first write. The watch cache keeps cacheSize changes and about cacheBytes of memory at most
// (0: no bound in bytes); fwd carries writes to the cloud.
func New(store *edgestore.Store, reg *resource.Registry, cacheSize int, cacheBytes int64, watchBuffer int, fwd Forwarder) *Storage {
	s := &Storage{store: store, reg: reg, cache: kubeapi.NewCache(cacheSize, watchBuffer).LimitBytes(cacheBytes), fwd: fwd,
		waitVersion: 3 * time.Second, forwardTimeout: 20 * time.Second}
	v, err := loadView(store)
	if err != nil {
		s.loadErr = err
		v = &view{tree: iradix.New(), rev: int64(store.LocalRev())}
	}
	s.cur.Store(v)
	s.cache.Reset(v.rev)
	store.Subscribe(s.onChanges)
	return s
}

// WatchCache is the cache watches are served from (kubeapi reports its size).
func (s *Storage) WatchCache() *kubeapi.Cache { return s.cache }

// readable fails if the store could not be loaded: then nothing it holds can be answered.
func (s *Storage) readable() error {
	if s.loadErr != nil {
		return kubeapi.Unavailable("the edge store cannot be read: %v", s.loadErr)
	}
	return nil
}

func (s *Storage) onChanges(changes []edgestore.Change) {
	s.cur.Store(s.cur.Load().apply(changes))
	for _, c := range changes {
		ev := kubeapi.Event{Rev: int64(c.Rev)}
		switch {
		case c.Old == nil:
			ev.Type, ev.Resource, ev.Meta, ev.Object = kubeapi.Added, c.New.Key.Resource, metaOf(c.New), c.New.Object
		case c.New == nil:
			ev.Type, ev.Resource, ev.Meta = kubeapi.Deleted, c.Old.Key.Resource, metaOf(c.Old)
			prev := ev.Meta
			ev.Prev = &prev
			// The object as it was, at the version of its deletion, as Kubernetes sends it:
			// a client's last seen version must not move backwards.
			ev.Object = setVersion(c.Old.Object, strconv.FormatUint(c.Rev, 10))
		default:
			ev.Type, ev.Resource, ev.Meta, ev.Object = kubeapi.Modified, c.New.Key.Resource, metaOf(c.New), c.New.Object
			prev := metaOf(c.Old)
			ev.Prev = &prev
		}
		s.cache.Add(ev)
	}
}

// setVersion returns obj with metadata.resourceVersion set to rv, or removed if rv is "". An
// object that does not decode is returned as it is.
func setVersion(obj []byte, rv string) []byte {
	d := json.NewDecoder(bytes.NewReader(obj))
	d.UseNumber()
	var m map[string]any
	if d.Decode(&m) != nil {
		return obj
	}
	md, ok := m["metadata"].(map[string]any)
	if !ok {
		return obj
	}
	if rv == "" {
		delete(md, "resourceVersion")
	} else {
		md["resourceVersion"] = rv
	}
	out, err := json.Marshal(m)
	if err != nil {
		return obj
	}
	return out
}

func metaOf(r *edgestore.Record) kubeapi.Meta {
	m := kubeapi.Meta{Namespace: r.Key.Namespace, Name: r.Key.Name, Labels: r.Meta.Labels}
	switch r.Key.Resource {
	case resource.Pods, resource.Devices:
		m.Fields = map[string]string{"spec.nodeName": r.Meta.NodeName}
	}
	return m
}

func (s *Storage) synced() error {
	if !s.store.Synced() {
		return kubeapi.Unavailable("the edge has not completed its first sync with the cloud; it has no data to serve yet")
	}
	return nil
}

func storeKey(info resource.Info, ns, name string) string {
	return resource.StoreKey(resource.Key{Resource: info.GroupResource(), Namespace: ns, Name: name})
}

// Get implements kubeapi.Storage.
func (s *Storage) Get(_ context.Context, info resource.Info, ns, name string) ([]byte, error) {
	if err := s.readable(); err != nil {
		return nil, err
	}
	rec := s.cur.Load().get(storeKey(info, ns, name))
	if rec == nil {
		if err := s.synced(); err != nil {
			return nil, err
		}
		return nil, kubeapi.NotFound(info.Group, info.Resource, name)
	}
	return rec.Object, nil
}

// List implements kubeapi.Storage. The edge keeps only its current state, so every list is
// served from it: "" and "0" read it as it is; a version N waits (briefly) until the store has
// reached N; Exact is served only for the current version. Pages after the first report the
// first page's version, so a client that watches from it sees every change made while it paged.
func (s *Storage) List(ctx context.Context, info resource.Info, ns string, opts kubeapi.ListOptions) (*kubeapi.ListResult, error) {
	if err := s.readable(); err != nil {
		return nil, err
	}
	if err := s.synced(); err != nil {
		return nil, err
	}
	var listRV int64 = -1
	after := ""
	if opts.Continue != "" {
		rev, key, err := kubeapi.DecodeContinue(opts.Continue)
		if err != nil {
			return nil, err
		}
		if !s.cache.Knows(rev) {
			return nil, kubeapi.Gone("the provided continue parameter is too old to display a consistent list result; start a new list")
		}
		listRV, after = rev, key
	} else if err := s.atVersion(ctx, opts); err != nil {
		return nil, err
	}
	v := s.cur.Load()
	if listRV < 0 {
		listRV = v.rev
	}
	if opts.ResourceVersionMatch == "Exact" && opts.Continue == "" {
		if want, _ := strconv.ParseInt(opts.ResourceVersion, 10, 64); want != v.rev {
			return nil, kubeapi.Gone("resource version %d is not available for an exact read: the edge keeps only its current state (%d)", want, v.rev)
		}
	}
	res := &kubeapi.ListResult{ResourceVersion: strconv.FormatInt(listRV, 10), Items: [][]byte{}}
	selective := (opts.Labels != nil && !opts.Labels.Empty()) || (opts.Fields != nil && !opts.Fields.Empty())
	last := ""
	v.each(resource.Prefix(info.GroupResource(), ns), func(r *edgestore.Record) bool {
		if after != "" && r.StoreKey <= after {
			return true
		}
		if selective && !opts.Matches(metaOf(r)) {
			return true
		}
		if opts.Limit > 0 && int64(len(res.Items)) == opts.Limit {
			res.Continue = kubeapi.EncodeContinue(listRV, last)
			return false
		}
		res.Items = append(res.Items, r.Object)
		last = r.StoreKey
		return true
	})
	return res, nil
}

// atVersion waits until the store has reached the version a read asks not to be older than.
func (s *Storage) atVersion(ctx context.Context, opts kubeapi.ListOptions) error {
	if opts.ResourceVersion == "" || opts.ResourceVersion == "0" {
		return nil
	}
	want, _ := strconv.ParseInt(opts.ResourceVersion, 10, 64) // checked by kubeapi
	wctx, cancel := context.WithTimeout(ctx, s.waitVersion)
	defer cancel()
	if !s.cache.WaitRev(wctx, want) {
		return kubeapi.TooLargeVersion(want, s.cache.Rev())
	}
	return nil
}

// Watch implements kubeapi.Storage.
func (s *Storage) Watch(ctx context.Context, info resource.Info, ns string, opts kubeapi.ListOptions) (*kubeapi.Watch, error) {
	var from int64
	var initial []kubeapi.Event
	if opts.ResourceVersion == "" || opts.ResourceVersion == "0" || opts.SendInitialEvents {
		if err := s.readable(); err != nil {
			return nil, err
		}
		if err := s.synced(); err != nil {
			return nil, err
		}
		if err := s.atVersion(ctx, opts); err != nil {
			return nil, err
		}
		v := s.cur.Load()
		from = v.rev
		v.each(resource.Prefix(info.GroupResource(), ns), func(r *edgestore.Record) bool {
			if m := metaOf(r); opts.Matches(m) {
				initial = append(initial, kubeapi.Event{Type: kubeapi.Added, Rev: int64(r.LocalRev), Resource: r.Key.Resource, Meta: m, Object: r.Object})
			}
			return true
		})
		if opts.SendInitialEvents && opts.AllowWatchBookmarks {
			initial = append(initial, kubeapi.Event{Type: kubeapi.Bookmark, Rev: from, Resource: info.GroupResource(), Object: kubeapi.BookmarkObject(info, from, true)})
		}
	} else {
		// A version the edge has not reached yet is waited for (briefly), as Kubernetes does:
		// starting after it would skip every change up to it.
		if err := s.atVersion(ctx, opts); err != nil {
			return nil, err
		}
		from, _ = strconv.ParseInt(opts.ResourceVersion, 10, 64)
	}
	return s.cache.Watch(info.GroupResource(), ns, opts, from, initial)
}
