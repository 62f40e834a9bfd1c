package boltsafe

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestOpenDamagedFile: a file whose freelist page was overwritten makes bbolt panic while
// opening it; Open returns ErrDamaged instead, and opens a sound file as bbolt does.
func TestOpenDamagedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := Update(db, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("b"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v"))
	}); err != nil {
		t.Fatal(err)
	}
	pageSize := db.Info().PageSize
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// The meta pages (0 and 1) name the freelist page; overwrite every page after them with
	// garbage, so whichever one it is, bbolt finds a page of no known type there.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 2 * pageSize; i < len(data); i++ {
		data[i] = 0xab
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path, nil)
	if err == nil {
		db.Close()
		t.Fatal("a file with its pages overwritten opened")
	}
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open = %v, want ErrDamaged (bbolt panics on this damage)", err)
	}
}
