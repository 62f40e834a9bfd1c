package pki

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// memShare is a CAShare in memory, as the etcd store's ClaimCA behaves: the first pair stays.
type memShare struct {
	mu     sync.Mutex
	stored []byte
	err    error
}

func (m *memShare) ClaimCA(_ context.Context, pair []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	if m.stored == nil {
		m.stored = append([]byte(nil), pair...)
	}
	return m.stored, nil
}

// TestLoadSharedCA: the first replica's CA becomes the shared one, and the files of a replica
// without a CA of its own become that CA; a replica whose data dir holds another CA is refused
// (its nodes would be refused by the others), and its files are left as they were.
func TestLoadSharedCA(t *testing.T) {
	now := time.Now()
	ctx := context.Background()
	share := &memShare{}
	first, second, other := t.TempDir(), t.TempDir(), t.TempDir()

	a, err := LoadSharedCA(ctx, first, now, share)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadSharedCA(ctx, second, now, share)
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash() != b.Hash() {
		t.Fatalf("two replicas got CAs %s and %s", a.Hash(), b.Hash())
	}
	// The second's files are the shared CA: it starts the same without the share's help.
	if again, err := LoadOrCreateCA(second, now); err != nil || again.Hash() != a.Hash() {
		t.Fatalf("the second replica's files hold %v, %v; want %s", again, err, a.Hash())
	}
	// Restarts keep working.
	if again, err := LoadSharedCA(ctx, first, now, share); err != nil || again.Hash() != a.Hash() {
		t.Fatalf("a restart of the first: %v, %v", again, err)
	}

	// A data dir with a CA of its own.
	own, err := LoadOrCreateCA(other, now)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(other, CAKeyFile))
	if _, err := LoadSharedCA(ctx, other, now, share); !errors.Is(err, ErrBadCA) {
		t.Fatalf("a data dir holding CA %s beside the shared %s: %v, want ErrBadCA", own.Hash(), a.Hash(), err)
	}
	if after, _ := os.ReadFile(filepath.Join(other, CAKeyFile)); string(after) != string(before) {
		t.Fatal("the refused data dir's CA key was changed")
	}

	// A share that cannot answer: no CA, and a clear error.
	if _, err := LoadSharedCA(ctx, t.TempDir(), now, &memShare{err: errors.New("etcd unreachable")}); err == nil {
		t.Fatal("a share that fails gave a CA")
	}
	// A share holding garbage.
	if _, err := LoadSharedCA(ctx, t.TempDir(), now, &memShare{stored: []byte("{not json")}); !errors.Is(err, ErrBadCA) {
		t.Fatalf("a share holding garbage: %v, want ErrBadCA", err)
	}
}
