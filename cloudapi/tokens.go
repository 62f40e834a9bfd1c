package cloudapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/join"
	"github.com/tetherhub/tether/pki"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
)

// tokenPrefix is where join tokens live in the store: outside the served kinds, so they are never
// listed by the API nor routed to a node.
const tokenPrefix = "/tether/tokens/"

// storedToken is a join token as kept: the secret only as its digest.
type storedToken struct {
	ID      string    `json:"id"`
	Digest  string    `json:"digest"`
	Node    string    `json:"node,omitempty"` // empty for a fleet token
	Expires time.Time `json:"expires"`
	Created time.Time `json:"created"`
}

// Tokens makes and checks join tokens. It implements join.Tokens.
type Tokens struct {
	backend store.Backend
	caHash  string
	now     func() time.Time
	log     zerolog.Logger

	revokeCtx   context.Context // ends the revocation's retries (RevokeWithNodes)
	revokeMu    sync.Mutex
	revokeAfter map[string]int64 // deleted node names → revision of the deletion, not yet revoked
	revoking    bool             // revokeLoop runs
	// RevokeRetry is the first wait before revoking again after the store failed; it doubles
	// up to RevokeRetryMax while the failures go on.
	RevokeRetry, RevokeRetryMax time.Duration
}

// NewTokens returns the token service for the CA with hash caHash.
func NewTokens(backend store.Backend, caHash string, now func() time.Time, log zerolog.Logger) *Tokens {
	return &Tokens{backend: backend, caHash: caHash, now: now, log: log, RevokeRetry: time.Second, RevokeRetryMax: time.Minute}
}

// MaxTokenTTL bounds a token's life; a join token is a provisioning credential, not an identity.
const MaxTokenTTL = 365 * 24 * time.Hour

// Create makes a token for node (or any node when node is ""), valid for ttl.
func (t *Tokens) Create(ctx context.Context, node string, ttl time.Duration) (pki.Token, time.Time, error) {
	if ttl <= 0 || ttl > MaxTokenTTL {
		return pki.Token{}, time.Time{}, fmt.Errorf("ttl must be between 1s and %s, got %s", MaxTokenTTL, ttl)
	}
	if node != "" {
		if err := pki.ValidNodeName(node); err != nil {
			return pki.Token{}, time.Time{}, err
		}
	}
	tok, err := pki.NewToken(t.caHash)
	if err != nil {
		return pki.Token{}, time.Time{}, err
	}
	now := t.now().UTC()
	st := storedToken{ID: tok.ID, Digest: pki.SecretDigest(tok.Secret), Node: node, Expires: now.Add(ttl), Created: now}
	raw, _ := json.Marshal(st)
	if _, err := t.backend.Create(ctx, tokenPrefix+tok.ID, raw); err != nil {
		return pki.Token{}, time.Time{}, fmt.Errorf("store token: %w", err)
	}
	t.log.Info().Str("token_id", tok.ID).Str("node", node).Time("expires", st.Expires).Msg("join token created")
	return tok, st.Expires, nil
}

// Check implements join.Tokens.
func (t *Tokens) Check(ctx context.Context, id, secret, node string) error {
	kv, err := t.backend.Get(ctx, tokenPrefix+id)
	if errors.Is(err, store.ErrNotFound) {
		return join.ErrTokenUnknown
	}
	if err != nil {
		return err
	}
	var st storedToken
	if err := json.Unmarshal(kv.Value, &st); err != nil {
		return fmt.Errorf("stored token %s is damaged: %w", id, err)
	}
	switch {
	case !pki.SecretMatches(st.Digest, secret):
		return join.ErrTokenUnknown
	case !t.now().Before(st.Expires):
		return join.ErrTokenExpired
	case st.Node != "" && st.Node != node:
		return join.ErrTokenWrongNode
	}
	return nil
}

// RevokeWithNodes makes the tokens bound to a node's name go with its Node: once ix sees a Node
// deleted, the tokens bound to that name made before the deletion are deleted. Deleting a Node
// revokes the node; the token it joined with (often still in the edge's configuration or a
// shell's history, and valid for up to a year) would otherwise join it again at once. A token
// made after the deletion, to join the node again, is left alone, also when a restarted cloud
// replays the deletion from its history. Fleet tokens are not bound to a name and stay.
// Revocations the store failed are tried again until ctx ends. Call it before ix runs.
//
// One goroutine does the store's work, off the index goroutine, for all the deletions seen
// since it last looked: a bulk delete of nodes costs a list of the tokens per batch, not per
// node.
func (t *Tokens) RevokeWithNodes(ctx context.Context, ix *index.Index) {
	t.revokeCtx = ctx
	ix.Subscribe(func(u index.Update) {
		if u.New != nil || u.Old == nil || u.Old.Key.Resource != resource.Nodes {
			return
		}
		t.revokeMu.Lock()
		defer t.revokeMu.Unlock()
		if t.revokeAfter == nil {
			t.revokeAfter = map[string]int64{}
		}
		t.revokeAfter[u.Old.Key.Name] = max(t.revokeAfter[u.Old.Key.Name], u.Rev())
		if !t.revoking {
			t.revoking = true
			go t.revokeLoop()
		}
	})
}

// revokeLoop revokes for the deletions queued until none are left. The names whose revocation
// the store failed are queued again and tried after a wait that grows while it keeps failing, so
// a store that was away for a moment does not leave a deleted node's token valid.
func (t *Tokens) revokeLoop() {
	wait := t.RevokeRetry
	for {
		t.revokeMu.Lock()
		gone := t.revokeAfter
		t.revokeAfter = nil
		if len(gone) == 0 {
			t.revoking = false
			t.revokeMu.Unlock()
			return
		}
		t.revokeMu.Unlock()
		failed := t.revokeBound(gone)
		if len(failed) == 0 {
			wait = t.RevokeRetry
			continue
		}
		t.revokeMu.Lock()
		if t.revokeAfter == nil {
			t.revokeAfter = map[string]int64{}
		}
		for name, rev := range failed {
			t.revokeAfter[name] = max(t.revokeAfter[name], rev)
		}
		t.revokeMu.Unlock()
		t.log.Warn().Int("nodes", len(failed)).Dur("retry_in", wait).Msg("join tokens of deleted nodes not revoked yet; retrying")
		select {
		case <-t.revokeCtx.Done():
			t.revokeMu.Lock()
			t.revoking = false
			t.revokeMu.Unlock()
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, t.RevokeRetryMax)
	}
}

// revokeBound deletes the tokens bound to a name in gone that were created before the revision
// of that name's deletion. It returns the part of gone it could not finish: all of it when the
// tokens could not be listed, and the names of the tokens that could not be deleted (a token
// that changed meanwhile is looked at again).
func (t *Tokens) revokeBound(gone map[string]int64) (failed map[string]int64) {
	ctx, cancel := context.WithTimeout(t.revokeCtx, 30*time.Second)
	defer cancel()
	kvs, _, err := t.backend.List(ctx, tokenPrefix, "", 0)
	if err != nil {
		t.log.Warn().Err(err).Int("nodes", len(gone)).Msg("could not list the join tokens to revoke those of deleted nodes")
		return gone
	}
	for _, kv := range kvs {
		var st storedToken
		if json.Unmarshal(kv.Value, &st) != nil || st.Node == "" {
			continue
		}
		if deleted, ok := gone[st.Node]; !ok || kv.CreateRev >= deleted {
			continue
		}
		_, _, err := t.backend.Delete(ctx, kv.Key, kv.ModRev)
		switch {
		case err == nil:
			t.log.Info().Str("token_id", st.ID).Str("node", st.Node).Msg("join token revoked with its node")
		case errors.Is(err, store.ErrNotFound):
		default:
			if !errors.Is(err, store.ErrConflict) {
				t.log.Warn().Err(err).Str("token_id", st.ID).Str("node", st.Node).Msg("could not revoke the join token of a deleted node")
			}
			if failed == nil {
				failed = map[string]int64{}
			}
			failed[st.Node] = gone[st.Node]
		}
	}
	return failed
}

// tokenRequest is the body of POST /tether/v1/tokens.
type tokenRequest struct {
	Node    string `json:"node"`
	AnyNode bool   `json:"anyNode"`
	TTL     string `json:"ttl"`
}

// TokenResponse is the answer of POST /tether/v1/tokens.
type TokenResponse struct {
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Node    string    `json:"node,omitempty"`
	Expires time.Time `json:"expires"`
}

// TokensPath is where the API serves token creation.
const TokensPath = "/tether/v1/tokens"

// ServeHTTP serves POST /tether/v1/tokens.
func (t *Tokens) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		httpError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	var req tokenRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "the body must be {\"node\": NAME} or {\"anyNode\": true}, with an optional \"ttl\": "+err.Error())
		return
	}
	if (req.Node == "") == !req.AnyNode {
		httpError(w, http.StatusBadRequest, "give exactly one of node or anyNode")
		return
	}
	ttl := 24 * time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			httpError(w, http.StatusBadRequest, "ttl: "+err.Error())
			return
		}
		ttl = d
	}
	tok, exp, err := t.Create(r.Context(), req.Node, ttl)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(TokenResponse{Token: tok.String(), ID: tok.ID, Node: req.Node, Expires: exp})
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
