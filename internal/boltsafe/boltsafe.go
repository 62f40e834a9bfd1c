package boltsafe

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged is returned (wrapped, with what bbolt found) when bbolt panicked on the file.
var ErrDamaged = errors.New("the file is damaged")

// Open is bolt.Open, with a panic on a damaged file returned as ErrDamaged.
func Open(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("%w (%v); restore it from a backup, or move it aside to start empty", ErrDamaged, p)
		}
	}()
	return bolt.Open(path, 0o600, opts)
}

// Update is db.Update, with a panic on a damaged page returned as ErrDamaged.
func Update(db *bolt.DB, fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w (%v); restore it from a backup, or move it aside to start empty", ErrDamaged, p)
		}
	}()
	return db.Update(fn)
}
