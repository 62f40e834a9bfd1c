package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// nodeReady is a Node's Ready condition as the cloud API serves it.
type nodeReady struct{ Status, Message, LastHeartbeatTime string }

// readyOf reads node's Ready condition through c's API; zero if the Node or the condition is not
// there (or the read failed), so it can be polled.
func readyOf(t *testing.T, c *cloud, node string) nodeReady {
	t.Helper()
	code, body := do(t, http.MethodGet, c.url("/api/v1/nodes/"+node), "", nil)
	if code != http.StatusOK {
		return nodeReady{}
	}
	var n struct {
		Status struct {
			Conditions []struct {
				Type string
				nodeReady
			}
		}
	}
	json.Unmarshal(body, &n)
	for _, cond := range n.Status.Conditions {
		if cond.Type == "Ready" {
			return cond.nodeReady
		}
	}
	return nodeReady{}
}

// readyChange is a Ready condition a watch saw, and when.
type readyChange struct {
	nodeReady
	at time.Time
}

// readyChanges watches node through c's API from its current version and returns a function
// that stops the watch and gives every Ready condition the watch saw, in order. Unlike polling
// readyOf it misses no reading however quickly it was overwritten.
func readyChanges(t *testing.T, c *cloud, node string) (stop func() []readyChange) {
	t.Helper()
	var n struct {
		Metadata struct{ ResourceVersion string }
	}
	json.Unmarshal(mustDo(t, http.MethodGet, c.url("/api/v1/nodes/"+node), nil), &n)
	ctx, cancel := context.WithCancel(context.Background())
	url := c.url("/api/v1/nodes?watch=true&fieldSelector=metadata.name%3D" + node + "&resourceVersion=" + n.Metadata.ResourceVersion)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("watch %s: %s", url, resp.Status)
	}
	var seen []readyChange
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			var ev struct {
				Object struct {
					Status struct {
						Conditions []struct {
							Type string
							nodeReady
						}
					}
				}
			}
			json.Unmarshal(sc.Bytes(), &ev)
			for _, c := range ev.Object.Status.Conditions {
				if c.Type == "Ready" {
					seen = append(seen, readyChange{c.nodeReady, time.Now()})
				}
			}
		}
	}()
	return func() []readyChange {
		cancel()
		<-done
		return seen
	}
}

// TestNodeLifecycle: the Node appears on join with Ready and a heartbeat; a stopped edge turns
// NotReady after the grace period and Ready again when it returns; deleting the Node revokes it.
func TestNodeLifecycle(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-1")
	waitFor(t, 10*time.Second, "node Ready", func() bool { r := readyOf(t, c, "edge-1"); return r.Status == "True" && r.LastHeartbeatTime != "" })
	_, body := do(t, http.MethodGet, c.url("/api/v1/nodes/edge-1"), "", nil)
	waitFor(t, 10*time.Second, "node status report", func() bool {
		_, body = do(t, http.MethodGet, c.url("/api/v1/nodes/edge-1"), "", nil)
		return strings.Contains(string(body), `"kubeletVersion"`)
	})
	if !strings.Contains(string(body), `"kubeletVersion"`) {
		t.Errorf("the edge's node status report did not arrive: %s", body)
	}

	e.stop()
	waitFor(t, 15*time.Second, "node NotReady after the grace period", func() bool { return readyOf(t, c, "edge-1").Status == "Unknown" })
	e.restart(t)
	waitFor(t, 15*time.Second, "node Ready again", func() bool { return readyOf(t, c, "edge-1").Status == "True" })

	// Revocation: the session is closed and new ones are refused.
	mustDo(t, http.MethodDelete, c.url("/api/v1/nodes/edge-1"), nil)
	waitFor(t, 10*time.Second, "edge disconnected", func() bool {
		return metric(t, c.url("/metrics"), "tether_cloud_hub_connected_nodes") == 0
	})
	time.Sleep(2 * time.Second) // several reconnect attempts
	if got := metric(t, c.url("/metrics"), "tether_cloud_hub_connected_nodes"); got != 0 {
		t.Fatalf("a deleted node reconnected")
	}
	if !strings.Contains(e.log.String(), "revoked") {
		t.Fatalf("the edge was not told it was revoked:\n%s", tail(e.log.String(), 20))
	}
	// The edge keeps serving what it has.
	if !httpOK(e.url(paths["nodes"])) {
		t.Fatal("the revoked edge stopped serving its store")
	}

	// A Node of the same name created again (here at once, as `kubectl apply` of a manifest
	// would) does not let the revoked certificate back in: only a new join does.
	mustDo(t, http.MethodPost, c.url("/api/v1/nodes"), `{"apiVersion":"v1","kind":"Node","metadata":{"name":"edge-1"}}`)
	waitFor(t, 10*time.Second, "the edge told the Node was created again", func() bool {
		return strings.Contains(e.log.String(), "created again since it joined")
	})
	if got := metric(t, c.url("/metrics"), "tether_cloud_hub_connected_nodes"); got != 0 {
		t.Fatal("the revoked certificate got back in once the Node was created again")
	}
}

// TestRejoinRetiresTheOldCertificate: a second join of a live name (a replacement machine, or a
// stolen token's use) retires the first one's certificate: the old agent is refused from its
// next connection on, instead of the two taking the session from each other for ever.
func TestRejoinRetiresTheOldCertificate(t *testing.T) {
	c := newCloud(t)
	old := newEdge(t, c, "edge-1")
	newer := newEdge(t, c, "edge-1")
	waitFor(t, 15*time.Second, "the old agent told its certificate is retired", func() bool {
		return strings.Contains(old.log.String(), "retired this certificate")
	})
	time.Sleep(3 * time.Second) // several of the old agent's reconnect attempts (--reconnect-max 1s)
	if metric(t, c.url("/metrics"), "tether_cloud_hub_connected_nodes") != 1 || strings.Contains(newer.log.String(), "took over") {
		t.Fatalf("the new agent lost its session to the old one:\n%s", tail(newer.log.String(), 20))
	}
}

// TestEdgeStopsPromptly: SIGTERM stops a connected edge at once, not after its read deadline
// (two heartbeats: 30 s with the default heartbeat).
func TestEdgeStopsPromptly(t *testing.T) {
	c := newCloud(t, "--heartbeat", "15s")
	e := newEdge(t, c, "edge-1")
	waitFor(t, 10*time.Second, "connected", func() bool { return metric(t, c.url("/metrics"), "tether_cloud_hub_connected_nodes") == 1 })
	start := time.Now()
	e.stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the edge took %s to stop", d)
	}
}

// TestCertificateRotation: past the renewal point of its certificate's life the edge asks the
// hub for a new one over its authenticated session, stores it, and uses it from then on.
func TestCertificateRotation(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-1", "--cert-renew-at", "0.000001") // 8 s of 90 days: past already (certificates start a minute early)
	certPath := filepath.Join(e.dir, "node.crt")
	before, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "certificate renewed", func() bool {
		after, _ := os.ReadFile(certPath)
		return len(after) > 0 && !bytes.Equal(after, before)
	})
	if !strings.Contains(e.log.String(), "certificate renewed") {
		t.Fatal("the edge did not log the renewal")
	}
	// The renewed certificate admits the node.
	e.stop()
	e.restart(t)
	waitFor(t, 15*time.Second, "reconnected with the new certificate", func() bool {
		return metric(t, c.url("/metrics"), "tether_cloud_hub_connected_nodes") == 1
	})
}
