package edgehub

import (
	"testing"
	"time"

	"github.com/tetherhub/tether/pki"
)

// TestRenewedForAnotherNameNotSaved: a renewed certificate for the node's key and CA but
// another node's name is refused, and the identity on disk stays the node's own; before, it
// was saved first, and the agent came back as the other node at its next start.
func TestRenewedForAnotherNameNotSaved(t *testing.T) {
	now := time.Now()
	ca, err := pki.LoadOrCreateCA(t.TempDir(), now)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string) []byte {
		csr, err := pki.CreateCSR(key, name)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.SignCSR(csr, name, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	dir := t.TempDir()
	if err := pki.SaveNodeIdentity(dir, issue("edge-1"), ca.CertPEM(), key); err != nil {
		t.Fatal(err)
	}
	id, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := id.Renewed(issue("other")); err == nil {
		t.Fatal("a renewed certificate for another node was taken")
	}
	if got := id.Current().Name; got != "edge-1" {
		t.Fatalf("current identity %q after the refusal", got)
	}
	again, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := again.Current().Name; got != "edge-1" {
		t.Fatalf("the identity on disk is %q after the refusal, want edge-1", got)
	}
	if err := id.Renewed(issue("edge-1")); err != nil {
		t.Fatalf("a renewed certificate for the node itself: %v", err)
	}
}
