package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/tetherhub/tether/internal/syncbuf"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Real kubectl, two generations, run as a user would: only --server, a fresh HOME (so nothing
// is cached from an earlier run) and default flags otherwise.

// kubectl120 is Debian's kubernetes-client; .ci/run unpacks it there.
const kubectl120 = "/opt/kubectl-1.20/usr/bin/kubectl"

var (
	kubectlOnce sync.Once
	kubectlNew  string
	kubectlErr  error
)

// kubectlCurrent builds kubectl from the k8s.io/kubectl module (tools/kubectl, its own module)
// once per test run.
func kubectlCurrent(t *testing.T) string {
	t.Helper()
	kubectlOnce.Do(func() {
		out := filepath.Join(binDir, "kubectl-current")
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Dir = "../../tools/kubectl"
		if b, err := cmd.CombinedOutput(); err != nil {
			kubectlErr = fmt.Errorf("build kubectl: %v\n%s", err, b)
			return
		}
		kubectlNew = out
	})
	if kubectlErr != nil {
		t.Fatal(kubectlErr)
	}
	return kubectlNew
}

// kubectl is one kubectl binary pointed at one server.
type kubectl struct {
	t            *testing.T
	bin, server  string
	home, manDir string
}

// generations returns both kubectls, named for subtests.
func generations(t *testing.T) map[string]string {
	t.Helper()
	if _, err := os.Stat(kubectl120); err != nil {
		t.Fatalf("kubectl 1.20 is not at %s (.ci/run installs it): %v", kubectl120, err)
	}
	return map[string]string{"kubectl-1.20": kubectl120, "kubectl-current": kubectlCurrent(t)}
}

func newKubectl(t *testing.T, bin, server string) *kubectl {
	return &kubectl{t: t, bin: bin, server: server, home: t.TempDir(), manDir: t.TempDir()}
}

func (k *kubectl) cmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, k.bin, append([]string{"--server", k.server}, args...)...)
	cmd.Env = []string{"HOME=" + k.home, "PATH=" + os.Getenv("PATH")}
	return cmd
}

// run runs kubectl and returns stdout, stderr and whether it exited 0.
func (k *kubectl) run(args ...string) (string, string, bool) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := k.cmd(ctx, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err == nil
}

// must runs kubectl and requires success.
func (k *kubectl) must(args ...string) string {
	k.t.Helper()
	out, errOut, ok := k.run(args...)
	if !ok {
		k.t.Fatalf("kubectl %s: failed\nstdout: %s\nstderr: %s", strings.Join(args, " "), out, errOut)
	}
	return out
}

// manifest writes a file for apply -f.
func (k *kubectl) manifest(name, content string) string {
	p := filepath.Join(k.manDir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		k.t.Fatal(err)
	}
	return p
}

// watch starts `kubectl get -w` and collects its output lines.
func (k *kubectl) watch(args ...string) *syncbuf.Buffer {
	k.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := k.cmd(ctx, append([]string{"get", "-w"}, args...)...)
	var errb syncbuf.Buffer
	cmd.Stderr = &errb
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		k.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	out := &syncbuf.Buffer{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			out.Write(append(sc.Bytes(), '\n'))
		}
	}()
	k.t.Cleanup(func() {
		cancel()
		<-done
		cmd.Wait()
		if k.t.Failed() {
			k.t.Logf("kubectl get -w %v stdout:\n%s\nstderr:\n%s", args, out.String(), errb.String())
		}
	})
	return out
}

// waitLine waits until some line of b matches every one of words.
func waitLine(t *testing.T, b *syncbuf.Buffer, what string, words ...string) {
	t.Helper()
	waitFor(t, 20*time.Second, what, func() bool {
		for _, line := range strings.Split(b.String(), "\n") {
			f := strings.Fields(line)
			all := len(f) > 0
			for _, w := range words {
				found := false
				for _, x := range f {
					found = found || x == w
				}
				all = all && found
			}
			if all {
				return true
			}
		}
		return false
	})
}

// requireRow requires a table line whose fields start with want (in order).
func requireRow(t *testing.T, table string, want ...string) {
	t.Helper()
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(want) && strings.Join(f[:len(want)], " ") == strings.Join(want, " ") {
			return
		}
	}
	t.Fatalf("no row %q in:\n%s", strings.Join(want, " "), table)
}

func fleetManifest(nsName, node string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: %[1]s
data:
  mode: eco
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
  namespace: %[1]s
  labels:
    app: reader
spec:
  nodeName: %[2]s
  containers:
  - name: reader
    image: busybox
    envFrom:
    - configMapRef:
        name: settings
---
apiVersion: v1
kind: Service
metadata:
  name: reader
  namespace: %[1]s
spec:
  selector:
    app: reader
  ports:
  - port: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reader-1
  namespace: %[1]s
  labels:
    kubernetes.io/service-name: reader
addressType: IPv4
endpoints:
- addresses: ["10.1.0.7"]
  nodeName: %[2]s
ports:
- port: 8080
---
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: thermometer
  namespace: %[1]s
spec:
  protocol: modbus
  properties:
  - name: temperature
    type: INT
    accessMode: ReadWrite
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: boiler
  namespace: %[1]s
spec:
  nodeName: %[2]s
  deviceModelRef:
    name: thermometer
  properties:
  - name: temperature
    desired:
      value: "60"
---
apiVersion: apps.kubeedge.io/v1alpha1
kind: NodeGroup
metadata:
  name: %[1]s-group
spec:
  nodes:
  - %[2]s
`, nsName, node)
}

// TestKubectlCloud: apply -f of a manifest with every kind, get (table), get -o yaml, get -w
// seeing an update, re-apply, delete and api-resources, with both kubectl generations.
func TestKubectlCloud(t *testing.T) {
	c := newCloud(t)
	newEdge(t, c, "edge-k")
	for gen, bin := range generations(t) {
		t.Run(gen, func(t *testing.T) {
			k := newKubectl(t, bin, "http://"+c.api)
			nsName := strings.ReplaceAll(strings.TrimPrefix(gen, "kubectl-"), ".", "-")
			nsName = "k" + nsName
			file := k.manifest("fleet.yaml", fleetManifest(nsName, "edge-k"))
			out := k.must("apply", "-f", file)
			for _, want := range []string{"namespace/" + nsName + " created", "configmap/settings created", "pod/reader created",
				"service/reader created", "endpointslice.discovery.k8s.io/reader-1 created", "devicemodel.devices.kubeedge.io/thermometer created",
				"device.devices.kubeedge.io/boiler created", "nodegroup.apps.kubeedge.io/" + nsName + "-group created"} {
				if !strings.Contains(out, want) {
					t.Fatalf("apply output lacks %q:\n%s", want, out)
				}
			}

			// Tables with the columns people look for.
			tbl := k.must("get", "devices", "-n", nsName)
			requireRow(t, tbl, "NAME", "MODEL", "NODE", "STATE", "AGE")
			requireRow(t, tbl, "boiler", "thermometer", "edge-k", "unknown")
			requireRow(t, k.must("get", "dev", "-n", nsName), "boiler", "thermometer", "edge-k")
			requireRow(t, k.must("get", "ng", nsName+"-group"), nsName+"-group", "edge-k")
			requireRow(t, k.must("get", "nodes"), "edge-k", "Ready")
			tbl = k.must("get", "pods,cm,svc", "-n", nsName)
			requireRow(t, tbl, "pod/reader", "0/1", "Pending", "0")
			requireRow(t, tbl, "configmap/settings", "1")
			requireRow(t, tbl, "service/reader", "ClusterIP")
			requireRow(t, k.must("get", "dm", "-n", nsName), "thermometer", "modbus", "1")

			// -o yaml is the stored object, unknown fields and all.
			y := k.must("get", "device", "boiler", "-n", nsName, "-o", "yaml")
			for _, want := range []string{"kind: Device", "deviceModelRef:", "name: thermometer", "value: \"60\"", "resourceVersion:"} {
				if !strings.Contains(y, want) {
					t.Fatalf("get -o yaml lacks %q:\n%s", want, y)
				}
			}

			// get -w sees an update made by someone else.
			w := k.watch("configmap", "settings", "-n", nsName)
			waitLine(t, w, "the watch's first row", "settings", "1")
			mustDo(t, http.MethodPatch, c.url("/api/v1/namespaces/"+nsName+"/configmaps/settings"), `{"data":{"extra":"yes"}}`)
			waitLine(t, w, "the watch to show the update", "settings", "2")

			// Re-apply a change: strategic merge for built-in kinds, merge patch for the others.
			changed := strings.Replace(fleetManifest(nsName, "edge-k"), `value: "60"`, `value: "65"`, 1)
			changed = strings.Replace(changed, "mode: eco", "mode: boost", 1)
			out, errOut, ok := k.run("apply", "-f", k.manifest("fleet2.yaml", changed))
			if !ok || strings.Contains(strings.ToLower(errOut), "warning") {
				t.Fatalf("re-apply: ok=%v\n%s\n%s", ok, out, errOut)
			}
			if !strings.Contains(out, "device.devices.kubeedge.io/boiler configured") || !strings.Contains(out, "configmap/settings configured") ||
				!strings.Contains(out, "pod/reader unchanged") {
				t.Fatalf("re-apply:\n%s", out)
			}
			if y := k.must("get", "dev", "boiler", "-n", nsName, "-o", "yaml"); !strings.Contains(y, `value: "65"`) {
				t.Fatalf("the device did not change:\n%s", y)
			}
			// The patch kept the field the other writer added.
			if y := k.must("get", "cm", "settings", "-n", nsName, "-o", "yaml"); !strings.Contains(y, "mode: boost") || !strings.Contains(y, "extra: \"yes\"") {
				t.Fatalf("configmap after re-apply:\n%s", y)
			}

			ar := k.must("api-resources")
			requireRow(t, ar, "devices", "dev", "devices.kubeedge.io/v1beta1", "true", "Device")
			requireRow(t, ar, "nodegroups", "ng", "apps.kubeedge.io/v1alpha1", "false", "NodeGroup")
			requireRow(t, ar, "pods", "po", "v1", "true", "Pod")

			out = k.must("delete", "device", "boiler", "-n", nsName)
			if !strings.Contains(out, "deleted") {
				t.Fatalf("delete: %s", out)
			}
			if code, _ := do(t, http.MethodGet, c.url("/apis/devices.kubeedge.io/v1beta1/namespaces/"+nsName+"/devices/boiler"), "", nil); code != http.StatusNotFound {
				t.Fatalf("after delete, GET = %d", code)
			}
			k.must("delete", "-f", file, "--wait=false", "--ignore-not-found")
			if _, errOut, ok := k.run("get", "pod", "reader", "-n", nsName); ok || !strings.Contains(errOut, "NotFound") && !strings.Contains(errOut, "not found") {
				t.Fatalf("the pod outlived delete -f: %s", errOut)
			}
		})
	}
}

// TestKubectlDeleteNamespace: as in Kubernetes, kubectl creates (with create's protobuf bodies
// and apply's JSON) only in a namespace that exists, and deleting a namespace deletes what is in it, so its Pod, ConfigMap and Device leave the edge;
// kubectl waits for that, and another namespace's objects stay.
func TestKubectlDeleteNamespace(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-d")
	k := newKubectl(t, generations(t)["kubectl-current"], "http://"+c.api)
	// kubectl create sends protobuf for the built-in kinds; apply sends JSON.
	early := k.manifest("early.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: early\n  namespace: plant\n")
	for _, args := range [][]string{{"create", "configmap", "early", "-n", "plant"}, {"apply", "-f", early}} {
		if _, errOut, ok := k.run(args...); ok || !strings.Contains(errOut, `namespaces "plant" not found`) {
			t.Fatalf("%v in a missing namespace: ok=%v %s", args, ok, errOut)
		}
	}
	if out := k.must("create", "namespace", "plant"); !strings.Contains(out, "namespace/plant created") {
		t.Fatalf("create namespace: %s", out)
	}
	k.must("create", "configmap", "early", "-n", "plant", "--from-literal", "a=b")
	k.must("apply", "-f", k.manifest("plant.yaml", fleetManifest("plant", "edge-d")))
	k.must("apply", "-f", k.manifest("yard.yaml", fleetManifest("yard", "edge-d")))
	for _, ns := range []string{"plant", "yard"} {
		waitNames(t, e.url("/api/v1/namespaces/"+ns+"/pods"), ns+"/reader")
		waitNames(t, e.url("/apis/devices.kubeedge.io/v1beta1/namespaces/"+ns+"/devices"), ns+"/boiler")
	}

	out := k.must("delete", "namespace", "plant", "--timeout=30s")
	if !strings.Contains(out, `namespace "plant" deleted`) {
		t.Fatalf("delete namespace: %s", out)
	}
	if _, errOut, ok := k.run("get", "namespace", "plant"); ok || !strings.Contains(errOut, "NotFound") {
		t.Fatalf("the namespace outlived kubectl's wait: %s", errOut)
	}
	waitNames(t, e.url("/api/v1/namespaces/plant/pods"))
	waitNames(t, e.url("/api/v1/namespaces/plant/configmaps"))
	waitNames(t, e.url("/apis/devices.kubeedge.io/v1beta1/namespaces/plant/devices"))
	waitNames(t, e.url("/api/v1/namespaces/yard/pods"), "yard/reader")
	waitNames(t, e.url("/api/v1/namespaces/yard/configmaps"), "yard/settings")
	if _, errOut, ok := k.run("get", "configmap", "early", "-n", "plant"); ok || !strings.Contains(errOut, "NotFound") {
		t.Fatalf("a ConfigMap no Pod uses outlived its namespace: %s", errOut)
	}
	if _, errOut, ok := k.run("create", "configmap", "late", "-n", "plant"); ok || !strings.Contains(errOut, `namespaces "plant" not found`) {
		t.Fatalf("create in the deleted namespace: ok=%v %s", ok, errOut)
	}
}

// TestKubectlFinalizers: kubectl delete of a ConfigMap that lists a finalizer waits, the edge
// serving it meanwhile with its deletionTimestamp, until a patch takes the finalizer away; the
// object then goes from the cloud and the edge and kubectl's wait ends.
func TestKubectlFinalizers(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-f")
	k := newKubectl(t, generations(t)["kubectl-current"], "http://"+c.api)
	k.must("apply", "-f", k.manifest("plant.yaml", fleetManifest("plant", "edge-f")))
	k.must("patch", "configmap", "settings", "-n", "plant", "--type=merge", "-p", `{"metadata":{"finalizers":["example.com/backup"]}}`)
	edgeCM := e.url("/api/v1/namespaces/plant/configmaps/settings")
	waitFor(t, 20*time.Second, "the edge has the finalizer", func() bool {
		_, b := do(t, http.MethodGet, edgeCM, "", nil)
		return strings.Contains(string(b), "example.com/backup")
	})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	del := k.cmd(ctx, "delete", "configmap", "settings", "-n", "plant", "--timeout=50s")
	del.Stdout, del.Stderr = &out, &errb
	if err := del.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- del.Wait() }()
	waitFor(t, 20*time.Second, "the edge serves the deletion mark", func() bool {
		_, b := do(t, http.MethodGet, edgeCM, "", nil)
		return strings.Contains(string(b), "deletionTimestamp")
	})
	select {
	case err := <-waited:
		t.Fatalf("kubectl delete ended while a finalizer held the object: %v\n%s%s", err, out.String(), errb.String())
	case <-time.After(time.Second):
	}
	k.must("patch", "configmap", "settings", "-n", "plant", "--type=merge", "-p", `{"metadata":{"finalizers":null}}`)
	select {
	case err := <-waited:
		if err != nil || !strings.Contains(out.String(), `configmap "settings" deleted`) {
			t.Fatalf("kubectl delete: %v\n%s%s", err, out.String(), errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("kubectl delete still waits 30 s after the last finalizer went")
	}
	waitFor(t, 20*time.Second, "the edge drops the object", func() bool {
		code, _ := do(t, http.MethodGet, edgeCM, "", nil)
		return code == http.StatusNotFound
	})
}

// TestKubectlStrictValidation: current kubectl leaves validation to the server (it reads
// fieldValidation in /openapi/v3) and a typo is refused; kubectl 1.20 gets a warning.
func TestKubectlStrictValidation(t *testing.T) {
	c := newCloud(t)
	gens := generations(t)
	bad := `apiVersion: v1
kind: ConfigMap
metadata:
  name: typo
  namespace: default
datta:
  x: y
`
	k := newKubectl(t, gens["kubectl-current"], "http://"+c.api)
	_, errOut, ok := k.run("apply", "-f", k.manifest("bad.yaml", bad))
	if ok || !strings.Contains(errOut, `unknown field "datta"`) {
		t.Fatalf("current kubectl applied a manifest with an unknown field: %s", errOut)
	}
	if code, _ := do(t, http.MethodGet, c.url("/api/v1/namespaces/default/configmaps/typo"), "", nil); code != http.StatusNotFound {
		t.Fatalf("the refused object was stored (%d)", code)
	}
	// kubectl 1.20 validates against /openapi/v2 itself, where the built-in kinds have their
	// full schemas.
	old := newKubectl(t, gens["kubectl-1.20"], "http://"+c.api)
	out, errOut, ok := old.run("apply", "-f", old.manifest("bad.yaml", bad))
	if ok || !strings.Contains(errOut, `unknown field "datta"`) {
		t.Fatalf("kubectl 1.20: ok=%v\n%s\n%s", ok, out, errOut)
	}
	nested := strings.Replace(fleetManifest("default", "edge-x"), "image: busybox", "imagee: busybox", 1)
	for gen, k := range map[string]*kubectl{"kubectl-current": k, "kubectl-1.20": old} {
		if _, errOut, ok := k.run("apply", "-f", k.manifest("nested.yaml", nested)); ok || !strings.Contains(errOut, `unknown field`) || !strings.Contains(errOut, "imagee") {
			t.Fatalf("%s applied a pod with a typo in a container: %s", gen, errOut)
		}
	}
	if code, _ := do(t, http.MethodGet, c.url("/api/v1/namespaces/default/configmaps/typo"), "", nil); code != http.StatusNotFound {
		t.Fatalf("the refused object was stored (%d)", code)
	}
}

// TestKubectlEdge: get, get -w and api-resources against the edge metaserver, with the cloud up
// and with it stopped; writes through the metaserver are forwarded while connected and refused
// at once while not.
func TestKubectlEdge(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-m")
	gens := generations(t)
	ops := map[string]*kubectl{}
	for gen, bin := range gens {
		ops[gen] = newKubectl(t, bin, "http://"+c.api)
	}
	ops["kubectl-current"].must("apply", "-f", ops["kubectl-current"].manifest("fleet.yaml", fleetManifest("edge-ns", "edge-m")))
	waitNames(t, e.url("/apis/devices.kubeedge.io/v1beta1/namespaces/edge-ns/devices"), "edge-ns/boiler")

	watches := map[string]*syncbuf.Buffer{}
	for gen, bin := range gens {
		k := newKubectl(t, bin, "http://"+e.meta)
		requireRow(t, k.must("get", "devices", "-n", "edge-ns"), "boiler", "thermometer", "edge-m", "unknown")
		requireRow(t, k.must("get", "pods", "-n", "edge-ns", "-o", "wide"), "reader", "0/1", "Pending")
		requireRow(t, k.must("api-resources"), "devices", "dev", "devices.kubeedge.io/v1beta1", "true", "Device")
		w := k.watch("configmaps", "-n", "edge-ns")
		waitLine(t, w, gen+": first rows", "settings", "1")
		watches[gen] = w
	}
	mustDo(t, http.MethodPatch, c.url("/api/v1/namespaces/edge-ns/configmaps/settings"), `{"data":{"b":"2"}}`)
	for gen, w := range watches {
		waitLine(t, w, gen+": the update through the edge", "settings", "2")
	}

	// A status write through the metaserver reaches the cloud and is read back at the edge.
	cur := newKubectl(t, gens["kubectl-current"], "http://"+e.meta)
	cur.must("patch", "device", "boiler", "-n", "edge-ns", "--subresource=status", "--type=merge", "-p", `{"status":{"state":"online"}}`)
	requireRow(t, cur.must("get", "dev", "boiler", "-n", "edge-ns"), "boiler", "thermometer", "edge-m", "online")
	requireRow(t, ops["kubectl-current"].must("get", "dev", "boiler", "-n", "edge-ns"), "boiler", "thermometer", "edge-m", "online")
	// Anything else a node may not change.
	if _, errOut, ok := cur.run("label", "pod", "reader", "-n", "edge-ns", "x=y"); ok || !strings.Contains(errOut, "Forbidden") {
		t.Fatalf("a label change through the metaserver was not refused: %s", errOut)
	}

	// A server-side dry run is refused, not carried out: client-go sends a delete's dry run in
	// the body, and before, the metaserver forwarded it as a real delete.
	for name, k := range map[string]*kubectl{"edge": cur, "cloud": ops["kubectl-current"]} {
		if _, errOut, ok := k.run("delete", "pod", "reader", "-n", "edge-ns", "--dry-run=server"); ok || !strings.Contains(errOut, "dry runs are not supported") {
			t.Fatalf("%s: delete --dry-run=server: ok=%v %s", name, ok, errOut)
		}
	}
	requireRow(t, cur.must("get", "pods", "-n", "edge-ns"), "reader")
	requireRow(t, ops["kubectl-current"].must("get", "pods", "-n", "edge-ns"), "reader")

	c.stop()
	waitFor(t, 10*time.Second, "edge notices the cloud is gone", func() bool {
		_, body := do(t, http.MethodGet, e.url("/readyz?verbose"), "", nil)
		return strings.Contains(string(body), "[~]cloud-link")
	})
	for gen, bin := range gens {
		k := newKubectl(t, bin, "http://"+e.meta) // fresh HOME: discovery is not cached
		requireRow(t, k.must("get", "devices", "-n", "edge-ns"), "boiler", "thermometer", "edge-m", "online")
		requireRow(t, k.must("api-resources"), "nodegroups", "ng", "apps.kubeedge.io/v1alpha1", "false", "NodeGroup")
		w := k.watch("pods", "-n", "edge-ns")
		waitLine(t, w, gen+": offline watch", "reader", "0/1")
		start := time.Now()
		_, errOut, ok := k.run("delete", "pod", "reader", "-n", "edge-ns", "--wait=false")
		if ok || !strings.Contains(errOut, "not connected to the cloud") {
			t.Fatalf("%s: offline delete: ok=%v %s", gen, ok, errOut)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("%s: offline write took %s to fail", gen, d)
		}
	}
	// The old watches were not disturbed by the outage.
	for gen, w := range watches {
		if strings.Count(w.String(), "settings") < 2 {
			t.Fatalf("%s: watch output:\n%s", gen, w.String())
		}
	}
}

// TestKubectlSecretsSelectorsAndNoOps: what an audit found with kubectl against a running cloud
// and edge. A Secret applied with stringData has it in data, on the cloud and on the edge; a
// label that is already set moves no resourceVersion; server-side apply is refused as an
// unsupported media type; Pods select by status.phase and Secrets by type, on the cloud and on
// the edge (list and watch); a Device whose desired value its model's type refuses is refused.
func TestKubectlSecretsSelectorsAndNoOps(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-s")
	bin := kubectlCurrent(t)
	k := newKubectl(t, bin, "http://"+c.api)
	k.must("apply", "-f", k.manifest("secrets.yaml", `apiVersion: v1
kind: Namespace
metadata:
  name: sec
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: sec
type: Opaque
stringData:
  password: hunter2
---
apiVersion: v1
kind: Secret
metadata:
  name: tls
  namespace: sec
type: kubernetes.io/tls
data:
  tls.crt: ""
  tls.key: ""
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: c1
  namespace: sec
  labels:
    env: prod
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
  namespace: sec
spec:
  nodeName: edge-s
  containers:
  - name: reader
    image: busybox
    envFrom:
    - secretRef:
        name: creds
`))
	want := base64.StdEncoding.EncodeToString([]byte("hunter2"))
	if got := k.must("get", "secret", "creds", "-n", "sec", "-o", "jsonpath={.data.password}|{.stringData}"); got != want+"|" {
		t.Fatalf("cloud: data.password|stringData = %q, want %q", got, want+"|")
	}
	var onEdge struct {
		Data       map[string]string
		StringData map[string]string
	}
	waitFor(t, 20*time.Second, "the secret on the edge", func() bool {
		code, body := do(t, http.MethodGet, e.url("/api/v1/namespaces/sec/secrets/creds"), "", nil)
		return code == http.StatusOK && json.Unmarshal(body, &onEdge) == nil
	})
	if onEdge.Data["password"] != want || onEdge.StringData != nil {
		t.Fatalf("edge: data %v, stringData %v", onEdge.Data, onEdge.StringData)
	}

	rv := k.must("get", "cm", "c1", "-n", "sec", "-o", "jsonpath={.metadata.resourceVersion}")
	k.must("label", "cm", "c1", "-n", "sec", "env=prod", "--overwrite")
	if again := k.must("get", "cm", "c1", "-n", "sec", "-o", "jsonpath={.metadata.resourceVersion}"); again != rv {
		t.Fatalf("a label already set moved the resourceVersion from %s to %s", rv, again)
	}

	if out, errOut, ok := k.run("apply", "--server-side", "-f", k.manifest("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c2\n  namespace: sec\n")); ok || !strings.Contains(errOut, "Server-side apply not available on the server") {
		t.Fatalf("server-side apply: ok=%v\n%s\n%s", ok, out, errOut)
	}

	edgeK := newKubectl(t, bin, "http://"+e.meta)
	waitFor(t, 20*time.Second, "the pod on the edge", func() bool {
		code, _ := do(t, http.MethodGet, e.url("/api/v1/namespaces/sec/pods/reader"), "", nil)
		return code == http.StatusOK
	})
	running := edgeK.watch("pods", "-n", "sec", "--field-selector", "status.phase=Running")
	for where, kc := range map[string]*kubectl{"cloud": k, "edge": edgeK} {
		requireRow(t, kc.must("get", "pods", "-n", "sec", "--field-selector", "status.phase=Pending"), "reader")
		if out := kc.must("get", "pods", "-n", "sec", "--field-selector", "status.phase=Running", "-o", "name"); out != "" {
			t.Fatalf("%s: Running pods before any ran: %q", where, out)
		}
		if out := kc.must("get", "secrets", "-n", "sec", "--field-selector", "type=Opaque", "-o", "name"); out != "secret/creds\n" {
			t.Fatalf("%s: Opaque secrets: %q", where, out)
		}
		if _, errOut, ok := kc.run("get", "pods", "-n", "sec", "--field-selector", "status.podIP=1.2.3.4"); ok || !strings.Contains(errOut, "field label not supported") {
			t.Fatalf("%s: an unsupported field: ok=%v %s", where, ok, errOut)
		}
	}
	k.must("patch", "pod", "reader", "-n", "sec", "--subresource=status", "--type=merge", "-p", `{"status":{"phase":"Running"}}`)
	waitLine(t, running, "the edge's Running watch sees the pod start", "reader", "Running")
	requireRow(t, edgeK.must("get", "pods", "-n", "sec", "--field-selector", "status.phase=Running"), "reader")

	_, errOut, ok := k.run("apply", "-f", k.manifest("device.yaml", `apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: switch
  namespace: sec
spec:
  protocol: modbus
  properties:
  - name: power
    type: BOOLEAN
    accessMode: ReadWrite
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: lamp
  namespace: sec
spec:
  nodeName: edge-s
  deviceModelRef:
    name: switch
  properties:
  - name: power
    desired:
      value: "maybe"
`))
	if ok || !strings.Contains(errOut, "Invalid") || !strings.Contains(errOut, `property "power"`) {
		t.Fatalf("a Device with a desired value its model refuses: ok=%v %s", ok, errOut)
	}
}
