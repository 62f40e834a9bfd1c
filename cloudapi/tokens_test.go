package cloudapi

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/join"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
	"github.com/tetherhub/tether/store/boltstore"
)

// failingTokenLists fails its first failures lists of the join tokens, and its next
// deleteFailures deletions of one, as a store that is away for a moment does.
type failingTokenLists struct {
	store.Backend
	failures       atomic.Int32
	lists          atomic.Int32
	deleteFailures atomic.Int32 // the next this many token deletions fail
}

func (b *failingTokenLists) Delete(ctx context.Context, key string, rev int64) (int64, store.KV, error) {
	if strings.HasPrefix(key, tokenPrefix) && b.deleteFailures.Add(-1) >= 0 {
		return 0, store.KV{}, errors.New("the store is away")
	}
	return b.Backend.Delete(ctx, key, rev)
}

func (b *failingTokenLists) List(ctx context.Context, prefix, from string, limit int) ([]store.KV, int64, error) {
	if strings.HasPrefix(prefix, tokenPrefix) {
		if b.lists.Add(1) <= b.failures.Load() {
			return nil, 0, errors.New("the store is away")
		}
	}
	return b.Backend.List(ctx, prefix, from, limit)
}

// TestRevocationRetried: a deleted Node's join token is revoked even when listing the tokens
// failed at first; the revocation is tried again until it works. Before, the failure was logged
// and the token stayed valid until the cloud restarted.
func TestRevocationRetried(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bs, err := boltstore.Open(boltstore.DefaultConfig(filepath.Join(t.TempDir(), "c.db")), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	b := &failingTokenLists{Backend: bs}
	ix, err := index.New(index.DefaultConfig(), bs, resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tokens := NewTokens(b, "sha256:"+strings.Repeat("0", 64), time.Now, zerolog.Nop())
	tokens.RevokeRetry, tokens.RevokeRetryMax = 10*time.Millisecond, 40*time.Millisecond
	tokens.RevokeWithNodes(ctx, ix)
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-ix.Ready()

	const nodeKey = "/nodes/edge-1"
	if _, err := bs.Create(ctx, nodeKey, []byte(`{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)); err != nil {
		t.Fatal(err)
	}
	tok, _, err := tokens.Create(ctx, "edge-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := tokens.Check(ctx, tok.ID, tok.Secret, "edge-1"); err != nil {
		t.Fatal(err)
	}
	b.failures.Store(3)
	if _, _, err := bs.Delete(ctx, nodeKey, 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := tokens.Check(ctx, tok.ID, tok.Secret, "edge-1")
		if errors.Is(err, join.ErrTokenUnknown) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deleted node's token still checks (%v) after %d lists of the tokens", err, b.lists.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := b.lists.Load(); n != 4 {
		t.Errorf("the tokens were listed %d times, want 3 failures and 1 success", n)
	}

	// A failed deletion of the token is tried again too.
	if _, err := bs.Create(ctx, "/nodes/edge-2", []byte(`{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-2"}}`)); err != nil {
		t.Fatal(err)
	}
	tok2, _, err := tokens.Create(ctx, "edge-2", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b.deleteFailures.Store(2)
	if _, _, err := bs.Delete(ctx, "/nodes/edge-2", 0); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for !errors.Is(tokens.Check(ctx, tok2.ID, tok2.Secret, "edge-2"), join.ErrTokenUnknown) {
		if time.Now().After(deadline) {
			t.Fatalf("the token of edge-2 still checks after its deletions failed (%d failures left)", b.deleteFailures.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
