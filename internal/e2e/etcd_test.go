package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhub/tether/store/etcdstore/etcdtest"
)

// TestEtcdOneReplica: one tether-cloud on a real etcd (--store etcd) with a real edge. Objects
// created through the API reach the edge; the cloud's state lives in etcd, not in its data dir
// (which keeps only the CA), so a restarted cloud has every object and the same cluster, and the
// edge goes on from where it was; an etcd restart under the running cloud costs nothing but the
// downtime.
func TestEtcdOneReplica(t *testing.T) {
	srv := etcdtest.Start(t)
	c := newCloud(t, "--store", "etcd", "--etcd-endpoints", srv.Endpoint(), "--etcd-prefix", "/e2e")
	e := newEdge(t, c, "edge-1")
	mustDo(t, http.MethodPost, c.url(paths["configmaps"]), configMapObj("cfg", map[string]string{"v": "1"}))
	mustDo(t, http.MethodPost, c.url(paths["configmaps"]), configMapObj("other", nil))
	mustDo(t, http.MethodPost, c.url(paths["pods"]), podObj("app", "edge-1", []string{"cfg"}, nil))
	waitNames(t, e.url(paths["pods"]), q("app")...)
	waitNames(t, e.url(paths["configmaps"]), q("cfg")...)
	if _, err := os.Stat(filepath.Join(c.dir, "cloud.db")); !os.IsNotExist(err) {
		t.Fatalf("--store etcd made an embedded store file: %v", err)
	}
	if metric(t, c.url("/metrics"), "tether_cloud_store_etcd_request_seconds_count") == 0 {
		t.Fatal("no etcd requests counted")
	}
	cluster := cloudInfo(t, c)["cluster"]

	// Cloud restart: the state is etcd's.
	c.stop()
	mustDo(t, http.MethodGet, e.url(paths["pods"]+"/app"), nil) // the edge serves meanwhile
	c.start(t)
	if got := cloudInfo(t, c)["cluster"]; got != cluster {
		t.Fatalf("cluster %s after the restart, was %s", got, cluster)
	}
	waitNames(t, c.url(paths["configmaps"]), q("cfg", "other")...)
	mustDo(t, http.MethodPatch, c.url(paths["configmaps"]+"/cfg"), `{"data":{"v":"2"}}`)
	mustDo(t, http.MethodPut, c.url(paths["pods"]+"/app"), podObj("app", "edge-1", []string{"cfg", "other"}, nil))
	waitNames(t, e.url(paths["configmaps"]), q("cfg", "other")...)
	waitFor(t, 15*time.Second, "the update after the cloud restart on the edge", func() bool {
		_, body := do(t, http.MethodGet, e.url(paths["configmaps"]+"/cfg"), "", nil)
		return strings.Contains(string(body), `"v":"2"`)
	})

	// etcd restart under the running cloud: it reconnects and its watch goes on.
	srv.Restart()
	waitFor(t, 20*time.Second, "the cloud ready again after the etcd restart", func() bool { return httpOK(c.url("/readyz")) })
	mustDo(t, http.MethodDelete, c.url(paths["configmaps"]+"/other"), nil)
	mustDo(t, http.MethodPut, c.url(paths["pods"]+"/app"), podObj("app", "edge-1", []string{"cfg"}, nil))
	waitNames(t, e.url(paths["configmaps"]), q("cfg")...)
	waitNames(t, c.url(paths["configmaps"]), q("cfg")...)
	c.stop()
	e.stop()
}

func cloudInfo(t *testing.T, c *cloud) map[string]string {
	t.Helper()
	var out map[string]string
	if err := json.Unmarshal(mustDo(t, http.MethodGet, c.url("/tether/v1/info"), nil), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEtcdBadConfiguration: --store etcd without endpoints, or with a prefix etcdstore refuses,
// is a bad configuration: one line naming it, exit 2, nothing started.
func TestEtcdBadConfiguration(t *testing.T) {
	data := filepath.Join(t.TempDir(), "never")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--store", "etcd"}, "etcd-endpoints"},
		{[]string{"--store", "etcd", "--etcd-endpoints", "127.0.0.1:2379", "--etcd-prefix", "tether/"}, "prefix"},
		{[]string{"--store", "etcd", "--etcd-endpoints", "127.0.0.1:2379", "--etcd-cert-file", "c.pem"}, "key"},
	} {
		out, err := exec.Command(filepath.Join(binDir, "tether-cloud"), append(c.args, "--data-dir", data)...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v: %v (want exit 2): %s", c.args, err, out)
			continue
		}
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], c.want) {
			t.Errorf("%v: %q, want one line naming %q", c.args, out, c.want)
		}
	}
	if _, err := os.Stat(data); err == nil {
		t.Error("a bad etcd configuration created the data dir")
	}
}

// TestEtcdTwoReplicas: two tether-cloud replicas on one etcd share the CA the first one stored
// there, and a replica whose data dir holds another CA refuses to start. An edge joined through
// one replica is served by the other, and a token made through one joins a node through the
// other. The replica without a node's session leaves it Ready past its grace period (before, it
// marked Unknown every node it had no session for); when the replica holding the node is killed,
// the edge moves to the other, which names itself in the Ready condition, and no condition but
// Ready True is written for it meanwhile (read from a watch, not polled); once the edge stops,
// that replica marks it Unknown after its grace period.
func TestEtcdTwoReplicas(t *testing.T) {
	srv := etcdtest.Start(t)
	etcdArgs := []string{"--store", "etcd", "--etcd-endpoints", srv.Endpoint(), "--etcd-prefix", "/two", "--replica-ttl", "2s"}
	a := newCloud(t, append(etcdArgs, "--replica-name", "replica-a")...)
	e := newEdge(t, a, "edge-1")
	via := a // the replica the test reads the Node through
	holderOf := func(node string) (status, message string) {
		t.Helper()
		r := readyOf(t, via, node)
		return r.Status, r.Message
	}
	holder := func() (status, message string) { t.Helper(); return holderOf("edge-1") }
	waitFor(t, 10*time.Second, "edge-1 Ready on replica-a", func() bool {
		s, m := holder()
		return s == "True" && strings.HasSuffix(m, "replica-a")
	})

	// The second replica starts with the node Ready and connected to the first. It finds the
	// first one's CA in etcd.
	b := &cloud{dir: t.TempDir(), hub: freePort(t), join: freePort(t), api: freePort(t), extra: append(etcdArgs, "--replica-name", "replica-b")}
	b.start(t)
	if got, want := cloudInfo(t, b)["caHash"], cloudInfo(t, a)["caHash"]; got != want {
		t.Fatalf("replica-b's CA %s, replica-a's %s", got, want)
	}
	// A replica that ran alone before, with a CA of its own.
	alone := newCloud(t)
	alone.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // should it start after all
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "tether-cloud"), append([]string{"serve", "--data-dir", alone.dir,
		"--hub-listen", freePort(t), "--join-listen", freePort(t), "--api-listen", freePort(t)}, etcdArgs...)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "other than the one the cloud's replicas share") {
		t.Fatalf("a replica with another CA: %v: %s", err, out)
	}

	time.Sleep(6 * time.Second) // twice the harness's grace period
	if s, m := holder(); s != "True" || !strings.HasSuffix(m, "replica-a") {
		t.Fatalf("after replica-b's grace period: Ready %s %q, want True on replica-a", s, m)
	}
	mustDo(t, http.MethodPost, b.url(paths["pods"]), podObj("through-b", "edge-1", nil, nil))
	waitNames(t, e.url(paths["pods"]), q("through-b")...)
	e2 := &edge{name: "edge-2", dir: t.TempDir(), meta: freePort(t), mqtt: freePort(t), c: b}
	e2.startWith(t, a.token(t, "--node", "edge-2"))
	e2.waitSynced(t)
	t.Cleanup(func() { e2.kill(); e2.check(t) })
	mustDo(t, http.MethodPost, a.url(paths["pods"]), podObj("on-2", "edge-2", nil, nil))
	waitNames(t, e2.url(paths["pods"]), q("on-2")...)
	e2.stop()

	// edge-3 knows only replica-a: when replica-a dies it reconnects nowhere.
	newEdge(t, a, "edge-3")

	// The edge, told both replicas, is on replica-a; kill it.
	e.stop()
	e.extra = []string{"--cloud", b.hub}
	e.restart(t)
	e.waitSynced(t)
	// A device on edge-1 reports its state through replica-a: the Device holds the epoch of
	// that session (the cloud's report fence, see cloudapi/fence.go).
	mustDo(t, http.MethodPost, a.url(paths["devicemodels"]), twinModelObj("thermo"))
	mustDo(t, http.MethodPost, a.url(paths["devices"]), twinDeviceObj("thermo", "edge-1", "thermo"))
	waitNames(t, e.url(paths["devices"]), q("thermo")...)
	m := newMapper(t, e, nil, ns+"/thermo")
	stateVia := func(c *cloud, state string) int64 {
		t.Helper()
		if _, err := m.SetState(ctxT(t, 10*time.Second), ns+"/thermo", state); err != nil {
			t.Fatal(err)
		}
		var epoch int64
		waitFor(t, 20*time.Second, "thermo "+state+" in the cloud", func() bool {
			var d struct {
				Metadata struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
				Status deviceStatus `json:"status"`
			}
			json.Unmarshal(mustDo(t, http.MethodGet, c.url(paths["devices"]+"/thermo"), nil), &d)
			// "edge-1/N": the node whose session wrote it, and its epoch.
			epoch = 0
			if n, ok := strings.CutPrefix(d.Metadata.Annotations["tether.dev/report-epoch"], "edge-1/"); ok {
				epoch, _ = strconv.ParseInt(n, 10, 64)
			}
			return d.Status.State == state
		})
		return epoch
	}
	epochA := stateVia(a, "online")
	if epochA <= 0 {
		t.Fatalf("the Device reported through replica-a holds report epoch %d, want one", epochA)
	}
	changes := readyChanges(t, b, "edge-1")
	orphan := readyChanges(t, b, "edge-3")
	a.kill()
	killed := time.Now()
	via = b
	// The edge reconnects to replica-b within a second or two; replica-b learns that replica-a
	// is gone once its lease ends (2 s) and waits the grace period (3 s) before it marks a node
	// of replica-a's. edge-1 must stay Ready all through, and after: every Ready condition
	// written from the kill until the lease and the grace period have passed with a margin is
	// read from a watch, so that a mark quickly undone is seen too.
	var moved time.Duration
	waitFor(t, 20*time.Second, "edge-1 on replica-b, and 8 s since the kill", func() bool {
		if s, m := holder(); moved == 0 && s == "True" && strings.HasSuffix(m, "replica-b") {
			moved = time.Since(killed)
		}
		return moved > 0 && time.Since(killed) > 8*time.Second
	})
	seen := changes()
	onB := false
	for _, r := range seen {
		if r.Status != "True" {
			t.Fatalf("edge-1, told both replicas, was written not Ready during the failover: %+v", seen)
		}
		onB = onB || strings.HasSuffix(r.Message, "replica-b")
	}
	if !onB { // the watch must have seen the move, or it saw nothing
		t.Fatalf("the watch on replica-b did not see edge-1 move to it: %+v", seen)
	}
	t.Logf("edge-1 Ready on replica-b %.1f s after replica-a was killed", moved.Seconds())
	mustDo(t, http.MethodPost, b.url(paths["pods"]), podObj("after-a", "edge-1", nil, nil))
	waitNames(t, e.url(paths["pods"]), q("through-b", "after-a")...)
	epochB := stateVia(b, "offline")
	if epochB <= epochA {
		t.Fatalf("the Device reported through replica-b holds report epoch %d, want more than replica-a's session's %d", epochB, epochA)
	}
	t.Logf("thermo's report epoch: %d through replica-a, %d through replica-b", epochA, epochB)
	// replica-b learns from etcd that replica-a is gone (its lease, --replica-ttl, 2 s) the
	// moment its key goes, and marks edge-3 a grace period (3 s) after that: not before the
	// grace period, not once edge-3's last heartbeat is two status intervals (two minutes here)
	// old, and not when its own timer for edge-3 next came round, up to a grace period later
	// (without the watch of replica keys: 7.2 and 7.3 s after the kill in two runs).
	waitFor(t, 20*time.Second, "edge-3 Unknown on replica-b after replica-a died", func() bool {
		s, _ := holderOf("edge-3")
		return s == "Unknown"
	})
	var marked time.Duration
	for _, r := range orphan() {
		if r.Status == "Unknown" && marked == 0 {
			marked = r.at.Sub(killed)
		}
	}
	if marked == 0 {
		t.Fatal("the watch on replica-b did not see edge-3 marked Unknown")
	}
	t.Logf("edge-3 Unknown %.1f s after replica-a was killed", marked.Seconds())
	if marked < 3*time.Second || marked > 6500*time.Millisecond {
		t.Errorf("edge-3 marked Unknown %.1f s after replica-a was killed; want a lease (up to 2 s) and the grace period (3 s) after", marked.Seconds())
	}

	// The edge goes away: the replica that held it marks it after its grace period.
	e.stop()
	waitFor(t, 15*time.Second, "edge-1 Unknown after replica-b's grace period", func() bool {
		s, _ := holder()
		return s == "Unknown"
	})
	b.stop()
}

// TestEtcdStalledReplica: a replica that stalls (SIGSTOP, as an overloaded host does) past its
// lease is taken for dead by the other, which marks its node Unknown although the node is still
// connected to it. Once the stalled replica runs again it writes the node Ready at once, over
// the same session (not at its next heartbeat write, five minutes away), and the two leave it
// Ready from then on.
func TestEtcdStalledReplica(t *testing.T) {
	srv := etcdtest.Start(t)
	// A 6 s heartbeat gives the edge's connection a 15 s read deadline, so it outlives the stall.
	args := []string{"--store", "etcd", "--etcd-endpoints", srv.Endpoint(), "--etcd-prefix", "/stall", "--replica-ttl", "2s", "--heartbeat", "6s"}
	a := newCloud(t, append(args, "--replica-name", "replica-a")...)
	newEdge(t, a, "edge-1") // knows only replica-a
	b := &cloud{dir: t.TempDir(), hub: freePort(t), join: freePort(t), api: freePort(t), extra: append(args, "--replica-name", "replica-b")}
	b.start(t)
	ready := func() (status, message string) {
		t.Helper()
		r := readyOf(t, b, "edge-1")
		return r.Status, r.Message
	}
	onA := func() bool { s, m := ready(); return s == "True" && strings.HasSuffix(m, "replica-a") }
	waitFor(t, 10*time.Second, "edge-1 Ready on replica-a", onA)

	a.cmd.Process.Signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			a.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	waitFor(t, 15*time.Second, "replica-b marking edge-1 Unknown while replica-a is stalled", func() bool {
		s, _ := ready()
		return s == "Unknown"
	})
	a.cmd.Process.Signal(syscall.SIGCONT)
	stopped = false
	resumed := time.Now()
	waitFor(t, 10*time.Second, "edge-1 Ready on replica-a again", onA)
	t.Logf("edge-1 Ready on replica-a %.1f s after replica-a resumed", time.Since(resumed).Seconds())
	// It stays so: replica-b finds replica-a's lease again and leaves the node to it.
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if !onA() {
			s, m := ready()
			t.Fatalf("edge-1 Ready %s %q after replica-a resumed; want True on replica-a", s, m)
		}
	}
	if n := strings.Count(a.log.String(), "node connected"); n != 1 {
		t.Fatalf("replica-a logged %d connects; the edge was meant to keep its one session through the stall", n)
	}
	b.stop()
	a.stop()
}
