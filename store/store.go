package store

import (
	"context"
	"errors"
)

// Sentinel errors. Backends return them unwrapped or wrapped once; test with errors.Is.
var (
	// ErrNotFound: Get, Update or Delete of a key that does not exist.
	ErrNotFound = errors.New("store: key not found")
	// ErrExists: Create of a key that already exists.
	ErrExists = errors.New("store: key already exists")
	// ErrConflict: Update or Delete whose expected revision is not the key's current one.
	ErrConflict = errors.New("store: revision conflict")
	// ErrCompacted: Watch from a revision older than the retained history.
	ErrCompacted = errors.New("store: revision compacted")
	// ErrFutureRev: Watch from a revision the store has not reached (its history was reset).
	ErrFutureRev = errors.New("store: revision is ahead of the store")
	// ErrTooLarge: a write of a value the backend refuses for its size (etcd's request limit,
	// 1.5 MiB by default): trying again cannot succeed.
	ErrTooLarge = errors.New("store: value too large for the store")
	// ErrClosed: any call after Close.
	ErrClosed = errors.New("store: closed")
	// ErrSlowWatcher: ends a watch whose reader fell too far behind; re-watch from the last
	// revision seen.
	ErrSlowWatcher = errors.New("store: watcher too slow")
)

// KV is one key at one revision.
type KV struct {
	Key       string
	Value     []byte
	CreateRev int64 // revision that created the key (its current incarnation)
	ModRev    int64 // revision of its last change
}

// EventType is a put or a delete.
type EventType uint8

const (
	Put    EventType = 1
	Delete EventType = 2
)

func (t EventType) String() string {
	if t == Delete {
		return "DELETE"
	}
	return "PUT"
}

// Event is one change. Its revision is KV.ModRev. For a delete, KV holds the key and the
// revision of the delete, and Prev the deleted value. Prev is nil when a put created the key.
type Event struct {
	Type EventType
	KV   KV
	Prev *KV
}

// Rev is the revision of the change.
func (e Event) Rev() int64 { return e.KV.ModRev }

// WatchResponse is a batch of events in revision order, or a final error (after which the
// channel is closed).
type WatchResponse struct {
	Events []Event
	Err    error
}

// Backend is a durable, revisioned key-value store.
type Backend interface {
	// ClusterID names this store's history. Cursors (revisions) from another cluster mean
	// nothing here; the ID is created with the store and never changes.
	ClusterID() string
	// Rev returns the current revision.
	Rev(ctx context.Context) (int64, error)
	// Compacted returns the oldest revision a Watch can start from, minus one: watching from
	// any rev >= Compacted works.
	Compacted(ctx context.Context) (int64, error)
	// Get returns key at the current revision.
	Get(ctx context.Context, key string) (KV, error)
	// List returns keys under prefix in key order, starting after the key `after` ("" for the
	// first), at most limit of them (0 for all), and the revision the result is consistent at.
	List(ctx context.Context, prefix, after string, limit int) ([]KV, int64, error)
	// Keys is List without the values (each KV's Value is nil): for walking many keys whose
	// values would not fit in memory a page at a time.
	Keys(ctx context.Context, prefix, after string, limit int) ([]KV, int64, error)
	// Create puts key if it does not exist.
	Create(ctx context.Context, key string, value []byte) (int64, error)
	// Update replaces key if its ModRev is rev; rev 0 skips the check.
	Update(ctx context.Context, key string, value []byte, rev int64) (int64, error)
	// Delete removes key if its ModRev is rev; rev 0 skips the check. It returns the revision
	// of the delete and the value deleted.
	Delete(ctx context.Context, key string, rev int64) (int64, KV, error)
	// Watch sends every event with a revision greater than rev, in order, until ctx ends or
	// an error (sent as the last response). rev older than Compacted gives ErrCompacted.
	Watch(ctx context.Context, rev int64) (<-chan WatchResponse, error)
	// Close releases the store; pending calls fail with ErrClosed.
	Close() error
}
