package e2e

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
