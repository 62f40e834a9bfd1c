package edgestore

import (
	"context"
	"errors"
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
