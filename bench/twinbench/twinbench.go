package twinbench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhub/tether/bench/boltbase"
	"github.com/tetherhub/tether/bench/figure"
	"github.com/tetherhub/tether/internal/freeport"
	"github.com/tetherhub/tether/sim"
)

// params are the sizes of one run.
type params struct {
	devices      int           // device clients under load, and Devices on the edge
	idleDevices  int           // devices for the idle RSS figure
	objects      int           // objects stored on the edge for the idle RSS figure
	duration     time.Duration // of each load measurement
	rates        []float64     // offered loads for the latency figures, updates/s over all devices
	saturate     float64       // offered load for the throughput figure: above what the agent does at default and full size (quick: a smoke value)
	trials       int           // desired changes measured
	settle       time.Duration // wait before the idle RSS sample
	parallelAPIs int
}

func sizeParams(size string) (params, error) {
	switch size {
	case "default", "":
		return params{devices: 1000, idleDevices: 100, objects: 1000, duration: 10 * time.Second, rates: []float64{10_000, 30_000}, saturate: 45_000, trials: 200, settle: 5 * time.Second, parallelAPIs: 8}, nil
	case "full":
		return params{devices: 1000, idleDevices: 100, objects: 1000, duration: 30 * time.Second, rates: []float64{10_000, 20_000, 30_000}, saturate: 45_000, trials: 1000, settle: 10 * time.Second, parallelAPIs: 8}, nil
	case "quick":
		return params{devices: 50, idleDevices: 10, objects: 100, duration: 2 * time.Second, rates: []float64{1000}, saturate: 3000, trials: 20, settle: time.Second, parallelAPIs: 4}, nil
	}
	return params{}, fmt.Errorf("twinbench: unknown size %q (default, full, quick)", size)
}

// satWindow is how many updates a device may have unanswered in the saturating load.
const satWindow = 8

const (
	ns    = "bench"
	node  = "bench-edge"
	model = "bench-model"
)

// Run measures the twin path and prints a table to w: durable twin updates per second and
// publish → result latency through a real tether-edge (with its cloud) beside bare mochi QoS 1
// ingest with the same clients, cloud desired change → delta at the device, and the agent's
// RSS idle and under load. size is "default", "full" or "quick" (a smoke run).
func Run(ctx context.Context, size string, w io.Writer) (err error) {
	p, err := sizeParams(size)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "twinbench")
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			os.RemoveAll(tmp) // kept on failure: it holds the processes' logs
		}
	}()
	bin, err := binaries(ctx, tmp)
	if err != nil {
		return err
	}
	t := &table{w: w}
	fmt.Fprintf(w, "twin benchmark (%s): %d device clients, %s per load, latencies at %v updates/s offered\n", size, p.devices, p.duration, p.rates)

	// The baseline first, while no tether process runs: bare mochi with the same clients.
	base, err := baseline(ctx, p, tmp)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}

	r := &rig{p: p, tmp: tmp, bin: bin}
	defer r.close()
	if err := r.start(ctx); err != nil {
		return err
	}
	// Idle: idleDevices devices and objects stored objects, idleDevices mappers connected.
	if err := r.populate(ctx, p.idleDevices, p.objects-p.idleDevices-1); err != nil {
		return err
	}
	idle, err := r.connect(ctx, 0, p.idleDevices)
	if err != nil {
		return err
	}
	for _, c := range idle { // one report each, so each twin exists
		c.send(c.nextEvent())
	}
	if err := waitUntil(ctx, 30*time.Second, func() bool { return r.answeredAll(idle) }); err != nil {
		return fmt.Errorf("idle reports: %w", err)
	}
	if err := r.drained(ctx); err != nil {
		return err
	}
	sleep(ctx, p.settle)
	idleMem, err := r.edge.mem()
	if err != nil {
		return err
	}
	closeAll(idle)

	// Load: every device, the cloud paused (on a real deployment it runs elsewhere; here it would
	// take half the CPU the agent is measured on), reports pile up coalesced in the outbox.
	if err := r.populate(ctx, p.devices, 0); err != nil {
		return err
	}
	clients, err := r.connect(ctx, 0, p.devices)
	if err != nil {
		return err
	}
	defer closeAll(clients)
	r.cloud.pause()
	peak := &rssSampler{p: r.edge}
	stopSampling := peak.run()
	prof := r.profiler(p.duration, "closed")
	maxLoad := drive(ctx, clients, p.duration, 0, 0, r.edge)
	prof()
	mem, _ := sim.Scrape(r.meta+"/metrics", "go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes")
	var paced []load
	var pacedCommits []commitHist // the edge store's commits during each paced load
	for _, rate := range p.rates {
		prof := r.profiler(p.duration, fmt.Sprintf("paced-%.0f", rate))
		before, err0 := r.commits()
		paced = append(paced, drive(ctx, clients, p.duration, rate, 0, r.edge))
		after, err1 := r.commits()
		if err := errors.Join(err0, err1); err != nil {
			return err
		}
		pacedCommits = append(pacedCommits, after.since(before))
		prof()
	}
	// Devices do not wait for a result before their next report: offered more than it can do
	// (each device on its own clock, at most satWindow unanswered), the agent shows its
	// throughput with pipelining. Last, so that what it leaves queued delays no other figure.
	prof = r.profiler(p.duration, "saturated")
	sat := drive(ctx, clients, p.duration, p.saturate, satWindow, r.edge)
	prof()
	stopSampling()
	r.cloud.resume()
	coalesced := r.edgeMetric("tether_edge_twin_outbox_coalesced_total")

	t.row("bare mochi QoS 1 ingest, closed loop (1 in flight per client)", base.closed.rate(), "msg/s", 0, "",
		fmt.Sprintf("p99 %.2f ms, %.1f µs server CPU/msg; %s", base.closed.p(0.99), base.closed.cpuPer(), base.closed.busy()))
	t.row("bare mochi, publish answered by mochi on the result topic, closed loop", base.echo.rate(), "msg/s", 0, "",
		fmt.Sprintf("p99 %.2f ms, %.1f µs server CPU/msg: the twin path's packets, none of its work; %s", base.echo.p(0.99), base.echo.cpuPer(), base.echo.busy()))
	t.row(fmt.Sprintf("bare bbolt durable writes, %d writers (DB.Batch), closed loop", p.devices), base.bolt.Rate, "writes/s", 0, "",
		fmt.Sprintf("p99 %.2f ms; at %.0f writes/s offered p50 %.2f ms, p99 %.2f ms: bbolt's own group commit under 1000 writers", base.bolt.P(0.99), p.rates[0], base.boltPaced.P(0.5), base.boltPaced.P(0.99)))
	t.row(fmt.Sprintf("twin/update durable with success result, %.0f/s offered", p.saturate), sat.rate(), "upd/s", base.closed.rate(), "≥ 30000",
		fmt.Sprintf("open loop, each device on its own clock, at most %d unanswered: results received per second; %d errors, %.1f µs agent CPU/upd; %s", satWindow, sat.errors, sat.cpuPer(), sat.busy()))
	t.row("twin/update durable with success result, closed loop", maxLoad.rate(), "upd/s", base.closed.rate(), "",
		fmt.Sprintf("1 in flight per device; p99 %.2f ms at saturation, %d errors, %.1f µs agent CPU/upd; %s", maxLoad.p(0.99), maxLoad.errors, maxLoad.cpuPer(), maxLoad.busy()))
	t.row(fmt.Sprintf("bare mochi, publish → result answered by mochi, p99 at %.0f msg/s offered", p.rates[0]), base.echoPaced.p(0.99), "ms", 0, "",
		fmt.Sprintf("achieved %.0f msg/s, p50 %.2f ms, %.1f µs server CPU/msg; %s", base.echoPaced.rate(), base.echoPaced.p(0.5), base.echoPaced.cpuPer(), base.echoPaced.busy()))
	for i, rate := range p.rates {
		b, l := base.paced[i], paced[i]
		t.row(fmt.Sprintf("bare mochi publish → PUBACK p99 at %.0f msg/s offered", rate), b.p(0.99), "ms", 0, "",
			fmt.Sprintf("achieved %.0f msg/s, p50 %.2f ms, %.1f µs server CPU/msg; %s", b.rate(), b.p(0.5), b.cpuPer(), b.busy()))
		t.row(fmt.Sprintf("twin/update publish → result p99 at %.0f upd/s offered", rate), l.p(0.99), "ms", b.p(0.99), "≤ 10 ms",
			fmt.Sprintf("achieved %.0f upd/s, p50 %.2f ms, %d errors, %.1f µs agent CPU/upd; %s; %s during the load and its warm-up second", l.rate(), l.p(0.5), l.errors, l.cpuPer(), l.busy(), pacedCommits[i]))
	}
	t.row(fmt.Sprintf("edge RSS idle (%d devices, %d stored objects)", p.idleDevices, p.objects), idleMem.rss/(1<<20), "MiB", 0, "≤ 40 MB",
		fmt.Sprintf("anonymous %.0f MiB, file-backed %.0f MiB", idleMem.anon/(1<<20), idleMem.file/(1<<20)))
	t.row(fmt.Sprintf("edge RSS under load (%d device clients), peak", p.devices), peak.max.rss/(1<<20), "MiB", base.rss.rss/(1<<20), "≤ 64 MB",
		fmt.Sprintf("baseline: bare mochi's peak under its loads; at the peak anonymous %.0f MiB, file-backed %.0f MiB; Go stacks %.0f MiB, heap in use %.0f MiB after the closed loop; %.0f reports coalesced in the outbox",
			peak.max.anon/(1<<20), peak.max.file/(1<<20), mem["go_memstats_stack_inuse_bytes"]/(1<<20), mem["go_memstats_heap_inuse_bytes"]/(1<<20), coalesced))

	// Desired → delta, with the cloud running and the outbox drained.
	if err := r.drained(ctx); err != nil {
		return err
	}
	lat, err := r.desired(ctx, clients)
	if err != nil {
		return fmt.Errorf("desired → delta: %w", err)
	}
	t.row(fmt.Sprintf("cloud desired change → delta at the device, %d devices", p.devices), percentile(lat, 0.99), "ms", 0, "",
		fmt.Sprintf("p50 %.2f ms, %d changes", percentile(lat, 0.5), len(lat)))
	return nil
}

// profiler, when $TWINBENCH_PPROF names a directory, takes a CPU profile of the edge over the
// measured window of a load that starts now (drive warms up for a second), and returns a
// function that waits for it and then takes heap and goroutine profiles into that directory as
// <name>.cpu.pprof, <name>.heap.pprof and <name>.goroutine.pprof, with its metrics as
// <name>.metrics.txt. Without it, it does nothing.
func (r *rig) profiler(d time.Duration, name string) (wait func()) {
	dir := os.Getenv("TWINBENCH_PPROF")
	if dir == "" {
		return func() {}
	}
	save := func(path, file string) {
		resp, err := http.Get(r.meta + path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "twinbench: profile %s: %v\n", file, err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(dir, file))
		if err != nil {
			fmt.Fprintf(os.Stderr, "twinbench: profile %s: %v\n", file, err)
			return
		}
		defer f.Close()
		io.Copy(f, resp.Body)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(time.Second)
		save(fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(d/time.Second)-1)), name+".cpu.pprof")
		save("/debug/pprof/heap", name+".heap.pprof")
		save("/debug/pprof/goroutine", name+".goroutine.pprof")
		save("/metrics", name+".metrics.txt")
	}()
	return func() { <-done }
}

// table prints result rows as they come.
type table struct{ w io.Writer }

func (t *table) row(name string, v float64, unit string, baseline float64, goal, note string) {
	s := fmt.Sprintf("%-66s %10.2f %-6s", name, v, unit)
	if baseline > 0 {
		s += fmt.Sprintf(" baseline %10.2f", baseline)
	}
	if goal != "" {
		s += "  goal " + goal
	}
	if note != "" {
		s += "  (" + note + ")"
	}
	fmt.Fprintln(t.w, s)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// rig is a tether-cloud and a tether-edge.
type rig struct {
	p                 params
	tmp, bin          string
	cloud, edge       *proc
	api, meta, broker string
	made              int // devices created so far
}

func (r *rig) close() {
	r.edge.stop()
	r.cloud.stop()
}

func (r *rig) start(ctx context.Context) error {
	addrs := make([]string, 5)
	for i := range addrs {
		a, err := freeport.Addr()
		if err != nil {
			return err
		}
		addrs[i] = a
	}
	hub, join, api, meta, broker := addrs[0], addrs[1], addrs[2], addrs[3], addrs[4]
	cdir := filepath.Join(r.tmp, "cloud")
	os.MkdirAll(cdir, 0o700)
	var err error
	r.cloud, err = startProc(r.bin, "tether-cloud", filepath.Join(r.tmp, "cloud.log"), nil, "serve", "--data-dir", cdir,
		"--hub-listen", hub, "--join-listen", join, "--api-listen", api, "--advertise-address", "127.0.0.1", "--log-level", "warn")
	if err != nil {
		return err
	}
	r.api = "http://" + api
	if err := waitHTTP(ctx, r.api+"/readyz", 30*time.Second); err != nil {
		return fmt.Errorf("cloud: %w (see its log)", err)
	}
	c := &sim.Cloud{Bin: r.bin, API: api}
	tok, err := c.Token(time.Hour)
	if err != nil {
		return err
	}
	args := []string{"run", "--node-name", node,
		"--cloud", hub, "--join", "https://" + join, "--token", tok.String(), "--data-dir", filepath.Join(r.tmp, "edge"),
		"--metaserver-listen", meta, "--mqtt-listen", broker, "--log-level", "warn", "--reconnect-max", "1s"}
	// $TWINBENCH_EDGE_ARGS adds flags to the agent's command line, to measure its settings.
	args = append(args, strings.Fields(os.Getenv("TWINBENCH_EDGE_ARGS"))...)
	// $TWINBENCH_EDGE_ENV adds variables to its environment (GOGC=200, say).
	r.edge, err = startProc(r.bin, "tether-edge", filepath.Join(r.tmp, "edge.log"), strings.Fields(os.Getenv("TWINBENCH_EDGE_ENV")), args...)
	if err != nil {
		return err
	}
	r.meta, r.broker = "http://"+meta, broker
	if err := waitHTTP(ctx, r.meta+"/readyz", 30*time.Second); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	if err := sim.EnsureNamespace(r.api, ns); err != nil {
		return err
	}
	_, err = sim.Request(r.api, http.MethodPost, "/apis/devices.kubeedge.io/v1beta1/namespaces/"+ns+"/devicemodels", "application/json",
		mustJSON(map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
			"metadata": map[string]any{"name": model, "namespace": ns},
			"spec": map[string]any{"properties": []any{
				map[string]any{"name": "temperature", "type": "INT", "accessMode": "ReadWrite"},
				map[string]any{"name": "humidity", "type": "FLOAT", "accessMode": "ReadOnly"},
			}}}))
	return err
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func deviceName(i int) string { return fmt.Sprintf("dev-%05d", i) }

// populate creates Devices until there are devices, and extra Services (which reach every
// node), then waits until the edge serves them.
func (r *rig) populate(ctx context.Context, devices, services int) error {
	jobs := make(chan func() error)
	errc := make(chan error, r.p.parallelAPIs)
	var wg sync.WaitGroup
	for range r.p.parallelAPIs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range jobs {
				if err := job(); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		}()
	}
	for i := r.made; i < devices; i++ {
		jobs <- func() error {
			_, err := sim.Request(r.api, http.MethodPost, "/apis/devices.kubeedge.io/v1beta1/namespaces/"+ns+"/devices", "application/json",
				mustJSON(map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
					"metadata": map[string]any{"name": deviceName(i), "namespace": ns},
					"spec": map[string]any{"nodeName": node, "deviceModelRef": map[string]any{"name": model},
						"properties": []any{map[string]any{"name": "temperature"}, map[string]any{"name": "humidity"}}}}))
			return err
		}
	}
	for i := range services {
		jobs <- func() error {
			_, err := sim.Request(r.api, http.MethodPost, "/api/v1/namespaces/"+ns+"/services", "application/json",
				mustJSON(map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": fmt.Sprintf("svc-%05d", i), "namespace": ns},
					"spec": map[string]any{"ports": []any{map[string]any{"port": 80}}}}))
			return err
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	r.made = max(r.made, devices)
	return waitUntil(ctx, 60*time.Second, func() bool {
		return r.edgeMetric("tether_edge_twin_devices") >= float64(devices)
	})
}

func (r *rig) edgeMetric(name string) float64 {
	m, err := sim.Scrape(r.meta+"/metrics", name)
	if err != nil {
		return -1
	}
	return m[name]
}

// drained waits until the edge is connected and its outbox is empty.
func (r *rig) drained(ctx context.Context) error {
	var seen map[string]float64
	var serr error
	err := waitUntil(ctx, 120*time.Second, func() bool {
		seen, serr = sim.Scrape(r.meta+"/metrics", "tether_edge_hub_connected", "tether_edge_outbox_depth")
		return serr == nil && seen["tether_edge_hub_connected"] == 1 && seen["tether_edge_outbox_depth"] == 0
	})
	if err != nil {
		more, _ := sim.Scrape(r.meta+"/metrics", "tether_edge_hub_connects_total", "tether_edge_hub_disconnects_total",
			"tether_edge_hub_reports_sent_total", "tether_edge_hub_report_acks_total", "tether_edge_outbox_oldest_age_seconds")
		return fmt.Errorf("edge outbox did not drain: %w (last seen %v %v; then %v; edge log %s)%s", err, seen, serr, more, filepath.Join(r.tmp, "edge.log"), r.senderStacks())
	}
	return nil
}

// senderStacks saves every goroutine of the edge to edge-goroutines.txt beside its log and
// returns the stacks of its hub session's goroutines, which are what keep an outbox from draining.
func (r *rig) senderStacks() string {
	resp, err := http.Get(r.meta + "/debug/pprof/goroutine?debug=2")
	if err != nil {
		return "; no goroutine dump: " + err.Error()
	}
	defer resp.Body.Close()
	dump, _ := io.ReadAll(resp.Body)
	path := filepath.Join(r.tmp, "edge-goroutines.txt")
	os.WriteFile(path, dump, 0o644)
	var keep []string
	for _, g := range strings.Split(string(dump), "\n\n") {
		if strings.Contains(g, "edgehub.") || strings.Contains(g, "edgestore.(*Store).writer") {
			keep = append(keep, g)
		}
	}
	return fmt.Sprintf("; all goroutines in %s; the hub session's and the store writer's:\n%s", path, strings.Join(keep, "\n\n"))
}

// device is one device client: a twin device on tether-edge, or a publisher on the baseline.
type device struct {
	*client
	id      string // namespace/name
	topic   string // where it publishes
	twin    bool   // answers are results (by event id), not PUBACKs
	n       atomic.Uint64
	wake    chan struct{}
	measure *window

	mu     sync.Mutex // guards below; written by the reader goroutine
	lat    []float64  // ms, requests sent inside the window
	ok     int        // answered inside the window
	errs   int
	deltas chan []byte // twin/update/delta payloads, while desired changes are measured
}

// window is the measured interval.
type window struct{ start, end time.Time }

func (d *device) nextEvent() uint64 { return d.n.Add(1) }

// send publishes update n: a twin/update whose value changes every time (an unchanged value
// is no write at the edge), and the same bytes to the baseline.
func (d *device) send(n uint64) error {
	payload := fmt.Appendf(nil, `{"event_id":"%d","timestamp":%d,"twin":{"temperature":{"actual":{"value":"%d"}}}}`, n, time.Now().UnixMilli(), n)
	return d.publish(d.topic, payload, n, !d.twin)
}

// answered records an answer to request key.
func (d *device) answered(key uint64, isErr bool) {
	sent, ok := d.client.answered(key)
	if !ok {
		return
	}
	now := time.Now()
	d.mu.Lock()
	if w := d.measure; w != nil && !sent.Before(w.start) && sent.Before(w.end) {
		d.lat = append(d.lat, float64(now.Sub(sent))/float64(time.Millisecond))
		if isErr {
			d.errs++
		} else if now.Before(w.end) {
			d.ok++
		}
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *device) run() {
	d.readLoop(func(pid uint16) {
		if !d.twin {
			d.answered(uint64(pid), false)
		}
	}, func(topic string, payload []byte) {
		if strings.HasSuffix(topic, "/delta") {
			d.mu.Lock()
			ch := d.deltas
			d.mu.Unlock()
			if ch != nil {
				select {
				case ch <- bytes.Clone(payload):
				default:
				}
			}
			return
		}
		if n, isErr, ok := eventNumber(payload); ok {
			d.answered(n, isErr)
		}
	})
}

// connect connects device clients [from, to) to the edge, each subscribed to its result and
// delta topics as a KubeEdge mapper is.
func (r *rig) connect(ctx context.Context, from, to int) ([]*device, error) {
	return connectDevices(ctx, r.broker, from, to, true)
}

func connectDevices(ctx context.Context, addr string, from, to int, twin bool) ([]*device, error) {
	out := make([]*device, 0, to-from)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	sem := make(chan struct{}, 64)
	for i := from; i < to; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id := ns + "/" + deviceName(i)
			c, err := dialClient(addr, fmt.Sprintf("bench-%d-%t", i, twin), 0)
			if err == nil && twin {
				err = c.subscribe("$hw/events/device/"+id+"/twin/update/result", "$hw/events/device/"+id+"/twin/update/delta")
			} else if err == nil {
				c.nc.SetReadDeadline(time.Time{})
			}
			if err != nil {
				select {
				case errc <- err:
				default:
				}
				return
			}
			d := &device{client: c, id: id, twin: twin, wake: make(chan struct{}, 1)}
			d.topic = "bench/" + id
			if twin {
				d.topic = "$hw/events/device/" + id + "/twin/update"
			}
			go d.run()
			mu.Lock()
			out = append(out, d)
			mu.Unlock()
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		closeAll(out)
		return nil, err
	default:
	}
	return out, ctx.Err()
}

func closeAll(ds []*device) {
	for _, d := range ds {
		d.close()
	}
}

func (r *rig) answeredAll(ds []*device) bool {
	for _, d := range ds {
		d.client.mu.Lock()
		n := len(d.client.sent)
		d.client.mu.Unlock()
		if n > 0 {
			return false
		}
	}
	return true
}

// load is the outcome of one drive.
type load struct {
	lat        []float64
	ok, errors int
	d          time.Duration
	cpu        float64 // CPU seconds the server used in the window
	others     float64 // CPU seconds the rest of the machine used, besides server and clients
}

func (l load) rate() float64       { return float64(l.ok) / l.d.Seconds() }
func (l load) p(q float64) float64 { return percentile(l.lat, q) }

// busy describes the CPU the server and the rest of the machine (other than this benchmark's
// clients) used in the window, in CPUs: a figure taken while other programs took CPU is lower
// than the server can do.
func (l load) busy() string {
	return fmt.Sprintf("server %.2f CPU, others %.2f CPU", l.cpu/l.d.Seconds(), l.others/l.d.Seconds())
}

// cpuPer is the server's CPU time per answered request, in µs: less sensitive to what else the
// machine runs than the rate is.
func (l load) cpuPer() float64 {
	if l.ok == 0 {
		return 0
	}
	return l.cpu / float64(l.ok) * 1e6
}

// drive runs the devices for d: closed loop when rate is 0 (each device keeps one request
// outstanding, sending the next when the answer comes: the most the server sustains), open
// loop at rate requests/s over all devices otherwise (each device on its own schedule, whether
// answers come or not: latency at a given load).
// With maxUnanswered > 0 a device skips a tick of its schedule while that many of its requests
// are unanswered, so a rate above capacity builds no backlog that outlives the run.
func drive(ctx context.Context, ds []*device, d time.Duration, rate float64, maxUnanswered int, server *proc) load {
	warm := time.Second
	w := &window{start: time.Now().Add(warm)}
	w.end = w.start.Add(d)
	cpu := make(chan [3]float64, 1)
	go func() {
		time.Sleep(time.Until(w.start))
		c0, err0 := server.cpu()
		m0, err2 := figure.MachineCPU()
		s0, err4 := figure.SelfCPU()
		time.Sleep(time.Until(w.end))
		c1, err1 := server.cpu()
		m1, err3 := figure.MachineCPU()
		s1, err5 := figure.SelfCPU()
		if errors.Join(err0, err1, err2, err3, err4, err5) != nil {
			cpu <- [3]float64{}
			return
		}
		cpu <- [3]float64{c1 - c0, m1 - m0, s1 - s0}
	}()
	for _, dv := range ds {
		dv.mu.Lock()
		dv.measure, dv.lat, dv.ok, dv.errs = w, nil, 0, 0
		dv.mu.Unlock()
	}
	var wg sync.WaitGroup
	for _, dv := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if rate == 0 {
				for time.Now().Before(w.end) && ctx.Err() == nil {
					if dv.send(dv.nextEvent()) != nil {
						return
					}
					select {
					case <-dv.wake:
					case <-time.After(10 * time.Second):
						return
					}
				}
				return
			}
			interval := time.Duration(float64(len(ds)) / rate * float64(time.Second))
			next := time.Now().Add(time.Duration(rand.Int64N(int64(interval))))
			for next.Before(w.end) && ctx.Err() == nil {
				time.Sleep(time.Until(next))
				next = next.Add(interval)
				if maxUnanswered > 0 {
					dv.client.mu.Lock()
					full := len(dv.client.sent) >= maxUnanswered
					dv.client.mu.Unlock()
					if full {
						continue
					}
				}
				if dv.send(dv.nextEvent()) != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	// Answers to the last requests. An offered rate above capacity leaves a long queue in the
	// devices' sockets; the next load must not start behind it (its figures would be the
	// queue's), so this waits it out.
	waitUntil(ctx, time.Minute, func() bool {
		for _, dv := range ds {
			dv.client.mu.Lock()
			n := len(dv.client.sent)
			dv.client.mu.Unlock()
			if n > 0 {
				return false
			}
		}
		return true
	})
	var out load
	out.d = d
	c := <-cpu
	out.cpu, out.others = c[0], max(0, c[1]-c[0]-c[2])
	for _, dv := range ds {
		dv.mu.Lock()
		out.lat = append(out.lat, dv.lat...)
		out.ok += dv.ok
		out.errors += dv.errs
		dv.measure = nil
		dv.mu.Unlock()
		dv.client.mu.Lock()
		clear(dv.client.sent) // unanswered ones are not waited for again
		dv.client.mu.Unlock()
	}
	return out
}

// baselines are bare mochi's figures.
type baselines struct {
	closed load
	paced  []load // one per offered rate
	echo   load   // closed loop, each publish answered on its result topic (mochiserver's echo)
	// echoPaced is echo at the first offered rate: the latency mochi alone allows the twin path.
	echoPaced load
	rss       memSample // the server's peak over all of the above
	// Bare bbolt: as many writers as devices, each putting a twin-sized value and waiting until
	// it is durable (bbolt's group commit); closed loop and at the first offered rate.
	bolt, boltPaced boltbase.Figures
}

// baseline runs bare mochi (internal/mochiserver) as a process of its own and drives the same
// clients against it, publishing QoS 1 to a topic nobody subscribes to.
func baseline(ctx context.Context, p params, tmp string) (baselines, error) {
	bin := filepath.Join(tmp, "mochiserver")
	if out, err := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "github.com/tetherhub/tether/bench/twinbench/internal/mochiserver").CombinedOutput(); err != nil {
		return baselines{}, fmt.Errorf("build the baseline server: %v: %s", err, out)
	}
	addr, err := freeport.Addr()
	if err != nil {
		return baselines{}, err
	}
	srv, err := startProc(tmp, "mochiserver", filepath.Join(tmp, "mochi.log"), nil, "--listen", addr)
	if err != nil {
		return baselines{}, err
	}
	defer srv.stop()
	if err := waitUntil(ctx, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		return baselines{}, err
	}
	ds, err := connectDevices(ctx, addr, 0, p.devices, false)
	if err != nil {
		return baselines{}, err
	}
	var b baselines
	boltLoad := boltbase.Load{Writers: p.devices, Keys: p.devices, ValueSize: 400, Duration: p.duration}
	if b.bolt, err = boltbase.Run(ctx, tmp, boltLoad); err != nil {
		return b, fmt.Errorf("bare bbolt: %w", err)
	}
	boltLoad.Rate = p.rates[0]
	if b.boltPaced, err = boltbase.Run(ctx, tmp, boltLoad); err != nil {
		return b, fmt.Errorf("bare bbolt: %w", err)
	}
	peak := &rssSampler{p: srv}
	stopSampling := peak.run()
	defer stopSampling()
	b.closed = drive(ctx, ds, p.duration, 0, 0, srv)
	for _, rate := range p.rates {
		b.paced = append(b.paced, drive(ctx, ds, p.duration, rate, 0, srv))
	}
	closeAll(ds)
	// The twin path's packets without its work: the same clients as on the edge (subscribed to
	// their result topics), each update answered by mochi itself with a result publish.
	es, err := connectDevices(ctx, addr, 0, p.devices, true)
	if err != nil {
		return baselines{}, err
	}
	defer closeAll(es)
	b.echo = drive(ctx, es, p.duration, 0, 0, srv)
	b.echoPaced = drive(ctx, es, p.duration, p.rates[0], 0, srv)
	stopSampling()
	b.rss = peak.max
	return b, nil
}

// desired changes the desired temperature of one device after another through the cloud API
// and measures until the delta carrying the new value reaches that device.
func (r *rig) desired(ctx context.Context, ds []*device) ([]float64, error) {
	var lat []float64
	const workers = 4
	var mu sync.Mutex
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	trials := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range trials {
				d := ds[i%len(ds)]
				ch := make(chan []byte, 16)
				d.mu.Lock()
				d.deltas = ch
				d.mu.Unlock()
				value := strconv.Itoa(1_000_000 + i)
				patch := fmt.Sprintf(`{"spec":{"properties":[{"name":"temperature","desired":{"value":%q}},{"name":"humidity"}]}}`, value)
				start := time.Now()
				_, err := sim.Request(r.api, http.MethodPatch, "/apis/devices.kubeedge.io/v1beta1/namespaces/"+ns+"/devices/"+strings.TrimPrefix(d.id, ns+"/"),
					"application/merge-patch+json", []byte(patch))
				if err != nil {
					errc <- err
					return
				}
				want := []byte(`"delta":{"temperature":"` + value + `"}`)
				timeout := time.After(30 * time.Second)
			wait:
				for {
					select {
					case b := <-ch:
						if bytes.Contains(b, want) {
							mu.Lock()
							lat = append(lat, float64(time.Since(start))/float64(time.Millisecond))
							mu.Unlock()
							break wait
						}
					case <-timeout:
						errc <- fmt.Errorf("no delta %s at %s", value, d.id)
						return
					}
				}
				d.mu.Lock()
				d.deltas = nil
				d.mu.Unlock()
			}
		}()
	}
	// Distinct devices in flight at once: trial i and i+workers touch different devices as long
	// as there are more devices than workers.
	for i := range r.p.trials {
		select {
		case trials <- i:
		case err := <-errc:
			close(trials)
			wg.Wait()
			return nil, err
		case <-ctx.Done():
			close(trials)
			wg.Wait()
			return nil, ctx.Err()
		}
	}
	close(trials)
	wg.Wait()
	select {
	case err := <-errc:
		return nil, err
	default:
	}
	if len(lat) == 0 {
		return nil, errors.New("no delta measured")
	}
	return lat, nil
}

// rssSampler keeps the sample with the largest RSS seen while running.
type rssSampler struct {
	p   *proc
	max memSample
}

func (s *rssSampler) run() (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if m, err := s.p.mem(); err == nil && m.rss > s.max.rss {
				s.max = m
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return sync.OnceFunc(func() { close(done); <-finished })
}

func percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q * float64(len(s)-1))
	return s[i]
}
