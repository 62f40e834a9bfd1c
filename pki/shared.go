package pki

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"
)

// CAShare is where the replicas of one cloud keep the CA they all sign with (the etcd store,
// for one): the first replica to store a CA there wins.
type CAShare interface {
	// ClaimCA stores pair unless a CA is stored already, and returns the stored one: pair, or
	// the one another replica stored first. pair is opaque to the share.
	ClaimCA(ctx context.Context, pair []byte) ([]byte, error)
}

// caPair is how a CA travels through a CAShare: the PEM of its certificate and of its key.
type caPair struct {
	Cert []byte `json:"cert"`
	Key  []byte `json:"key"`
}

// LoadSharedCA returns the CA that the cloud's replicas share through share, and keeps the same
// CA in dir/ca.crt and dir/ca.key:
//
//   - while share holds none, it stores the CA of dir (created there first if dir has none), so
//     a replica that ran alone brings its CA, and the nodes it signed, to the others;
//   - once share holds one, a dir without CA files gets that one written into it; a dir whose CA
//     is another is an error wrapping ErrBadCA, because the nodes it signed would be refused by
//     every other replica (move its two files aside to take the shared one).
//
// The CA's private key is stored in share as it is in dir: protect both alike.
func LoadSharedCA(ctx context.Context, dir string, now time.Time, share CAShare) (*CA, error) {
	local, keyPEM, created, err := loadOrCreateCA(dir, now)
	if err != nil {
		return nil, err
	}
	mine, err := json.Marshal(caPair{Cert: local.CertPEM(), Key: keyPEM})
	if err != nil {
		return nil, err
	}
	stored, err := share.ClaimCA(ctx, mine)
	if err != nil {
		return nil, fmt.Errorf("pki: the replicas' shared CA: %w", err)
	}
	if bytes.Equal(stored, mine) {
		return local, nil
	}
	var p caPair
	if err := json.Unmarshal(stored, &p); err != nil {
		return nil, fmt.Errorf("%w: the CA the replicas share cannot be read: %v", ErrBadCA, err)
	}
	shared, err := newCA(p.Cert, p.Key, now)
	if err != nil {
		return nil, fmt.Errorf("%w: the CA the replicas share: %v", ErrBadCA, err)
	}
	switch {
	case shared.hash == local.hash:
		return shared, nil // the same key, written out differently
	case !created:
		return nil, fmt.Errorf("%w: %s holds a CA (%s) other than the one the cloud's replicas share (%s); "+
			"the nodes it signed would be refused by the other replicas. Move %s and %s aside to take the shared one",
			ErrBadCA, dir, local.hash, shared.hash, CACertFile, CAKeyFile)
	}
	// dir's CA was made a moment ago and lost to another replica's: keep the shared one instead.
	// Key first, as createCA does.
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), p.Key, 0o600); err != nil {
		return nil, fmt.Errorf("pki: save CA key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CACertFile), p.Cert, 0o644); err != nil {
		return nil, fmt.Errorf("pki: save CA certificate: %w", err)
	}
	return shared, nil
}
