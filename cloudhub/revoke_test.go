package cloudhub

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/pki"
	"github.com/tetherhub/tether/protocol"
)

// TestRevokedBetweenCheckAndAttach drives the handshake's two steps (the Node check, then
// attach) with the Node's deletion processed between them, as the index goroutine may do at any
// time. attach must look at the Node again. Before, the deletion found no session to end, attach
// registered one, and the revoked node was sent its Pods and the Secrets they reference.
func TestRevokedBetweenCheckAndAttach(t *testing.T) {
	r := newRig(t, rigOpts{})
	h := r.hub
	r.put(nodeKey("n1"), nodeJSON("n1", ""))
	r.put(secretKey("default", "s1"), `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s1","namespace":"default"},"data":{"k":"c2VjcmV0"}}`)
	r.put(podKey("default", "p1"), `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p1","namespace":"default"},"spec":{"nodeName":"n1","volumes":[{"name":"s","secret":{"secretName":"s1"}}]}}`)

	ws, rev, _ := betweenCheckAndAttach(t, r, func() int64 { return r.del(nodeKey("n1")) })

	e := newEdge(t, "n1")
	e.ws = ws
	e.syncTo(rev, 2*time.Second) // whatever the hub sends within 2 s; a fixed hub sends an Error
	time.Sleep(h.cfg.WriteTimeout / 10)
	if _, ok := e.objs[secretKey("default", "s1")]; ok || h.Connected("n1") {
		t.Fatalf("a deleted (revoked) node got a session (connected=%v) and its Secret; messages: %v", h.Connected("n1"), e.log)
	}
}

// TestOnlyTheJoinedNodeObjectsCertificatesGetIn: the hub accepts a certificate only for the
// Node object its join recorded, and only if issued at or after that join: not for a Node
// deleted and created again (by hand, or from a saved manifest that carries the annotations),
// nor a certificate that a later join of the name retired.
func TestOnlyTheJoinedNodeObjectsCertificatesGetIn(t *testing.T) {
	r := newRig(t, rigOpts{})
	s := &session{hub: r.hub, node: "n1"}
	joined := time.Date(2026, 11, 27, 10, 0, 0, 500_000_000, time.UTC)
	node := func(uid, annotations string) {
		r.put(nodeKey("n1"), `{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","uid":"`+uid+`","annotations":{`+annotations+`}}}`)
	}
	recorded := func(uid string) string {
		return `"` + AnnotationJoinedUID + `":"` + uid + `","` + AnnotationCertificatesSince + `":"` + joined.Format(time.RFC3339Nano) + `"`
	}
	check := func(what string, cert time.Time, wantOK bool) {
		t.Helper()
		s.certIssued = cert.UnixNano()
		err := s.checkRegistered()
		if (err == nil) != wantOK {
			t.Errorf("%s: checkRegistered = %v, want ok=%v", what, err, wantOK)
		}
	}
	node("u1", recorded("u1"))
	check("the joined certificate", joined, true)
	check("a renewed certificate", joined.Add(time.Hour), true)
	check("a certificate from before the latest join", joined.Add(-time.Second), false)
	check("a certificate from earlier in the same second", joined.Add(-time.Millisecond), false)
	node("u2", "")
	check("a Node created again by hand", joined, false)
	node("u3", recorded("u1"))
	check("a Node created again from a saved manifest", joined, false)
	r.del(nodeKey("n1"))
	check("a deleted Node", joined, false)
}

// TestRejoinEndsTheRetiredSession: a later join of the name ends the session of a certificate it
// retired at once. Before, that session (a stolen key's, say) lived on, and could renew its
// certificate past the join and keep coming back.
func TestRejoinEndsTheRetiredSession(t *testing.T) {
	r := newRig(t, rigOpts{})
	e := syncedEdge(t, r, "n1")                                            // its certificate was issued now
	r.put(nodeKey("n1"), nodeJSONSince("n1", time.Now().Add(time.Minute))) // a later join
	if m := e.awaitError(5*time.Second, "the retired certificate's session was not ended with an Error"); m.Code != protocol.CodeRevoked || !strings.Contains(m.Message, "retired") {
		t.Fatalf("error %s %q, want revoked: retired", m.Code, m.Message)
	}
}

// refusingSigner fails the test if it is asked to sign.
type refusingSigner struct{ t *testing.T }

func (s refusingSigner) SignCSRIssued([]byte, string, time.Duration, time.Time, time.Time) ([]byte, error) {
	s.t.Error("a renewal was signed")
	return nil, nil
}

// TestRenewalChecksTheSessionsCertificate: a session renews only what the cloud would still let
// connect: not a certificate a later join retired, nor one that has expired.
func TestRenewalChecksTheSessionsCertificate(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.hub.signer = refusingSigner{t}
	r.put(nodeKey("n1"), nodeJSON("n1", "")) // certificates since 2026-01-01
	renewed := func(issued, expires time.Time) string {
		t.Helper()
		s := &session{hub: r.hub, node: "n1", done: make(chan struct{}), certIssued: issued.UnixNano(), certExpires: expires.UnixNano()}
		s.renewing = true
		s.writing = true // no connection: what it would send stays in control
		s.renew(&protocol.Renew{CSR: []byte("csr")})
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, m := range s.control {
			if m, ok := m.(*protocol.Renewed); ok {
				return m.Message
			}
		}
		return ""
	}
	if msg := renewed(time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC), time.Now().Add(time.Hour)); !strings.Contains(msg, "retired") {
		t.Errorf("renewal of a retired certificate: %q, want it refused as retired", msg)
	}
	if msg := renewed(time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)); !strings.Contains(msg, "expired") {
		t.Errorf("renewal of an expired certificate: %q, want it refused as expired", msg)
	}
}

// TestRenewalAgainOnTheSameSession: a session that renewed its certificate is judged by the new
// one at its next renewal. Before, the second renewal on a long session was refused once the
// certificate it had connected with expired, and the node had to join again.
func TestRenewalAgainOnTheSameSession(t *testing.T) {
	r := newRig(t, rigOpts{})
	now := time.Now()
	ca, err := pki.LoadOrCreateCA(t.TempDir(), now)
	if err != nil {
		t.Fatal(err)
	}
	r.hub.signer, r.hub.certValidity = ca, 3*time.Hour
	clock := now
	r.hub.now = func() time.Time { return clock }
	r.put(nodeKey("n1"), nodeJSON("n1", "")) // certificates since 2026-01-01
	renew := renewer(t, r, now)
	if m := renew(); m == nil || len(m.Certificate) == 0 {
		t.Fatalf("first renewal: %+v", m)
	}
	clock = now.Add(2 * time.Hour) // past the first certificate's expiry, within the renewed one's
	if m := renew(); m == nil || len(m.Certificate) == 0 {
		t.Fatalf("second renewal on the same session: %+v", m)
	}
}

// renewer makes a session of n1 on r's hub, without a connection (what it would send stays in
// its control queue), connected with a certificate issued at issued and valid for an hour,
// and returns a function that has it renew and returns the answer.
func renewer(t *testing.T, r *rig, issued time.Time) func() *protocol.Renewed {
	t.Helper()
	key, _ := pki.NewKey()
	csr, err := pki.CreateCSR(key, "n1")
	if err != nil {
		t.Fatal(err)
	}
	s := &session{hub: r.hub, node: "n1", done: make(chan struct{}), certIssued: issued.UnixNano(), certExpires: issued.Add(time.Hour).UnixNano()}
	s.writing = true
	return func() *protocol.Renewed {
		t.Helper()
		s.renewing = true
		s.renew(&protocol.Renew{CSR: csr})
		s.mu.Lock()
		defer s.mu.Unlock()
		m, _ := s.control[len(s.control)-1].(*protocol.Renewed)
		return m
	}
}

// TestRetiredBetweenCheckAndAttach: a join that retires the session's certificate, processed
// between the handshake's Node check and attach (the session's epoch write can take seconds), is
// seen by attach. Before, no session existed yet for onUpdate to end, and the retired certificate
// attached and stayed connected.
func TestRetiredBetweenCheckAndAttach(t *testing.T) {
	r := newRig(t, rigOpts{})
	h := r.hub
	r.put(nodeKey("n1"), nodeJSON("n1", ""))
	_, _, err := betweenCheckAndAttach(t, r, func() int64 {
		return r.put(nodeKey("n1"), nodeJSONSince("n1", time.Now().Add(time.Minute))) // a later join
	})
	if err == nil || !strings.Contains(err.Error(), "retired") {
		t.Fatalf("attach of a certificate retired meanwhile: %v; want it refused", err)
	}
	if h.Connected("n1") {
		t.Fatal("the retired certificate's session is connected")
	}
}

// nodeJSONSince is a joined Node whose certificates are accepted from since on.
func nodeJSONSince(name string, since time.Time) string {
	return `{"apiVersion":"v1","kind":"Node","metadata":{"name":"` + name + `","uid":"uid-` + name + `","annotations":{"` +
		AnnotationJoinedUID + `":"uid-` + name + `","` + AnnotationCertificatesSince + `":"` + since.UTC().Format(time.RFC3339Nano) + `"}}}`
}

// betweenCheckAndAttach drives a handshake of n1 (its certificate issued now) in its two steps,
// the Node check and then attach, with change (a store write, returning its revision) processed
// by the hub between them, as the index goroutine may do at any time. It returns the edge's
// connection, change's revision and attach's error (sent to the edge as an Error; without one,
// the session runs).
func betweenCheckAndAttach(t *testing.T, r *rig, change func() int64) (ws *websocket.Conn, rev int64, attachErr error) {
	t.Helper()
	h := r.hub
	checked, changed := make(chan struct{}), make(chan struct{})
	attached := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		conn, err := h.upgrader.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		s := &session{hub: h, conn: conn, node: "n1", done: make(chan struct{}), remote: req.RemoteAddr, certIssued: time.Now().UnixNano()}
		_, frame, _ := conn.ReadMessage()
		msgs, _ := protocol.Decode(frame)
		hello := msgs[0].(*protocol.Hello)
		if err := s.checkRegistered(); err != nil { // the handshake's first step
			t.Errorf("refused before the change: %v", err)
			close(checked)
			attached <- err
			return
		}
		close(checked)
		<-changed
		_, err = h.attach(s, hello) // and its second
		attached <- err
		if err != nil {
			s.writeError(err.(*protocol.Error))
			conn.Close()
			return
		}
		go s.run()
	}))
	t.Cleanup(srv.Close)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Hello{Version: protocol.Version, Node: "n1"}))
	<-checked
	rev = change()
	for h.processed.Load() < rev { // onUpdate of the change has run
		time.Sleep(time.Millisecond)
	}
	close(changed)
	return ws, rev, <-attached
}

// TestRenewalKeepsTheJoinsIssueTime: a renewed certificate records the issue time of the one it
// replaces. So a renewal on a replica whose clock is behind the join's is not retired by that
// join's own cutoff, and a renewal signed before the hub saw a later join (the join's cutoff
// taken, its write not yet in the index) is retired by it with the rest of the chain. Before,
// the renewal took the hub's clock: retired at once in the first case, kept in the second.
func TestRenewalKeepsTheJoinsIssueTime(t *testing.T) {
	r := newRig(t, rigOpts{})
	joined := time.Now().Truncate(time.Microsecond)
	ca, err := pki.LoadOrCreateCA(t.TempDir(), joined.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	r.hub.signer, r.hub.certValidity = ca, 3*time.Hour
	clock := joined.Add(-5 * time.Minute) // this replica's clock, behind the one that signed the join
	r.hub.now = func() time.Time { return clock }
	r.put(nodeKey("n1"), nodeJSONSince("n1", joined))
	renew := renewer(t, r, joined)
	renewed := func() time.Time {
		t.Helper()
		m := renew()
		if m == nil || len(m.Certificate) == 0 {
			t.Fatalf("renewal refused: %+v", m)
		}
		cert, err := pki.ParseCertPEM(m.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		return pki.IssuedAt(cert)
	}
	node := func() *index.Object { return r.hub.ix.Snapshot().Get(nodeKey("n1")) }
	if issued := renewed(); retired(node(), issued) != nil {
		t.Fatalf("renewed on a replica behind the join's clock: issued %s, retired by the join itself (since %s)", issued, joined)
	}
	// A later join took its cutoff; the renewal is signed before the hub sees it.
	clock = joined.Add(2 * time.Second)
	issued := renewed()
	r.put(nodeKey("n1"), nodeJSONSince("n1", joined.Add(time.Second)))
	if retired(node(), issued) == nil {
		t.Fatalf("a renewal signed before the hub saw a later join (issued %s) is not retired by it", issued)
	}
}
