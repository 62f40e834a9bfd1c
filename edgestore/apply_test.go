package edgestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// upsert is the hub's Upsert of ConfigMap ns/name at rev.
func upsert(name string, rev uint64) *protocol.Upsert {
	return &protocol.Upsert{Key: resource.Key{Resource: resource.ConfigMaps, Namespace: "ns", Name: name}, Rev: rev,
		Object: []byte(`{"metadata":{"name":"` + name + `","namespace":"ns"}}`)}
}

// TestApplyAfterAFailureIsRefused: when the hub's data cannot be stored (here a damaged record;
// in the field a full disk), nothing the hub sends after it may be stored either, even in the
// same transaction: a later Progress would move the cursor past the missing data, and the next
// session would resume from there and never send it. Until the next session begins, every
// Apply fails with ErrApplyBroken.
func TestApplyAfterAFailureIsRefused(t *testing.T) {
	s := openTwinStore(t, nil)
	ctx := context.Background()
	submit := func(msgs ...protocol.Message) <-chan error {
		done := make(chan error, 1)
		if err := s.Apply(ctx, msgs, func(err error) { done <- err }); err != nil {
			done <- err
		}
		return done
	}
	if err := <-submit(upsert("a", 1), &protocol.Progress{Through: 1}); err != nil {
		t.Fatal(err)
	}
	key := resource.StoreKey(resource.Key{Resource: resource.ConfigMaps, Namespace: "ns", Name: "a"})
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketObjects).Put([]byte(key), []byte{0xff}) }); err != nil {
		t.Fatal(err)
	}

	// Hold the writer so that the failing Apply and the next one share a transaction.
	started, release := make(chan struct{}), make(chan struct{})
	go s.do(ctx, func(*bolt.Tx, *txState) error { close(started); <-release; return nil })
	<-started
	failing := submit(upsert("a", 2))
	after := submit(upsert("b", 2), &protocol.Progress{Through: 10})
	close(release)
	if err := <-failing; err == nil {
		t.Fatal("an upsert over a damaged record succeeded")
	}
	if err := <-after; !errors.Is(err, ErrApplyBroken) {
		t.Fatalf("the Apply after a failed one: %v, want ErrApplyBroken", err)
	}
	if _, cursor := s.Cursor(); cursor != 1 {
		t.Fatalf("cursor %d after a failed apply, want 1", cursor)
	}
	if rec, _ := s.Get(resource.StoreKey(resource.Key{Resource: resource.ConfigMaps, Namespace: "ns", Name: "b"})); rec != nil {
		t.Fatal("data after the failed apply was stored")
	}
	if err := <-submit(&protocol.Progress{Through: 5}); !errors.Is(err, ErrApplyBroken) {
		t.Fatalf("a later Apply of the same session: %v, want ErrApplyBroken", err)
	}

	// A new session starts clean (and, in the field, catches up from cursor 1).
	if err := s.BeginSession(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketObjects).Delete([]byte(key)) }); err != nil {
		t.Fatal(err)
	}
	if err := <-submit(upsert("a", 2), upsert("b", 2), &protocol.Progress{Through: 10}); err != nil {
		t.Fatal(err)
	}
	if _, cursor := s.Cursor(); cursor != 10 {
		t.Fatalf("cursor %d after the new session's data, want 10", cursor)
	}
}

// TestUnchangedObjectKeepsItsVersion: the hub sends an object again unchanged when something
// that depends on it changed, and in a reset. The store keeps it as it was: same local version,
// no change for watchers, not swept by the reset; only its stream revision moves, so that later
// messages are still ordered against it. An object whose content differs under the same cloud
// version (a filtered EndpointSlice for a node that changed groups) is stored as a change.
func TestUnchangedObjectKeepsItsVersion(t *testing.T) {
	s := openTwinStore(t, nil)
	var changes []Change
	var mu sync.Mutex
	s.Subscribe(func(cs []Change) { mu.Lock(); changes = append(changes, cs...); mu.Unlock() })
	taken := func() []Change { mu.Lock(); defer mu.Unlock(); c := changes; changes = nil; return c }
	key := resource.Key{Resource: resource.ConfigMaps, Namespace: "ns", Name: "a"}
	cm := func(rev uint64, data string) *protocol.Upsert {
		return &protocol.Upsert{Key: key, Rev: rev,
			Object: []byte(`{"metadata":{"name":"a","namespace":"ns","resourceVersion":"7"},"data":{"v":"` + data + `"}}`)}
	}
	apply := func(msgs ...protocol.Message) { t.Helper(); applyNow(t, s, msgs...) }
	get := func() *Record {
		t.Helper()
		rec, err := s.Get(resource.StoreKey(key))
		if err != nil || rec == nil {
			t.Fatalf("get: %v, %v", rec, err)
		}
		return rec
	}

	apply(cm(10, "1"), &protocol.Progress{Through: 10})
	first := get()
	if len(taken()) != 1 {
		t.Fatal("the first upsert was not a change")
	}
	apply(cm(12, "1"), &protocol.Progress{Through: 12})
	again := get()
	if again.LocalRev != first.LocalRev || string(again.Object) != string(first.Object) || again.Rev != 12 {
		t.Fatalf("after the same object again: local %d (was %d), rev %d; object %s", again.LocalRev, first.LocalRev, again.Rev, again.Object)
	}
	if c := taken(); len(c) != 0 {
		t.Fatalf("the same object again made %d changes", len(c))
	}
	apply(cm(11, "old")) // older than the revision the unchanged copy moved the record to
	if get().LocalRev != first.LocalRev {
		t.Fatal("a message older than the re-sent copy overwrote it")
	}

	// A reset that names it unchanged keeps it, without a change.
	apply(&protocol.ResetBegin{}, cm(20, "1"), &protocol.ResetEnd{Through: 20})
	if rec := get(); rec.LocalRev != first.LocalRev || rec.Rev != 20 {
		t.Fatalf("after a reset with the object unchanged: local %d (was %d), rev %d", rec.LocalRev, first.LocalRev, rec.Rev)
	}
	if c := taken(); len(c) != 0 {
		t.Fatalf("a reset with the object unchanged made %d changes", len(c))
	}

	// Same cloud version, other content: a change.
	apply(cm(21, "filtered"), &protocol.Progress{Through: 21})
	if rec := get(); rec.LocalRev == first.LocalRev || !strings.Contains(string(rec.Object), "filtered") {
		t.Fatalf("other content under the same cloud version was not stored: %s", rec.Object)
	}
	if c := taken(); len(c) != 1 {
		t.Fatalf("other content made %d changes, want 1", len(c))
	}
}

// TestSetStatus: the edge's status goes over the record it was made from and no other; it keeps
// the cloud version; nothing is written during a reset; subscribers see it marked StatusOnly.
func TestSetStatus(t *testing.T) {
	s := openTwinStore(t, nil)
	ctx := context.Background()
	key := resource.Key{Resource: resource.Devices, Namespace: "ns", Name: "d"}
	sk := resource.StoreKey(key)
	obj := func(rv, status string) []byte {
		return []byte(`{"metadata":{"name":"d","namespace":"ns","resourceVersion":"` + rv + `"},"spec":{"nodeName":"n"},"status":` + status + `}`)
	}
	var mu sync.Mutex
	var seen []Change
	s.Subscribe(func(cs []Change) { mu.Lock(); seen = append(seen, cs...); mu.Unlock() })
	apply := func(msgs ...protocol.Message) { t.Helper(); applyNow(t, s, msgs...) }
	apply(&protocol.Upsert{Key: key, Rev: 5, Object: obj("5", `{"state":"cloud"}`)})
	rec, _ := s.Get(sk)
	set := func(localRev uint64, status string) int {
		t.Helper()
		n, err := s.SetStatus(ctx, []StatusWrite{{StoreKey: sk, LocalRev: localRev, Object: obj("ignored", status)}})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := set(rec.LocalRev+1, `{"state":"stale"}`); n != 0 {
		t.Fatal("a status made from another version of the record was stored")
	}
	if n := set(rec.LocalRev, `{"state":"edge"}`); n != 1 {
		t.Fatal("the edge's status was not stored")
	}
	got, _ := s.Get(sk)
	if got.Rev != 5 || got.CloudRV != "5" || !got.Meta.EdgeStatus || got.Meta.NodeName != "n" || got.LocalRev <= rec.LocalRev ||
		!strings.Contains(string(got.Object), `"state":"edge"`) || !strings.Contains(string(got.Object), `"resourceVersion":"`) {
		t.Fatalf("stored %+v %s", got, got.Object)
	}
	mu.Lock()
	last := seen[len(seen)-1]
	mu.Unlock()
	if !last.StatusOnly || last.Rev != got.LocalRev {
		t.Fatalf("subscribers saw %+v", last)
	}
	// During a reset the reset brings the truth; nothing is written.
	apply(&protocol.ResetBegin{})
	if n := set(got.LocalRev, `{"state":"during reset"}`); n != 0 {
		t.Fatal("a status was stored during a reset")
	}
	// The reset names the same cloud version: the edge's status stays.
	apply(&protocol.Upsert{Key: key, Rev: 6, Object: obj("5", `{"state":"cloud"}`)}, &protocol.ResetEnd{Through: 6})
	if after, _ := s.Get(sk); after.LocalRev != got.LocalRev || after.Rev != 6 || !strings.Contains(string(after.Object), `"state":"edge"`) {
		t.Fatalf("after a reset naming the same version: %+v %s", after, after.Object)
	}
	// A newer cloud version replaces it, unmarked.
	apply(&protocol.Upsert{Key: key, Rev: 7, Object: obj("7", `{"state":"cloud"}`)})
	if after, _ := s.Get(sk); after.Meta.EdgeStatus || !strings.Contains(string(after.Object), `"state":"cloud"`) {
		t.Fatalf("after a newer version: %+v %s", after, after.Object)
	}
}

// applyNow applies msgs and waits for their commit.
func applyNow(t *testing.T, s *Store, msgs ...protocol.Message) {
	t.Helper()
	done := make(chan error, 1)
	if err := s.Apply(context.Background(), msgs, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestApplyLocalAfterDelete: the answer to a write the metaserver forwarded can come after the
// hub's delete of that object (deleted in the cloud just after the write). ApplyLocal must not
// bring it back: the cursor moves past the delete and no message would ever remove it again.
// Whether the delete's Progress came first or not, the object stays deleted; a write newer than
// the delete (the object made again) is stored.
func TestApplyLocalAfterDelete(t *testing.T) {
	s := openTwinStore(t, nil)
	ctx := context.Background()
	key := func(name string) resource.Key {
		return resource.Key{Resource: resource.ConfigMaps, Namespace: "ns", Name: name}
	}
	obj := func(name string, rv uint64) []byte {
		return []byte(fmt.Sprintf(`{"metadata":{"name":%q,"namespace":"ns","resourceVersion":"%d"}}`, name, rv))
	}
	s.BeginSession(ctx, "c1")
	applyNow(t, s, &protocol.ResetBegin{}, &protocol.Upsert{Key: key("x"), Rev: 10, Object: obj("x", 10)},
		&protocol.Upsert{Key: key("y"), Rev: 10, Object: obj("y", 10)}, &protocol.ResetEnd{Through: 10})

	// x: deleted at 21 and the cursor moved past it before the answer to the write at 20.
	applyNow(t, s, &protocol.Delete{Key: key("x"), Rev: 21}, &protocol.Progress{Through: 21})
	if rec, err := s.ApplyLocal(ctx, key("x"), 20, obj("x", 20)); err != nil || rec != nil {
		t.Fatalf("ApplyLocal at 20 after the delete at 21 and progress: %v %v, want nothing stored", rec, err)
	}
	// y: deleted at 31, its Progress not yet there.
	applyNow(t, s, &protocol.Delete{Key: key("y"), Rev: 31})
	if rec, err := s.ApplyLocal(ctx, key("y"), 30, obj("y", 30)); err != nil || rec != nil {
		t.Fatalf("ApplyLocal at 30 after the delete at 31: %v %v, want nothing stored", rec, err)
	}
	// n: made by a forwarded write at 34 and deleted at 35 before the hub sent it; the hub's
	// Delete comes (for a key the edge never held) before the write's answer.
	applyNow(t, s, &protocol.Delete{Key: key("n"), Rev: 35})
	if rec, err := s.ApplyLocal(ctx, key("n"), 34, obj("n", 34)); err != nil || rec != nil {
		t.Fatalf("ApplyLocal at 34 after the delete at 35 of a key never held: %v %v, want nothing stored", rec, err)
	}
	// Made again after the delete, answered before the hub sends it: stored.
	if rec, err := s.ApplyLocal(ctx, key("y"), 32, obj("y", 32)); err != nil || rec == nil || rec.Rev != 32 {
		t.Fatalf("ApplyLocal at 32, after the delete at 31: %v %v, want it stored", rec, err)
	}
	// A new object ahead of the cursor: stored (the client reads its own write).
	if rec, err := s.ApplyLocal(ctx, key("z"), 33, obj("z", 33)); err != nil || rec == nil {
		t.Fatalf("ApplyLocal of a new object ahead of the cursor: %v %v", rec, err)
	}
	// The cursor passes the delete at 31: what it remembered of it goes.
	applyNow(t, s, &protocol.Progress{Through: 40})
	if err := s.do(ctx, func(*bolt.Tx, *txState) error {
		if len(s.deletedAhead) != 0 {
			return fmt.Errorf("deletes remembered after the cursor passed them: %v", s.deletedAhead)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestFailedCommitDuringResetBreaksTheSession: a commit that fails in the middle of a reset,
// even one holding only a twin write, leaves the reset unfinished: the hub's ResetEnd must then
// fail (the session ends unacknowledged and the next one resets again), not be acknowledged
// with nothing swept.
func TestFailedCommitDuringResetBreaksTheSession(t *testing.T) {
	s := openTwinStore(t, nil)
	ctx := context.Background()
	s.BeginSession(ctx, "c1")
	applyNow(t, s, &protocol.ResetBegin{}, upsert("a", 1), upsert("b", 1), &protocol.ResetEnd{Through: 1})
	// A new session's reset, in which the cloud no longer has b.
	s.BeginSession(ctx, "c1")
	applyNow(t, s, &protocol.ResetBegin{}, upsert("a", 5))

	// A twin write whose commit fails: the file may not grow (as on a full disk).
	signal.Ignore(syscall.SIGXFSZ)
	defer signal.Reset(syscall.SIGXFSZ)
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: uint64(fi.Size()), Max: lim.Max}); err != nil {
		t.Fatal(err)
	}
	_, werr := s.WriteTwin(ctx, "ns/dev", make([]byte, 4<<20))
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	if werr == nil {
		t.Fatal("the twin write's commit did not fail; the test shows nothing")
	}

	done := make(chan error, 1)
	if err := s.Apply(ctx, []protocol.Message{&protocol.ResetEnd{Through: 5}}, func(err error) { done <- err }); err != nil {
		done <- err
	}
	if err := <-done; !errors.Is(err, ErrApplyBroken) {
		t.Fatalf("ResetEnd after a failed commit in the reset: %v, want ErrApplyBroken", err)
	}
	// The next session redoes the reset, and b goes.
	s.BeginSession(ctx, "c1")
	applyNow(t, s, &protocol.ResetBegin{}, upsert("a", 5), &protocol.ResetEnd{Through: 5})
	if rec, _ := s.Get(resource.StoreKey(resource.Key{Resource: resource.ConfigMaps, Namespace: "ns", Name: "b"})); rec != nil {
		t.Fatal("b, absent from the reset, is still stored")
	}
}
