package metaserver

import (
	"context"
	"encoding/base64"
	"strconv"

	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/resource"
)

// Storage is the metaserver's kubeapi.Storage.
type Storage struct {
	store *edgestore.Store
	reg   *resource.Registry
	cache *kubeapi.Cache
}

// New returns the storage and subscribes its watch cache to the store. Call before the store's
// first write.
func New(store *edgestore.Store, reg *resource.Registry, cacheSize, watchBuffer int) *Storage {
	s := &Storage{store: store, reg: reg, cache: kubeapi.NewCache(cacheSize, watchBuffer)}
	s.cache.Reset(int64(store.LocalRev()))
	store.Subscribe(s.onChanges)
	return s
}

func (s *Storage) onChanges(changes []edgestore.Change) {
	for _, c := range changes {
		ev := kubeapi.Event{Rev: int64(c.Rev)}
		switch {
		case c.Old == nil:
			ev.Type, ev.Resource, ev.Meta, ev.Object = kubeapi.Added, c.New.Key.Resource, metaOf(c.New), c.New.Object
		case c.New == nil:
			ev.Type, ev.Resource, ev.Meta = kubeapi.Deleted, c.Old.Key.Resource, metaOf(c.Old)
			prev := ev.Meta
			ev.Prev = &prev
			ev.Object = c.Old.Object
		default:
			ev.Type, ev.Resource, ev.Meta, ev.Object = kubeapi.Modified, c.New.Key.Resource, metaOf(c.New), c.New.Object
			prev := metaOf(c.Old)
			ev.Prev = &prev
		}
		s.cache.Add(ev)
	}
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

// Get implements kubeapi.Storage.
func (s *Storage) Get(_ context.Context, info resource.Info, ns, name string) ([]byte, error) {
	rec, err := s.store.Get(resource.StoreKey(resource.Key{Resource: info.GroupResource(), Namespace: ns, Name: name}))
	if err != nil {
		return nil, kubeapi.Unavailable("the edge store cannot be read: %v", err)
	}
	if rec == nil {
		if err := s.synced(); err != nil {
			return nil, err
		}
		return nil, kubeapi.NotFound(info.Group, info.Resource, name)
	}
	return rec.Object, nil
}

// List implements kubeapi.Storage.
func (s *Storage) List(_ context.Context, info resource.Info, ns string, opts kubeapi.ListOptions) (*kubeapi.ListResult, error) {
	if err := s.synced(); err != nil {
		return nil, err
	}
	recs, rev, err := s.store.List(resource.Prefix(info.GroupResource(), ns))
	if err != nil {
		return nil, kubeapi.Unavailable("the edge store cannot be read: %v", err)
	}
	after := ""
	if opts.Continue != "" {
		b, err := base64.RawURLEncoding.DecodeString(opts.Continue)
		if err != nil || len(b) == 0 {
			return nil, kubeapi.BadRequest("invalid continue token")
		}
		after = string(b)
	}
	res := &kubeapi.ListResult{ResourceVersion: strconv.FormatUint(rev, 10), Items: [][]byte{}}
	last := ""
	for _, r := range recs {
		if after != "" && r.StoreKey <= after {
			continue
		}
		if !opts.Matches(metaOf(r)) {
			continue
		}
		if opts.Limit > 0 && int64(len(res.Items)) == opts.Limit {
			res.Continue = base64.RawURLEncoding.EncodeToString([]byte(last))
			break
		}
		res.Items = append(res.Items, r.Object)
		last = r.StoreKey
	}
	return res, nil
}

// Watch implements kubeapi.Storage.
func (s *Storage) Watch(ctx context.Context, info resource.Info, ns string, opts kubeapi.ListOptions) (*kubeapi.Watch, error) {
	var from int64
	var initial []kubeapi.Event
	if opts.ResourceVersion == "" || opts.ResourceVersion == "0" || opts.SendInitialEvents {
		if err := s.synced(); err != nil {
			return nil, err
		}
		recs, rev, err := s.store.List(resource.Prefix(info.GroupResource(), ns))
		if err != nil {
			return nil, kubeapi.Unavailable("the edge store cannot be read: %v", err)
		}
		from = int64(rev)
		for _, r := range recs {
			if m := metaOf(r); opts.Matches(m) {
				initial = append(initial, kubeapi.Event{Type: kubeapi.Added, Rev: int64(r.LocalRev), Resource: r.Key.Resource, Meta: m, Object: r.Object})
			}
		}
		if opts.SendInitialEvents && opts.AllowWatchBookmarks {
			initial = append(initial, kubeapi.Event{Type: kubeapi.Bookmark, Rev: from, Resource: info.GroupResource(), Object: kubeapi.BookmarkObject(info, from, true)})
		}
	} else {
		from, _ = strconv.ParseInt(opts.ResourceVersion, 10, 64)
	}
	return s.cache.Watch(info.GroupResource(), ns, opts, from, initial)
}

func readOnly(info resource.Info) error {
	return kubeapi.MethodNotAllowed(info.Resource, "writes through the edge metaserver are not supported yet; write to the cloud API")
}

// Create implements kubeapi.Storage.
func (s *Storage) Create(_ context.Context, info resource.Info, _ string, _ []byte) ([]byte, error) {
	return nil, readOnly(info)
}

// Update implements kubeapi.Storage.
func (s *Storage) Update(_ context.Context, info resource.Info, _, _, _ string, _ []byte) ([]byte, error) {
	return nil, readOnly(info)
}

// Patch implements kubeapi.Storage.
func (s *Storage) Patch(_ context.Context, info resource.Info, _, _, _ string, _ kubeapi.PatchType, _ []byte) ([]byte, error) {
	return nil, readOnly(info)
}

// Delete implements kubeapi.Storage.
func (s *Storage) Delete(_ context.Context, info resource.Info, _, _ string, _ kubeapi.DeleteOptions) ([]byte, error) {
	return nil, readOnly(info)
}
