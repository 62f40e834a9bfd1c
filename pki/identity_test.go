package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/pki"
)

// issue returns a node key, its certificate PEM from ca, and ca's PEM.
func issue(t testing.TB, ca *pki.CA, name string, now time.Time) (key *ecdsa.PrivateKey, certPEM, caPEM []byte) {
	t.Helper()
	key = mustKey(t)
	certPEM, err := ca.SignCSR(mustCSR(t, key, name), name, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	return key, certPEM, ca.CertPEM()
}

func TestNodeIdentityRoundTrip(t *testing.T) {
	ca, _ := newCA(t, t0)
	key, certPEM, caPEM := issue(t, ca, "edge-1", t0)
	dir := filepath.Join(t.TempDir(), "edge")

	if err := pki.SaveNodeIdentity(dir, certPEM, caPEM, key); err != nil {
		t.Fatalf("SaveNodeIdentity: %v", err)
	}
	for name, want := range map[string]os.FileMode{"node.key": 0o600, "node.crt": 0o644, "ca.crt": 0o644} {
		if m := fileMode(t, filepath.Join(dir, name)); m != want {
			t.Errorf("%s mode %v, want %v", name, m, want)
		}
	}
	if m := fileMode(t, dir); m != 0o700 {
		t.Errorf("dir mode %v, want 0700", m)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("dir has %d entries (temp files left behind?), want 3", len(entries))
	}

	id, err := pki.LoadNodeIdentity(dir)
	if err != nil {
		t.Fatalf("LoadNodeIdentity: %v", err)
	}
	if id.Name != "edge-1" {
		t.Errorf("Name = %q", id.Name)
	}
	if !bytes.Equal(id.CertPEM, certPEM) || !bytes.Equal(id.CAPEM, caPEM) {
		t.Error("loaded PEM differs from what was saved")
	}
	if !samePub(id.Key.Public(), key.Public()) || !samePub(id.Leaf.PublicKey, key.Public()) {
		t.Error("loaded key differs from the saved one")
	}
	if pki.CertHash(id.CA) != ca.Hash() {
		t.Error("loaded CA differs from the saved one")
	}
	if id.TLSCert.Leaf != id.Leaf || len(id.TLSCert.Certificate) != 1 || id.TLSCert.PrivateKey == nil {
		t.Errorf("TLSCert incomplete: %+v", id.TLSCert)
	}
	if _, err := id.Leaf.Verify(verifyClient(id.CAPool, t0)); err != nil {
		t.Errorf("leaf does not verify against CAPool: %v", err)
	}
	cfg := id.ClientTLSConfig("hub.example.com")
	if cfg.ServerName != "hub.example.com" || cfg.RootCAs != id.CAPool || cfg.MinVersion != 0x0304 || len(cfg.Certificates) != 1 {
		t.Errorf("ClientTLSConfig = %+v", cfg)
	}
}

func TestSaveNodeIdentityKeepsUnchangedFiles(t *testing.T) {
	ca, _ := newCA(t, t0)
	key, certPEM, caPEM := issue(t, ca, "edge-1", t0)
	dir := t.TempDir()
	if err := pki.SaveNodeIdentity(dir, certPEM, caPEM, key); err != nil {
		t.Fatal(err)
	}
	keyBefore, _ := os.Stat(filepath.Join(dir, "node.key"))
	certBefore, _ := os.Stat(filepath.Join(dir, "node.crt"))

	// Rotation by re-signing the same key: only node.crt may change, in one rename.
	renewed, err := ca.SignCSR(mustCSR(t, key, "edge-1"), "edge-1", 48*time.Hour, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.SaveNodeIdentity(dir, renewed, caPEM, key); err != nil {
		t.Fatal(err)
	}
	keyAfter, _ := os.Stat(filepath.Join(dir, "node.key"))
	certAfter, _ := os.Stat(filepath.Join(dir, "node.crt"))
	if !os.SameFile(keyBefore, keyAfter) {
		t.Error("node.key was rewritten although the key did not change")
	}
	if os.SameFile(certBefore, certAfter) {
		t.Error("node.crt was not replaced")
	}
	id, err := pki.LoadNodeIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(id.CertPEM, renewed) {
		t.Error("loaded the old certificate after rotation")
	}
}

func TestLoadNodeIdentityAbsent(t *testing.T) {
	for _, dir := range []string{t.TempDir(), filepath.Join(t.TempDir(), "does-not-exist")} {
		_, err := pki.LoadNodeIdentity(dir)
		if !errors.Is(err, pki.ErrNoIdentity) {
			t.Errorf("LoadNodeIdentity(%s) = %v, want ErrNoIdentity", dir, err)
		}
	}
	// Interrupted first save: key and CA written, certificate not yet. The node must join.
	ca, _ := newCA(t, t0)
	key, certPEM, caPEM := issue(t, ca, "edge-1", t0)
	dir := t.TempDir()
	if err := pki.SaveNodeIdentity(dir, certPEM, caPEM, key); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "node.crt")); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadNodeIdentity(dir); !errors.Is(err, pki.ErrNoIdentity) {
		t.Errorf("without node.crt: err = %v, want ErrNoIdentity", err)
	}
}

func TestLoadNodeIdentityBad(t *testing.T) {
	ca, _ := newCA(t, t0)
	otherCA, _ := newCA(t, t0)
	key, certPEM, caPEM := issue(t, ca, "edge-1", t0)
	otherKey := mustKey(t)
	otherKeyPEM := keyPEM(t, otherKey)

	tests := []struct {
		name   string
		mutate func(dir string)
		want   string
	}{
		{"no key", func(dir string) { os.Remove(filepath.Join(dir, "node.key")) }, "node.key"},
		{"no CA", func(dir string) { os.Remove(filepath.Join(dir, "ca.crt")) }, "ca.crt"},
		{"wrong key", func(dir string) { os.WriteFile(filepath.Join(dir, "node.key"), otherKeyPEM, 0o600) }, "does not belong"},
		{"wrong CA", func(dir string) { os.WriteFile(filepath.Join(dir, "ca.crt"), otherCA.CertPEM(), 0o644) }, "not issued by the CA"},
		{"garbage cert", func(dir string) { os.WriteFile(filepath.Join(dir, "node.crt"), []byte("garbage"), 0o644) }, "node certificate"},
		{"garbage key", func(dir string) { os.WriteFile(filepath.Join(dir, "node.key"), []byte("garbage"), 0o600) }, "node key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := pki.SaveNodeIdentity(dir, certPEM, caPEM, key); err != nil {
				t.Fatal(err)
			}
			tt.mutate(dir)
			_, err := pki.LoadNodeIdentity(dir)
			if !errors.Is(err, pki.ErrBadIdentity) {
				t.Fatalf("err = %v, want ErrBadIdentity", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestSaveNodeIdentityRefusesMismatch(t *testing.T) {
	ca, _ := newCA(t, t0)
	otherCA, _ := newCA(t, t0)
	key, certPEM, caPEM := issue(t, ca, "edge-1", t0)
	for name, save := range map[string]func(dir string) error{
		"wrong key": func(dir string) error { return pki.SaveNodeIdentity(dir, certPEM, caPEM, mustKey(t)) },
		"wrong CA":  func(dir string) error { return pki.SaveNodeIdentity(dir, certPEM, otherCA.CertPEM(), key) },
		"no key":    func(dir string) error { return pki.SaveNodeIdentity(dir, certPEM, caPEM, nil) },
		"not PEM":   func(dir string) error { return pki.SaveNodeIdentity(dir, []byte("x"), caPEM, key) },
		"server certificate": func(dir string) error {
			srv, err := ca.IssueServer(nil, time.Hour, t0)
			if err != nil {
				t.Fatal(err)
			}
			return pki.SaveNodeIdentity(dir, encodeCertPEM(srv.Leaf.Raw), caPEM, srv.PrivateKey.(*ecdsa.PrivateKey))
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "edge")
			err := save(dir)
			if !errors.Is(err, pki.ErrBadIdentity) {
				t.Fatalf("err = %v, want ErrBadIdentity", err)
			}
			if _, statErr := os.Stat(dir); !errors.Is(statErr, os.ErrNotExist) {
				t.Error("something was written for a refused identity")
			}
		})
	}
}
