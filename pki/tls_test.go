package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherhub/tether/pki"
)

// handshake runs one TLS handshake between a real listener on 127.0.0.1:0 using serverCfg and a
// client using clientCfg, and returns the server's view: the node name it would admit, or the
// error that made it refuse.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (string, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		name string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		// What the hub does: the verified leaf's subject is the node's identity.
		name, err := pki.NodeNameFromCert(tc.ConnectionState().PeerCertificates[0])
		if err == nil {
			_, err = tc.Write([]byte{1})
		}
		done <- result{name, err}
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), clientCfg)
	if err == nil {
		// In TLS 1.3 the client finishes before the server has checked its certificate; reading
		// surfaces the server's verdict on the client side too.
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	r := <-done
	if (r.err == nil) != (err == nil) {
		t.Errorf("server and client disagree: server %v, client %v", r.err, err)
	}
	return r.name, r.err
}

// joined returns a node identity issued by ca, saved and loaded back through the files.
func joined(t *testing.T, ca *pki.CA, name string) *pki.NodeIdentity {
	t.Helper()
	key, certPEM, caPEM := issue(t, ca, name, time.Now())
	dir := filepath.Join(t.TempDir(), name)
	if err := pki.SaveNodeIdentity(dir, certPEM, caPEM, key); err != nil {
		t.Fatal(err)
	}
	id, err := pki.LoadNodeIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestMutualTLS(t *testing.T) {
	now := time.Now()
	ca, _ := newCA(t, now)
	serverCert, err := ca.IssueServer([]string{"hub.example.com"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := ca.ServerTLSConfig(serverCert)
	if serverCfg.MinVersion != tls.VersionTLS13 || serverCfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("ServerTLSConfig = %+v", serverCfg)
	}
	node := joined(t, ca, "edge-1")

	t.Run("node of this CA is admitted", func(t *testing.T) {
		for _, serverName := range []string{"127.0.0.1", "localhost", "hub.example.com"} {
			name, err := handshake(t, serverCfg, node.ClientTLSConfig(serverName))
			if err != nil || name != "edge-1" {
				t.Errorf("ServerName %s: admitted %q, err %v; want edge-1", serverName, name, err)
			}
		}
	})

	t.Run("node of another CA is refused", func(t *testing.T) {
		otherCA, _ := newCA(t, now)
		intruder := joined(t, otherCA, "edge-1")
		cfg := intruder.ClientTLSConfig("127.0.0.1")
		cfg.RootCAs = ca.Pool() // it trusts our hub; the hub must still not trust it
		_, err := handshake(t, serverCfg, cfg)
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Errorf("server err = %v, want x509.UnknownAuthorityError", err)
		}
	})

	t.Run("no client certificate is refused", func(t *testing.T) {
		cfg := node.ClientTLSConfig("127.0.0.1")
		cfg.Certificates = nil
		if _, err := handshake(t, serverCfg, cfg); err == nil {
			t.Error("a client without a certificate was admitted")
		}
	})

	t.Run("hub certificate is not a client certificate", func(t *testing.T) {
		cfg := node.ClientTLSConfig("127.0.0.1")
		cfg.Certificates = []tls.Certificate{serverCert}
		if _, err := handshake(t, serverCfg, cfg); err == nil {
			t.Error("the hub's server certificate was admitted as a client")
		}
	})

	t.Run("node does not trust a hub of another CA", func(t *testing.T) {
		otherCA, _ := newCA(t, now)
		fakeHub, err := otherCA.IssueServer(nil, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		fakeCfg := otherCA.ServerTLSConfig(fakeHub)
		fakeCfg.ClientAuth = tls.RequestClientCert
		if _, err := handshake(t, fakeCfg, node.ClientTLSConfig("127.0.0.1")); err == nil {
			t.Error("the node completed a handshake with a hub of another CA")
		}
	})
}
