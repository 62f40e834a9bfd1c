package edgestore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// TestApplyAfterAFailureIsRefused: when the hub's data cannot be stored (here a damaged record;
// in the field a full disk), nothing the hub sends after it may be stored either, even in the
// same transaction: a later Progress would move the cursor past the missing data, and the next
// session would resume from there and never send it. Until the next session begins, every
// Apply fails with ErrApplyBroken.
func TestApplyAfterAFailureIsRefused(t *testing.T) {
	s := openTwinStore(t, nil)
	ctx := context.Background()
	upsert := func(name string, rev uint64) *protocol.Upsert {
		return &protocol.Upsert{Key: resource.Key{Resource: resource.ConfigMaps, Namespace: "ns", Name: name}, Rev: rev,
			Object: []byte(`{"metadata":{"name":"` + name + `","namespace":"ns"}}`)}
	}
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
	ctx := context.Background()
	var changes []Change
	var mu sync.Mutex
	s.Subscribe(func(cs []Change) { mu.Lock(); changes = append(changes, cs...); mu.Unlock() })
	taken := func() []Change { mu.Lock(); defer mu.Unlock(); c := changes; changes = nil; return c }
	key := resource.Key{Resource: resource.ConfigMaps, Namespace: "ns", Name: "a"}
	cm := func(rev uint64, data string) *protocol.Upsert {
		return &protocol.Upsert{Key: key, Rev: rev,
			Object: []byte(`{"metadata":{"name":"a","namespace":"ns","resourceVersion":"7"},"data":{"v":"` + data + `"}}`)}
	}
	apply := func(msgs ...protocol.Message) {
		t.Helper()
		done := make(chan error, 1)
		if err := s.Apply(ctx, msgs, func(err error) { done <- err }); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
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
