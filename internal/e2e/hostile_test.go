package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tetherhub/tether/join"
	"github.com/tetherhub/tether/pki"
	"github.com/tetherhub/tether/protocol"
)

// TestUpToDateReconnect: an edge that is up to date and reconnects (after its own restart, and
// after the cloud's) receives no objects; the hub's catch-up counters say so.
func TestUpToDateReconnect(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-1")
	mustDo(t, http.MethodPost, c.url(paths["configmaps"]), configMapObj("cfg", nil))
	mustDo(t, http.MethodPost, c.url(paths["pods"]), podObj("app", "edge-1", []string{"cfg"}, nil))
	mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj("web"))
	waitNames(t, e.url(paths["services"]), q("web")...)
	time.Sleep(600 * time.Millisecond) // a few progress marks: the cursor reaches the head

	before := metric(t, c.url("/metrics"), "tether_cloud_hub_catchup_messages_total")
	e.stop()
	e.restart(t)
	e.waitSynced(t)
	waitFor(t, 10*time.Second, "edge reconnected", func() bool {
		return metric(t, c.url("/metrics"), "tether_cloud_hub_connected_nodes") == 1
	})
	time.Sleep(300 * time.Millisecond)
	if after := metric(t, c.url("/metrics"), "tether_cloud_hub_catchup_messages_total"); after != before {
		t.Fatalf("an up-to-date edge got %v catch-up messages on reconnect", after-before)
	}

	c.stop()
	c.start(t)
	waitFor(t, 15*time.Second, "edge reconnected to the restarted cloud", func() bool {
		return metric(t, c.url("/metrics"), "tether_cloud_hub_connected_nodes") == 1
	})
	time.Sleep(300 * time.Millisecond)
	if got := metric(t, c.url("/metrics"), "tether_cloud_hub_catchup_messages_total"); got != 0 {
		t.Fatalf("after a cloud restart an up-to-date edge got %v catch-up messages", got)
	}
	if got := metric(t, c.url("/metrics"), "tether_cloud_hub_catchup_bytes_total"); got != 0 {
		t.Fatalf("catch-up bytes = %v", got)
	}
	// The cloud kept the node Ready across its own restart (grace period).
	_, body := do(t, http.MethodGet, c.url("/api/v1/nodes/edge-1"), "", nil)
	if !strings.Contains(string(body), `"status":"True","type":"Ready"`) {
		t.Fatalf("node after cloud restart: %s", body)
	}
}

// identityFor joins a node in-process and returns its TLS client config for the hub.
func identityFor(t *testing.T, c *cloud, name string) *tls.Config {
	t.Helper()
	tok, err := pki.ParseToken(c.token(t, "--node", name))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, caPEM, err := join.Join(ctxT(t, 10*time.Second), "https://"+c.join, tok, name, nil, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pki.SaveNodeIdentity(dir, certPEM, caPEM, key); err != nil {
		t.Fatal(err)
	}
	id, err := pki.LoadNodeIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	return id.ClientTLSConfig("127.0.0.1")
}

func dialHub(t *testing.T, c *cloud, cfg *tls.Config) (*websocket.Conn, error) {
	d := websocket.Dialer{TLSClientConfig: cfg, HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial("wss://"+c.hub+"/v1/connect", nil)
	return ws, err
}

// expectError reads until the hub sends an Error (returned) or closes.
func expectError(t *testing.T, ws *websocket.Conn) *protocol.Error {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, frame, err := ws.ReadMessage()
		if err != nil {
			return nil
		}
		msgs, err := protocol.Decode(frame)
		if err != nil {
			t.Fatalf("the hub sent an undecodable frame: %v", err)
		}
		for _, m := range msgs {
			if e, ok := m.(*protocol.Error); ok {
				return e
			}
		}
	}
}

// TestHostileInput: bad frames, lies about identity, foreign certificates, bad tokens and a
// second process on a data dir each get a clear refusal, touch no stored state and crash nothing.
func TestHostileInput(t *testing.T) {
	c := newCloud(t)
	good := newEdge(t, c, "edge-good")
	mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj("web"))
	waitNames(t, good.url(paths["services"]), q("web")...)
	mallory := identityFor(t, c, "mallory")
	// Mallory is a real node: its valid sessions write its own Node's status. Everything else
	// must stay as it is.
	before := fingerprint(t, c, "mallory")

	t.Run("oversize frame", func(t *testing.T) {
		ws, err := dialHub(t, c, mallory)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		big := append(protocol.Encode(&protocol.Hello{Version: 1, Node: "mallory"}), bytes.Repeat([]byte{0}, 5<<20)...)
		ws.WriteMessage(websocket.BinaryMessage, big)
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := ws.ReadMessage(); err == nil {
			t.Fatal("the hub kept a connection that sent 5 MiB")
		}
	})
	t.Run("garbage bytes", func(t *testing.T) {
		ws, err := dialHub(t, c, mallory)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.WriteMessage(websocket.BinaryMessage, []byte("\xff\xfe\x00garbage\x01\x02"))
		if e := expectError(t, ws); e == nil || e.Code != protocol.CodeBadFrame {
			t.Fatalf("error = %v, want bad-frame", e)
		}
	})
	t.Run("text frame", func(t *testing.T) {
		ws, err := dialHub(t, c, mallory)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.WriteMessage(websocket.TextMessage, []byte(`{"hello":"world"}`))
		if e := expectError(t, ws); e == nil || e.Code != protocol.CodeBadFrame {
			t.Fatalf("error = %v, want bad-frame", e)
		}
	})
	t.Run("claims another node", func(t *testing.T) {
		ws, err := dialHub(t, c, mallory)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Hello{Version: protocol.Version, Node: "edge-good"}))
		if e := expectError(t, ws); e == nil || e.Code != protocol.CodeIdentityMismatch {
			t.Fatalf("error = %v, want identity-mismatch", e)
		}
	})
	t.Run("edge sends cloud messages", func(t *testing.T) {
		ws, err := dialHub(t, c, mallory)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Hello{Version: protocol.Version, Node: "mallory"}))
		ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Upsert{Seq: 1, Rev: 1, Key: protocol.Key{Resource: "nodes", Name: "edge-good"}, Object: []byte(`{}`)}))
		if e := expectError(t, ws); e == nil || e.Code != protocol.CodeProtocol {
			t.Fatalf("error = %v, want protocol-violation", e)
		}
	})
	t.Run("ack of an unsent seq", func(t *testing.T) {
		ws, err := dialHub(t, c, mallory)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Hello{Version: protocol.Version, Node: "mallory"}))
		ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Ack{Seq: 1 << 40}))
		if e := expectError(t, ws); e == nil || e.Code != protocol.CodeProtocol {
			t.Fatalf("error = %v, want protocol-violation", e)
		}
	})
	t.Run("requests without reading the answers", func(t *testing.T) {
		// Each Request past the node's forwarding limit is answered 429. Before, those answers
		// queued without bound and went out as one websocket message of any size (19 MB seen,
		// beyond the 4 MiB an edge reads).
		ws, err := dialHub(t, c, mallory)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Hello{Version: protocol.Version, Node: "mallory"}))
		var frame []byte
		for i := 1; i <= 60000; i++ {
			frame = protocol.Append(frame, &protocol.Request{ID: uint64(i), Method: http.MethodGet, Path: "/x"})
		}
		for range 4 {
			ws.WriteMessage(websocket.BinaryMessage, frame)
		}
		time.Sleep(time.Second) // the answers pile up while the node does not read
		ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		answers, biggest := 0, 0
		var end *protocol.Error
		for end == nil {
			_, b, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("the session ended without an Error after %d answers: %v", answers, err)
			}
			biggest = max(biggest, len(b))
			msgs, err := protocol.Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				switch m := m.(type) {
				case *protocol.Response:
					answers++
				case *protocol.Error:
					end = m
				}
			}
		}
		if end.Code != protocol.CodeProtocol || biggest > 4<<20 {
			t.Fatalf("after %d answers: error %v, largest message %d bytes", answers, end, biggest)
		}
	})
	t.Run("unsupported version", func(t *testing.T) {
		ws, err := dialHub(t, c, mallory)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.WriteMessage(websocket.BinaryMessage, protocol.Encode(&protocol.Hello{Version: 99, Node: "mallory"}))
		if e := expectError(t, ws); e == nil || e.Code != protocol.CodeUnsupportedVersion {
			t.Fatalf("error = %v, want unsupported-version", e)
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		other, err := pki.LoadOrCreateCA(t.TempDir(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		key, _ := pki.NewKey()
		csr, _ := pki.CreateCSR(key, "edge-good")
		certPEM, err := other.SignCSR(csr, "edge-good", time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		pki.SaveNodeIdentity(dir, certPEM, other.CertPEM(), key)
		id, err := pki.LoadNodeIdentity(dir)
		if err != nil {
			t.Fatal(err)
		}
		cfg := id.ClientTLSConfig("127.0.0.1")
		cfg.InsecureSkipVerify = true // the attacker does not care who the hub is
		ws, err := dialHub(t, c, cfg)
		if err == nil {
			// TLS 1.3 reports the client-certificate refusal on the first read.
			ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err = ws.ReadMessage()
			ws.Close()
		}
		if err == nil {
			t.Fatal("a certificate from another CA was accepted")
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		_, err := dialHub(t, c, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			t.Fatal("a connection without a client certificate was accepted")
		}
	})
	t.Run("expired token", func(t *testing.T) {
		tok := c.token(t, "--node", "late", "--ttl", "1s")
		time.Sleep(1200 * time.Millisecond)
		out := runEdgeOnce(t, c, "late", tok)
		if !strings.Contains(out, "expired") {
			t.Fatalf("edge output: %s", out)
		}
	})
	t.Run("token bound to another node", func(t *testing.T) {
		tok := c.token(t, "--node", "someone-else")
		out := runEdgeOnce(t, c, "intruder", tok)
		if !strings.Contains(out, "bound to another node") {
			t.Fatalf("edge output: %s", out)
		}
	})
	t.Run("second edge on the same data dir", func(t *testing.T) {
		start := time.Now()
		cmd := exec.Command(filepath.Join(binDir, "tether-edge"), "--data-dir", good.dir, "--cloud", c.hub, "--metaserver-listen", freePort(t), "--mqtt-listen", freePort(t))
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(string(out), "in use by another process") {
			t.Fatalf("second edge: %v: %s", err, out)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("second edge took %s to give up", d)
		}
	})
	t.Run("second cloud on the same data dir", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(binDir, "tether-cloud"), "--data-dir", c.dir, "--hub-listen", freePort(t), "--join-listen", freePort(t), "--api-listen", freePort(t))
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(string(out), "in use by another process") {
			t.Fatalf("second cloud: %v: %s", err, out)
		}
	})

	// Nothing above changed a stored object, crashed the cloud or disturbed the good edge.
	if after := fingerprint(t, c, "mallory"); after != before {
		t.Errorf("stored objects changed:\nbefore %s\nafter  %s", before, after)
	}
	mustDo(t, http.MethodPost, c.url(paths["services"]), serviceObj("after"))
	waitNames(t, good.url(paths["services"]), q("after", "web")...)
	if c.exited() {
		t.Fatal("the cloud died")
	}
}

// fingerprint lists every stored object (but node skip) with its resourceVersion.
func fingerprint(t *testing.T, c *cloud, skip string) string {
	t.Helper()
	var out []string
	for _, p := range []string{"/api/v1/nodes", "/api/v1/pods", "/api/v1/configmaps", "/api/v1/secrets", "/api/v1/services",
		"/apis/discovery.k8s.io/v1/endpointslices", "/apis/devices.kubeedge.io/v1beta1/devices", "/apis/devices.kubeedge.io/v1beta1/devicemodels"} {
		_, body := do(t, http.MethodGet, c.url(p), "", nil)
		var list struct {
			Items []struct {
				Metadata struct{ Name, Namespace, ResourceVersion string }
			}
		}
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, i := range list.Items {
			if i.Metadata.Name != skip {
				out = append(out, p+"/"+i.Metadata.Namespace+"/"+i.Metadata.Name+"@"+i.Metadata.ResourceVersion)
			}
		}
	}
	return strings.Join(out, " ")
}

// runEdgeOnce starts an edge that is expected to fail at its join, and returns its output.
func runEdgeOnce(t *testing.T, c *cloud, name, token string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "tether-edge"), "--node-name", name, "--cloud", c.hub,
		"--join", "https://"+c.join, "--token", token, "--data-dir", t.TempDir(),
		"--metaserver-listen", freePort(t), "--mqtt-listen", freePort(t))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("edge with a bad token: %v (want exit 1): %s", err, out)
	}
	if strings.Contains(string(out), token) {
		t.Errorf("the edge printed its token")
	}
	return string(out)
}

// TestDeletedNodesTokensRevoked: deleting a Node also deletes the join tokens bound to its
// name, so the token it joined with (still in the edge's configuration, say) cannot join it again
// at once; a fleet token, or a token made after the deletion, can. Before, a node-bound token
// stayed valid for its whole TTL (24 h by default, up to a year).
func TestDeletedNodesTokensRevoked(t *testing.T) {
	c := newCloud(t)
	joinWith := func(raw string) error {
		t.Helper()
		tok, err := pki.ParseToken(raw)
		if err != nil {
			t.Fatal(err)
		}
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = join.Join(ctxT(t, 10*time.Second), "https://"+c.join, tok, "edge-1", nil, key)
		return err
	}
	bound, fleet := c.token(t, "--node", "edge-1"), c.token(t, "--any-node")
	if err := joinWith(bound); err != nil {
		t.Fatal(err)
	}
	if err := joinWith(bound); err != nil { // while the Node lives, its token joins it again
		t.Fatalf("a second join with the node's token: %v", err)
	}
	mustDo(t, http.MethodDelete, c.url("/api/v1/nodes/edge-1"), nil)
	var err error
	waitFor(t, 10*time.Second, "the deleted node's token refused", func() bool {
		err = joinWith(bound)
		return errors.Is(err, join.ErrTokenUnknown)
	})
	if err := joinWith(fleet); err != nil {
		t.Fatalf("a fleet token after the deletion: %v", err)
	}
	mustDo(t, http.MethodDelete, c.url("/api/v1/nodes/edge-1"), nil)
	fresh := c.token(t, "--node", "edge-1")
	// A restarted cloud replays the deletion from its history: the token made after it stays.
	c.stop()
	c.start(t)
	time.Sleep(time.Second) // the replayed deletion's revocation has run
	if err := joinWith(fresh); err != nil {
		t.Fatalf("a token made after the deletion, once the cloud restarted: %v", err)
	}
}
