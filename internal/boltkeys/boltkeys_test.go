package boltkeys

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func key(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// TestDeleteThroughAfterAWriteInTheTransaction: a Put earlier in the transaction loads the leaf
// into memory; a delete loop that steps with Next then left keys 2, 4, 6, 8 and 10 behind.
func TestDeleteThroughAfterAWriteInTheTransaction(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("log"))
		for i := uint64(1); i <= 11 && err == nil; i++ {
			err = b.Put(key(i), []byte("v"))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var deleted int
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("log"))
		if err := b.Put(key(12), []byte("v")); err != nil {
			return err
		}
		deleted, err = DeleteThrough(b, 11)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var left []uint64
	db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("log")).ForEach(func(k, _ []byte) error {
			left = append(left, binary.BigEndian.Uint64(k))
			return nil
		})
	})
	if deleted != 11 || len(left) != 1 || left[0] != 12 {
		t.Fatalf("deleted %d, left %v; want 11 deleted and [12] left", deleted, left)
	}
}
