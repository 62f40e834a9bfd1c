package kubeapi

import (
	"context"
	"errors"
	"sync"
	"time"
	"unsafe"
)

// EventType is a watch event's type, as Kubernetes spells it.
type EventType string

const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
	Bookmark EventType = "BOOKMARK"
)

// Event is one change to one object, as a Storage reports it to the Cache.
type Event struct {
	Type     EventType
	Rev      int64
	Resource string // group-qualified resource
	Meta     Meta   // of Object
	Prev     *Meta  // of the object before the change; nil for a create
	Object   []byte // the object after the change (for a delete: as it was, stamped with Rev)

	added int64 // unix nanos when the cache took it, for LimitAge
}

// ErrWatchEnded is returned by Watch.Next once the watch is over: stopped, cut off for being
// too slow, or the cache closed. The client re-watches from the last version it saw.
var ErrWatchEnded = errors.New("kubeapi: watch ended")

// Cache keeps the most recent events for watches. The zero value is not usable; use NewCache.
type Cache struct {
	size     int              // events kept
	maxBytes int64            // and at most about this much memory in them (eventBytes); 0: no bound
	buffer   int              // events a watcher may have undelivered before it is cut off
	maxAge   time.Duration    // and none older than this once a newer one comes; 0: no bound
	now      func() time.Time // the clock of maxAge

	mu       sync.Mutex    // guards everything below; Lock order: Cache.mu before Watch.mu
	ring     []Event       // oldest first, len ≤ size
	bytes    int64         // about what the events in ring hold (eventBytes)
	floor    int64         // every event after floor is in the ring (or there was none)
	rev      int64         // newest revision known
	changed  chan struct{} // closed and replaced whenever rev moves
	watchers map[*Watch]struct{}
	// objectFields holds the object field (fields.go) of each object whose events came without
	// it, by resource/namespace/name, as of its latest event: it is what the object was before
	// its next change, which a watch selecting on the field must know.
	objectFields map[string]string
}

// NewCache returns a cache keeping size events, cutting off watchers buffer events behind.
func NewCache(size, buffer int) *Cache {
	return &Cache{size: size, buffer: buffer, watchers: map[*Watch]struct{}{}, changed: make(chan struct{}), objectFields: map[string]string{}}
}

// LimitBytes makes the cache also drop its oldest events while they hold more than about n bytes
// (as Size counts them; the newest event is always kept). Call it before the first Add.
func (c *Cache) LimitBytes(n int64) *Cache {
	c.maxBytes = n
	return c
}

// LimitAge makes the cache also drop the events it took more than d ago, as newer ones come
// (the newest event is always kept), by the clock now. Like an etcd compaction window: a watch
// resuming from further back gets 410 and relists, and a steady stream of small changes (node
// heartbeats) does not keep the cache growing until it holds size of them. Call it before the
// first Add.
func (c *Cache) LimitAge(d time.Duration, now func() time.Time) *Cache {
	c.maxAge, c.now = d, now
	return c
}

// Reset empties the cache and declares rev the point from which it knows every event: a
// storage calls it when it (re)starts from a list at rev, before adding later events.
// Watchers are ended; they re-watch and get 410 if their version is now unknown.
func (c *Cache) Reset(rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ring, c.floor, c.rev, c.bytes = nil, rev, rev, 0
	c.objectFields = map[string]string{}
	c.wake()
	for w := range c.watchers {
		w.end()
	}
	c.watchers = map[*Watch]struct{}{}
}

// Add records an event and hands it to matching watchers. Events must come in revision order.
func (c *Cache) Add(ev Event) {
	var read *selectable
	if ev.Type != Bookmark && !ev.Meta.hasObjectField(ev.Resource) {
		s := readSelectable(ev.Object) // outside the lock: watchers need not wait for it
		read = &s
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ev.Rev <= c.rev {
		return // already known (a replay overlapping the live stream)
	}
	if read != nil {
		ev = c.complete(ev, read.value(ev.Resource))
	}
	var oldest int64 // events added before it are past maxAge
	if c.maxAge > 0 {
		ev.added = c.now().UnixNano()
		oldest = ev.added - int64(c.maxAge)
	}
	c.bytes += eventBytes(ev)
	c.ring = append(c.ring, ev)
	for len(c.ring) > c.size || len(c.ring) > 1 && (c.maxBytes > 0 && c.bytes > c.maxBytes || c.ring[0].added < oldest) {
		old := c.ring[0]
		c.floor = old.Rev
		c.bytes -= eventBytes(old)
		c.ring[0] = Event{} // the array's dropped front must not keep the object
		c.ring = c.ring[1:]
	}
	c.rev = ev.Rev
	c.wake()
	for w := range c.watchers {
		if !w.offer(ev) {
			delete(c.watchers, w)
		}
	}
}

// complete adds the object field to an event that came without it: v, read from the object,
// to Meta (and to Prev for a delete, whose object is the one deleted), and to Prev what the
// object was at its previous event. An object the cache has seen no event of since Reset has no
// known previous value; its Prev then passes the selector (Matches), so a watch whose selection
// it does not match now is sent a DELETED, which a client that never had it ignores. Called
// with mu held.
func (c *Cache) complete(ev Event, v string) Event {
	f := objectField(ev.Resource)
	key := ev.Resource + "/" + ev.Meta.Namespace + "/" + ev.Meta.Name
	ev.Meta = ev.Meta.withFields(map[string]string{f: v})
	prev, known := c.objectFields[key]
	if ev.Type == Deleted {
		prev, known = v, true
		delete(c.objectFields, key)
	} else {
		c.objectFields[key] = v
	}
	if ev.Prev != nil && known && !ev.Prev.hasObjectField(ev.Resource) {
		p := ev.Prev.withFields(map[string]string{f: prev})
		ev.Prev = &p
	}
	return ev
}

// Progress moves the newest known revision without an event (a change to something not
// served), so bookmarks and "most recent" reads can advance.
func (c *Cache) Progress(rev int64) {
	c.mu.Lock()
	if rev > c.rev {
		c.rev = rev
		c.wake()
	}
	c.mu.Unlock()
}

// wake tells WaitRev callers that rev moved; called with mu held.
func (c *Cache) wake() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Size returns how many events the cache holds and about how many bytes of memory they take
// (their objects, metadata and maps; an estimate, for operators sizing the cache).
func (c *Cache) Size() (events int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ring), c.bytes
}

// eventBytes estimates the memory an event holds: its object, and its metadata with their maps.
func eventBytes(ev Event) int64 {
	n := int64(unsafe.Sizeof(ev)) + int64(cap(ev.Object)) + metaBytes(ev.Meta)
	if ev.Prev != nil {
		n += int64(unsafe.Sizeof(*ev.Prev)) + metaBytes(*ev.Prev)
	}
	return n
}

// metaBytes estimates what m's strings and maps hold beyond the Meta itself.
func metaBytes(m Meta) int64 {
	return int64(len(m.Namespace)+len(m.Name)) + mapBytes(m.Labels) + mapBytes(m.Fields)
}

// mapBytes estimates a small map[string]string: a header, a group of slots per eight entries
// (two string headers each, and a control byte), and the strings.
func mapBytes(m map[string]string) int64 {
	if m == nil {
		return 0
	}
	const header, slot = 48, 2*16 + 1
	n := int64(header) + int64((len(m)+7)/8*8*slot)
	for k, v := range m {
		n += int64(len(k) + len(v))
	}
	return n
}

// Rev returns the newest revision the cache knows.
func (c *Cache) Rev() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rev
}

// Watch starts a watch of resource (in namespace, if not empty) filtered by opts, delivering
// initial first and then every event after rev from. It fails with a 410 if from is older than
// the cache's memory.
func (c *Cache) Watch(resource, namespace string, opts ListOptions, from int64, initial []Event) (*Watch, error) {
	if opts.selectsObject(resource) {
		// The storage selected these by its Meta only (Matches lets an object field through).
		kept := make([]Event, 0, len(initial))
		for _, ev := range initial {
			if ev.Type == Bookmark || matchObjectEvent(opts, resource, ev) {
				kept = append(kept, ev)
			}
		}
		initial = kept
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if from < c.floor {
		return nil, Gone("too old resource version: %d (%d)", from, c.floor)
	}
	w := &Watch{
		resource: resource, namespace: namespace, opts: opts, cache: c, from: from,
		wake: make(chan struct{}, 1), pending: initial, sent: from,
	}
	for _, ev := range c.ring {
		if ev.Rev > from {
			if out, ok := w.filter(ev); ok {
				w.pending = append(w.pending, out)
			}
		}
	}
	w.limit = len(w.pending) + c.buffer
	c.watchers[w] = struct{}{}
	if len(w.pending) > 0 {
		w.signal()
	}
	return w, nil
}

// Watch is one client's watch. Next is called from one goroutine; Stop from any.
type Watch struct {
	resource, namespace string
	opts                ListOptions
	cache               *Cache
	from                int64 // events at or before it are not for this watch
	wake                chan struct{}
	limit               int // set at construction

	mu      sync.Mutex // guards pending, ended and sent
	pending []Event
	ended   bool
	sent    int64 // revision of the last event delivered or bookmarked
}

// filter decides what a watcher sees of ev: selectors apply to the object before and after,
// so an object leaving the selection arrives as DELETED and one entering as ADDED.
func (w *Watch) filter(ev Event) (Event, bool) {
	if ev.Resource != w.resource {
		return ev, false
	}
	if w.namespace != "" && ev.Meta.Namespace != w.namespace {
		return ev, false
	}
	now := w.opts.Matches(ev.Meta)
	before := ev.Prev != nil && w.opts.Matches(*ev.Prev)
	switch {
	case ev.Type == Deleted:
		if ev.Prev != nil {
			now = before
		}
		return ev, now
	case ev.Prev == nil:
		return ev, now
	case now && before:
		return ev, true
	case now:
		ev.Type = Added
		return ev, true
	case before:
		ev.Type = Deleted
		return ev, true
	}
	return ev, false
}

// offer is called with Cache.mu held; it returns false if the watcher is to be dropped.
func (w *Watch) offer(ev Event) bool {
	if ev.Rev <= w.from {
		return true // the watch started after it (a list already included it)
	}
	out, ok := w.filter(ev)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return false
	}
	if !ok {
		return true
	}
	if len(w.pending) >= w.limit {
		w.ended = true // too slow: end it rather than buffer without bound
		w.pending = nil
		w.signal()
		return false
	}
	w.pending = append(w.pending, out)
	w.signal()
	return true
}

// matchObjectEvent checks the object field of an initial event against the selector of opts.
func matchObjectEvent(opts ListOptions, resource string, ev Event) bool {
	if ev.Meta.hasObjectField(resource) {
		return opts.Matches(ev.Meta)
	}
	return matchObject(opts.Fields, resource, readSelectable(ev.Object))
}

func (w *Watch) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Watch) end() {
	w.mu.Lock()
	w.ended = true
	w.mu.Unlock()
	w.signal()
}

// Next waits for events. It returns ErrWatchEnded once the watch is over and ctx.Err() if ctx
// ends first.
func (w *Watch) Next(ctx context.Context) ([]Event, error) { return w.NextOrBookmark(ctx, nil) }

// NextOrBookmark is Next that also returns, when tick fires and nothing is pending, a single
// Bookmark event (Rev only, no Object) at the revision BookmarkRev allows. The caller delivers
// what it returns in order: a bookmark is decided only after the events returned before it were
// handed over, so it never announces a revision whose events come after it. (Decided elsewhere,
// between Next taking the pending events and their delivery, it could: a client resuming from
// it would skip them.)
func (w *Watch) NextOrBookmark(ctx context.Context, tick <-chan time.Time) ([]Event, error) {
	for {
		w.mu.Lock()
		evs, ended := w.pending, w.ended
		w.pending = nil
		if len(evs) > 0 {
			w.sent = evs[len(evs)-1].Rev
		}
		w.mu.Unlock()
		if len(evs) > 0 {
			return evs, nil
		}
		if ended {
			return nil, ErrWatchEnded
		}
		select {
		case <-w.wake:
		case <-tick:
			if rev, ok := w.BookmarkRev(); ok {
				return []Event{{Type: Bookmark, Rev: rev}}, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// BookmarkRev returns the revision a bookmark may announce now: the cache's newest, if every
// event up to it has been delivered to this watcher. ok is false while events are pending, and
// while the cache is still behind the revision the watch started from (a bookmark there would
// send a resuming client back to events it already had).
func (w *Watch) BookmarkRev() (rev int64, ok bool) {
	w.cache.mu.Lock()
	rev = w.cache.rev
	w.cache.mu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.pending) > 0 || w.ended || rev < w.from {
		return 0, false
	}
	w.sent = rev
	return rev, true
}

// Stop ends the watch and releases it from the cache.
func (w *Watch) Stop() {
	w.cache.mu.Lock()
	delete(w.cache.watchers, w)
	w.cache.mu.Unlock()
	w.end()
}

// Knows reports whether every event after rev is still in the cache (or rev is in the future):
// a watch or a continued list from rev can be served without a gap.
func (c *Cache) Knows(rev int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return rev >= c.floor
}

// WaitRev waits until the cache has seen revision rev, for reads that must not be older than
// a version a client already saw. It returns false if ctx ends first.
func (c *Cache) WaitRev(ctx context.Context, rev int64) bool {
	for {
		c.mu.Lock()
		cur, ch := c.rev, c.changed
		c.mu.Unlock()
		if cur >= rev {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}
