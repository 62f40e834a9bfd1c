package edgehub

import (
	"fmt"
	"sync"

	"github.com/tetherhub/tether/pki"
)

// FileIdentity is the node identity kept in the data dir; it implements Identity.
type FileIdentity struct {
	dir string
	mu  sync.Mutex // guards cur
	cur *pki.NodeIdentity
}

// LoadIdentity reads the identity in dir (pki.ErrNoIdentity if the node has not joined).
func LoadIdentity(dir string) (*FileIdentity, error) {
	id, err := pki.LoadNodeIdentity(dir)
	if err != nil {
		return nil, err
	}
	return &FileIdentity{dir: dir, cur: id}, nil
}

// Current implements Identity.
func (f *FileIdentity) Current() *pki.NodeIdentity {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur
}

// Renewed implements Identity: the certificate must be for the current key and name, and is
// saved before it is used. One that is not is refused before anything is written: saved, it
// would be the node's identity at the next start.
func (f *FileIdentity) Renewed(certPEM []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, err := pki.NewNodeIdentity(certPEM, f.cur.CAPEM, f.cur.Key)
	if err != nil {
		return err
	}
	if id.Name != f.cur.Name {
		return fmt.Errorf("edgehub: renewed certificate is for %q, not %q", id.Name, f.cur.Name)
	}
	if err := pki.SaveNodeIdentity(f.dir, certPEM, f.cur.CAPEM, f.cur.Key); err != nil {
		return err
	}
	if id, err = pki.LoadNodeIdentity(f.dir); err != nil {
		return err
	}
	f.cur = id
	return nil
}
