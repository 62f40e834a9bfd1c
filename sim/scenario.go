package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/edgehub"
	"github.com/tetherhub/tether/pki"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/twin"
)

// Scenarios tether-sim runs.
var scenarioNames = []string{"connect", "steady", "fanout", "twin", "restart", "churn"}

// Scenarios lists the scenario names.
func Scenarios() []string { return append([]string(nil), scenarioNames...) }

// Config is one simulation.
type Config struct {
	Cloud []string // hub addresses
	// Join holds the join service's URLs, one per replica: nodes join through the first that
	// accepts a connection at the start.
	Join []string
	// API holds the cloud API's base URLs, one per replica: setup and metrics go to the first
	// that answers, and when it stops answering the progress moves on to the next that does.
	API   []string
	Token string // fleet token; made through the API when empty and the API is on loopback
	// StartCloud, if set, is a directory holding tether-cloud: the simulator starts (and for
	// restart, kills and restarts) its own cloud with its data in DataDir.
	StartCloud string
	DataDir    string

	Nodes          int
	DevicesPerNode int
	Scenario       string
	Duration       time.Duration
	ReportInterval time.Duration // steady: how often each device reports (0: idle)
	Changes        int           // fanout: changes measured
	ChurnShare     float64       // churn: share of nodes that reconnect each period
	ChurnEvery     time.Duration
	LocalAddrs     int // spread edges over 127.0.0.1 … 127.0.0.N
	Hub            edgehub.Config
}

// DefaultConfig returns defaults for a local run.
func DefaultConfig() Config {
	h := edgehub.DefaultConfig()
	h.Agent = "tether-sim"
	return Config{
		Cloud: []string{"127.0.0.1:10000"}, Join: []string{"https://127.0.0.1:10002"}, API: []string{"http://127.0.0.1:10080"},
		Nodes: 100, DevicesPerNode: 1, Scenario: "connect", Duration: 30 * time.Second,
		ReportInterval: 10 * time.Second, Changes: 50, ChurnShare: 0.1, ChurnEvery: time.Minute, LocalAddrs: 8, Hub: h,
	}
}

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	ok := false
	for _, s := range scenarioNames {
		ok = ok || s == c.Scenario
	}
	switch {
	case !ok:
		return fmt.Errorf("scenario: %q is not one of %s", c.Scenario, strings.Join(scenarioNames, ", "))
	case c.Nodes < 1:
		return fmt.Errorf("nodes: must be at least 1, got %d", c.Nodes)
	case c.DevicesPerNode < 0:
		return fmt.Errorf("devices-per-node: must not be negative, got %d", c.DevicesPerNode)
	case c.Duration <= 0:
		return fmt.Errorf("duration: must be positive, got %s", c.Duration)
	case c.Scenario == "restart" && c.StartCloud == "":
		return errors.New("scenario restart: the simulator must own the cloud to kill it; give --start-cloud")
	case c.ChurnShare <= 0 || c.ChurnShare > 1:
		return fmt.Errorf("churn-share: must be in (0, 1], got %g", c.ChurnShare)
	case c.LocalAddrs < 1 || c.LocalAddrs > 254:
		return fmt.Errorf("local-addrs: must be 1..254, got %d", c.LocalAddrs)
	}
	if c.StartCloud == "" {
		if len(c.Cloud) == 0 || len(c.Join) == 0 || len(c.API) == 0 {
			return errors.New("cloud, join and api are required unless --start-cloud is given")
		}
		for _, a := range c.Cloud {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("cloud: %q: %v", a, err)
			}
		}
	}
	h := c.Hub
	h.Cloud = []string{"127.0.0.1:1"} // the fleet fills in the real addresses
	return h.Validate()
}

// run is the state of one simulation.
type run struct {
	cfg     Config
	log     zerolog.Logger
	out     io.Writer
	rep     *Report
	cloud   *Cloud // when the simulator owns it
	fleet   *Fleet
	ctx     context.Context
	start   time.Time
	cluster string
	errs    atomic.Int64
	phase   atomic.Pointer[string]
	apiAt   atomic.Int32 // which of cfg.API is read
	wire    Wire         // bytes on the simulated edges' connections
	// joined is fleet, published for the sampler goroutine once the joins are done.
	joined atomic.Pointer[Fleet]
	// joining is how many nodes have joined so far, for progress while fleet is not yet there.
	joining atomic.Int64
	// joinedInUse is the cloud's Go memory in use (heap spans and stacks, after a GC) with
	// every node joined and none connected, taken for an idle steady run: what connected
	// nodes cost is measured from it. 0 when not taken.
	joinedInUse float64
}

// Run runs the configured scenario and returns its report. Progress lines go to out.
func Run(ctx context.Context, cfg Config, log zerolog.Logger, out io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, log: log, out: out, ctx: ctx, start: time.Now(),
		rep: &Report{Scenario: cfg.Scenario, Started: time.Now().UTC(), Nodes: cfg.Nodes, DevicesPerNode: cfg.DevicesPerNode, Latency: map[string][]float64{}}}
	defer func() { r.rep.Errors = int(r.errs.Load()) }()
	if err := r.setup(); err != nil {
		return r.rep, err
	}
	if r.cloud != nil {
		defer r.cloud.Stop()
	}
	sctx, stopSampler := context.WithCancel(ctx)
	samplerDone := make(chan struct{})
	go func() { defer close(samplerDone); r.sample(sctx) }()
	defer func() { stopSampler(); <-samplerDone }()

	if err := r.joinAndConnect(); err != nil {
		return r.rep, err
	}
	// Stopped before the cloud it owns (deferred above, so run after this): its edges would
	// otherwise see the cloud go and start reconnecting.
	defer r.fleet.Stop()
	sessions0, at0 := r.fleet.Sessions(), r.apiAt.Load()
	fctx, stopFleet := context.WithCancel(ctx)
	defer stopFleet()
	var err error
	switch cfg.Scenario {
	case "connect":
	case "steady":
		err = r.steady(fctx)
	case "fanout":
		err = r.fanout(fctx)
	case "twin":
		err = r.twin(fctx)
	case "restart":
		err = r.restart(fctx)
	case "churn":
		err = r.churn(fctx)
	}
	if err == nil {
		err = r.converge()
	}
	// A replica that went away (the sampler moved to another) took its sessions with it.
	r.countTrouble(sessions0, r.apiAt.Load() != at0)
	r.rep.Seconds = time.Since(r.start).Seconds()
	return r.rep, err
}

// countTrouble reports what went wrong on the edges without failing the run: sessions opened
// again after the connect phase (an error unless the scenario ends sessions itself, as restart
// and churn do, or a replica the run read went away) and changes received out of order (always
// an error).
func (r *run) countTrouble(sessions0 int64, replicaGone bool) {
	again := r.fleet.Sessions() - sessions0
	r.rep.figure("sessions opened again after connecting (reconnects)", float64(again), "sessions", "")
	if again > 0 && !replicaGone && r.cfg.Scenario != "restart" && r.cfg.Scenario != "churn" {
		r.say("%d sessions were opened again during the run: edges lost their connection (counted as errors)", again)
		r.errs.Add(again)
	}
	if n := r.fleet.Stale(); n > 0 {
		r.say("edges received %d changes older than what they held (counted as errors)", n)
		r.errs.Add(int64(n))
	}
}

func (r *run) setPhase(p string) {
	r.phase.Store(&p)
	r.say("%s", p)
}

func (r *run) say(format string, a ...any) {
	fmt.Fprintf(r.out, "[%6.1fs] %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, a...))
}

func (r *run) api() string {
	if r.cloud != nil {
		return r.cloud.URL("")
	}
	return strings.TrimSuffix(r.cfg.API[r.apiAt.Load()], "/")
}

// firstAnswering returns the index of the first of urls, from from on and wrapping round, that
// probe accepts, or -1 and every probe's error.
func firstAnswering(urls []string, from int, probe func(string) error) (int, error) {
	var errs []error
	for i := range urls {
		at := (from + i) % len(urls)
		err := probe(urls[at])
		if err == nil {
			return at, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", urls[at], err))
	}
	return -1, errors.Join(errs...)
}

// dialable says whether the host of the URL u accepts a TCP connection within two seconds.
func dialable(u string) error {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return fmt.Errorf("not a URL")
	}
	host := p.Host
	if p.Port() == "" {
		host = net.JoinHostPort(p.Hostname(), "443")
	}
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// metricsAnswer says whether the cloud API at base serves its metrics.
func metricsAnswer(base string) error {
	_, err := Scrape(strings.TrimSuffix(base, "/")+"/metrics", "go_goroutines")
	return err
}

// moveAPI makes r.api() the next configured API after the one in use (wrapping round) whose
// metrics answer, and says so; it is called once the one in use has failed, which is not asked
// again. It reports whether it moved.
func (r *run) moveAPI() bool {
	if r.cloud != nil || len(r.cfg.API) < 2 {
		return false
	}
	from := int(r.apiAt.Load())
	at, _ := firstAnswering(r.cfg.API, from+1, metricsAnswer)
	if at < 0 || at == from {
		return false
	}
	r.say("the cloud API at %s does not answer; reading %s from now on", r.api(), r.cfg.API[at])
	r.apiAt.Store(int32(at))
	return true
}

func (r *run) setup() error {
	if r.cfg.StartCloud != "" {
		dir := r.cfg.DataDir
		if dir == "" {
			d, err := os.MkdirTemp("", "tether-sim-cloud")
			if err != nil {
				return err
			}
			dir = d
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		c, err := StartCloud(r.cfg.StartCloud, dir, "--progress-interval", "2s")
		if err != nil {
			return err
		}
		r.cloud = c
		r.cfg.Cloud, r.cfg.Join = []string{c.Hub}, []string{"https://" + c.Join}
		r.say("started tether-cloud (hub %s, API %s, data %s)", c.Hub, c.API, dir)
	}
	info, err := GetInfo(r.api())
	if err != nil && r.moveAPI() {
		info, err = GetInfo(r.api())
	}
	if err != nil {
		return fmt.Errorf("the cloud API at %s: %w", r.api(), err)
	}
	r.cluster = info.Cluster
	r.rep.CloudVersion = info.Version
	return nil
}

func (r *run) token() (pki.Token, error) {
	if r.cfg.Token != "" {
		return pki.ParseToken(r.cfg.Token)
	}
	body, err := Request(r.api(), http.MethodPost, "/tether/v1/tokens", "application/json", []byte(`{"anyNode":true,"ttl":"2h"}`))
	if err != nil {
		return pki.Token{}, fmt.Errorf("no --token given and none could be made: %w", err)
	}
	var tr struct{ Token string }
	json.Unmarshal(body, &tr)
	return pki.ParseToken(tr.Token)
}

func (r *run) joinAndConnect() error {
	tok, err := r.token()
	if err != nil {
		return err
	}
	addrs := LoopbackAddrs(r.cfg.LocalAddrs)
	r.setPhase(fmt.Sprintf("joining %d nodes", r.cfg.Nodes))
	t0 := time.Now()
	at, err := firstAnswering(r.cfg.Join, 0, dialable)
	if at < 0 {
		return fmt.Errorf("no join service answers: %w", err)
	}
	join := r.cfg.Join[at]
	if at > 0 {
		r.say("the join service at %s does not answer; joining through %s", r.cfg.Join[0], join)
	}
	var retries atomic.Int64
	f, err := JoinFleet(r.ctx, FleetConfig{Cloud: r.cfg.Cloud, Join: join, Token: tok, Nodes: r.cfg.Nodes,
		Prefix: "sim-", LocalAddrs: addrs, Hub: r.cfg.Hub, JoinConcurrency: 32, Wire: &r.wire, JoinRetries: &retries},
		r.log, func(n int) { r.joining.Store(int64(n)) })
	if err != nil {
		r.errs.Add(1)
		return err
	}
	r.rep.figure("join requests tried again (5xx or no answer)", float64(retries.Load()), "requests", "")
	r.fleet = f
	r.joined.Store(f)
	joinTook := time.Since(t0)
	r.rep.figure("join rate", float64(r.cfg.Nodes)/joinTook.Seconds(), "nodes/s", "")
	if r.cfg.Scenario == "steady" && r.cfg.ReportInterval == 0 {
		if m, err := GoMemory(r.api()); err == nil {
			r.joinedInUse = m.InUse
		}
	}
	r.setPhase(fmt.Sprintf("connecting %d nodes", r.cfg.Nodes))
	t1 := time.Now()
	for _, e := range f.Edges {
		e.Start(r.ctx)
	}
	head, err := r.head()
	if err != nil {
		return err
	}
	if err := WaitUntil(r.ctx, 10*time.Minute, func() bool { return f.Connected() == r.cfg.Nodes && f.Synced(r.cluster, head) == r.cfg.Nodes }); err != nil {
		return fmt.Errorf("connecting: %d of %d connected, %d synced: %w", f.Connected(), r.cfg.Nodes, f.Synced(r.cluster, head), err)
	}
	took := time.Since(t1)
	r.rep.figure("connect: all nodes connected and synced", took.Seconds(), "s", "")
	r.rep.figure("connect rate", float64(r.cfg.Nodes)/took.Seconds(), "nodes/s", "")
	return nil
}

// head is the revision a node's cursor must reach to be in sync (see SyncTarget).
func (r *run) head() (uint64, error) {
	return SyncTarget(r.ctx, r.api())
}

// SyncTarget returns the revision a node's cursor must reach to hold everything the cloud has
// routed up to now: the last change the hub routed (changes no node sees, such as heartbeat
// writes, do not move it), once the hub has processed everything the store holds at the call.
func SyncTarget(ctx context.Context, api string) (uint64, error) {
	body, err := Request(api, http.MethodGet, "/api/v1/namespaces?limit=1", "", nil)
	if err != nil {
		return 0, err
	}
	rev := float64(ResourceVersion(body))
	var m map[string]float64
	err = WaitUntil(ctx, time.Minute, func() bool {
		m, err = Scrape(api+"/metrics", "tether_cloud_hub_processed_revision", "tether_cloud_hub_routed_revision")
		return err == nil && m["tether_cloud_hub_processed_revision"] >= rev
	})
	if err != nil {
		return 0, fmt.Errorf("the hub did not process revision %.0f: %w", rev, err)
	}
	return uint64(m["tether_cloud_hub_routed_revision"]), nil
}

// converge checks the end state: every node connected, at the cloud's head, its outbox empty.
func (r *run) converge() error {
	r.setPhase("checking convergence")
	head, err := r.head()
	if err != nil {
		return err
	}
	err = WaitUntil(r.ctx, 2*time.Minute, func() bool {
		if r.fleet.Connected() != r.cfg.Nodes || r.fleet.Synced(r.cluster, head) != r.cfg.Nodes {
			return false
		}
		for _, e := range r.fleet.Edges {
			if e.Store.OutboxLen() > 0 {
				return false
			}
		}
		return true
	})
	r.rep.Converged = err == nil
	if err != nil {
		return fmt.Errorf("not converged: %d connected, %d synced to %d: %w", r.fleet.Connected(), r.fleet.Synced(r.cluster, head), head, err)
	}
	return nil
}

// sample records the cloud's figures and the fleet's connections every second.
func (r *run) sample(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastCPU float64
	var lastAt time.Time
	progress := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := Sample{T: time.Since(r.start).Seconds()}
		if f := r.joined.Load(); f != nil {
			s.Connected = f.Connected()
		}
		metrics := func() (map[string]float64, error) {
			return Scrape(r.api()+"/metrics", "process_resident_memory_bytes", "process_cpu_seconds_total", "go_goroutines",
				"go_memstats_heap_inuse_bytes", "tether_cloud_hub_connected_nodes")
		}
		m, err := metrics()
		if err != nil && r.moveAPI() {
			// The replica read is gone (a failover); another's figures from now on, and its CPU
			// counter is not compared with the gone one's.
			lastAt = time.Time{}
			m, err = metrics()
		}
		scraped := err == nil && len(m) > 0
		s.CloudScraped = scraped
		if scraped {
			s.CloudRSS = m["process_resident_memory_bytes"]
			s.CloudHeap = m["go_memstats_heap_inuse_bytes"]
			s.Goroutines = m["go_goroutines"]
			cpu := m["process_cpu_seconds_total"]
			if !lastAt.IsZero() && cpu >= lastCPU {
				s.CloudCPU = (cpu - lastCPU) / time.Since(lastAt).Seconds() / float64(runtime.NumCPU()) * 100
				s.CloudCPUKnown = true
			}
			lastCPU, lastAt = cpu, time.Now()
			s.HubConnected = m["tether_cloud_hub_connected_nodes"]
		}
		r.rep.add(s)
		if progress++; progress%5 == 0 {
			phase := ""
			if p := r.phase.Load(); p != nil {
				phase = *p
			}
			cloud := "the cloud's metrics unreachable at " + r.api()
			if len(r.cfg.API) > 1 {
				cloud = "the cloud's metrics unreachable at every API given (" + strings.Join(r.cfg.API, ", ") + ")"
			}
			if scraped {
				cloud = fmt.Sprintf("cloud RSS %.0f MB, CPU %.0f%% of %d cores", s.CloudRSS/1e6, s.CloudCPU, runtime.NumCPU())
				if len(r.cfg.API) > 1 {
					cloud += " (the replica at " + r.api() + ")"
				}
			}
			nodes := fmt.Sprintf("%d/%d connected", s.Connected, r.cfg.Nodes)
			if r.joined.Load() == nil {
				nodes = fmt.Sprintf("%d/%d joined", r.joining.Load(), r.cfg.Nodes)
			}
			r.say("%s — %s, %s, %d errors", phase, nodes, cloud, r.errs.Load())
		}
	}
}

// percentile is the nearest-rank percentile p (0–1] of xs: the smallest value that at least a
// share p of them do not exceed (p99 of 50 values is the largest).
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(math.Ceil(float64(len(s))*p)) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// ensureDevices creates a DeviceModel and DevicesPerNode devices on every node.
func (r *run) ensureDevices() error {
	if r.cfg.DevicesPerNode == 0 {
		return nil
	}
	r.setPhase(fmt.Sprintf("creating %d devices", r.cfg.Nodes*r.cfg.DevicesPerNode))
	model := map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
		"metadata": map[string]any{"name": "sim-model", "namespace": "sim"},
		"spec":     map[string]any{"properties": []any{map[string]any{"name": "temperature", "type": "INT", "accessMode": "ReadWrite"}}}}
	body, _ := json.Marshal(model)
	if err := EnsureNamespace(r.api(), "sim"); err != nil {
		return err
	}
	if _, err := Request(r.api(), http.MethodPost, "/apis/devices.kubeedge.io/v1beta1/namespaces/sim/devicemodels", "application/json", body); err != nil && !strings.Contains(err.Error(), "409") {
		return err
	}
	jobs := make(chan [2]string)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				dev := map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
					"metadata": map[string]any{"name": j[1], "namespace": "sim"},
					"spec": map[string]any{"nodeName": j[0], "deviceModelRef": map[string]any{"name": "sim-model"},
						"properties": []any{map[string]any{"name": "temperature", "desired": map[string]any{"value": "20"}}}}}
				b, _ := json.Marshal(dev)
				if _, err := Request(r.api(), http.MethodPost, "/apis/devices.kubeedge.io/v1beta1/namespaces/sim/devices", "application/json", b); err != nil && !strings.Contains(err.Error(), "409") {
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	for _, e := range r.fleet.Edges {
		for d := 0; d < r.cfg.DevicesPerNode; d++ {
			jobs <- [2]string{e.Name, fmt.Sprintf("%s-d%d", e.Name, d)}
		}
	}
	close(jobs)
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	head, err := r.head()
	if err != nil {
		return err
	}
	return WaitUntil(r.ctx, 5*time.Minute, func() bool { return r.fleet.Synced(r.cluster, head) == r.cfg.Nodes })
}

// report queues one twin report for a device of edge e, as the edge's twin engine would after
// a device's twin/update.
func report(e *Edge, device string, value string) {
	t := twin.Twin{Props: map[string]twin.Property{"temperature": {
		Type:   "int",
		Actual: &twin.Value{Value: value, Timestamp: time.Now().UnixMilli()},
	}}}
	e.Store.Enqueue(protocol.Report{Kind: protocol.ReportTwin, Subject: "sim/" + device, Time: time.Now().UnixMilli(), Payload: twin.EncodeTwinReport(t, "")})
}

// The hub's report counters by outcome, and what steady reads of the cloud's metrics.
const (
	reportsApplied = `tether_cloud_hub_reports_total{outcome="applied"}`
	reportsBad     = `tether_cloud_hub_reports_total{outcome="bad"}`
	reportsFailed  = `tether_cloud_hub_reports_total{outcome="failed"}`
)

var steadyMetrics = []string{"tether_cloud_hub_sent_bytes_total", "tether_cloud_hub_received_bytes_total", "process_cpu_seconds_total",
	reportsApplied, reportsBad, reportsFailed}

// steady keeps the fleet connected for Duration, devices reporting every ReportInterval, and
// measures the cloud's CPU, memory and the traffic per node.
func (r *run) steady(ctx context.Context) error {
	if r.cfg.ReportInterval > 0 {
		if err := r.ensureDevices(); err != nil {
			return err
		}
	}
	time.Sleep(2 * time.Second) // let catch-up and device fan-out settle
	mem0, memErr := GoMemory(r.api())
	m0, err := Scrape(r.api()+"/metrics", steadyMetrics...)
	if err != nil {
		return err
	}
	at0 := r.apiAt.Load()
	r.setPhase(fmt.Sprintf("steady for %s (reports every %s per device)", r.cfg.Duration, r.cfg.ReportInterval))
	t0 := time.Now()
	wireIn0, wireOut0 := r.wire.In.Load(), r.wire.Out.Load()
	// The reporting devices stop with the run, not at their next report after it.
	rctx, cancel := context.WithTimeout(ctx, r.cfg.Duration)
	defer cancel()
	var wg sync.WaitGroup
	if r.cfg.ReportInterval > 0 && r.cfg.DevicesPerNode > 0 {
		for _, e := range r.fleet.Edges {
			wg.Add(1)
			go func(e *Edge) {
				defer wg.Done()
				// Spread the first report over the interval so reports do not arrive in waves.
				select {
				case <-time.After(time.Duration(rand.Int64N(int64(r.cfg.ReportInterval)))):
				case <-rctx.Done():
					return
				}
				t := time.NewTicker(r.cfg.ReportInterval)
				defer t.Stop()
				for i := 0; ; i++ {
					for d := 0; d < r.cfg.DevicesPerNode; d++ {
						report(e, fmt.Sprintf("%s-d%d", e.Name, d), fmt.Sprint(20+i%10))
					}
					select {
					case <-t.C:
					case <-rctx.Done():
						return
					}
				}
			}(e)
		}
	}
	<-rctx.Done()
	if err := ctx.Err(); err != nil {
		return err
	}
	wg.Wait()
	took := time.Since(t0).Seconds()
	n := float64(r.cfg.Nodes)
	wire := float64(r.wire.In.Load()-wireIn0+r.wire.Out.Load()-wireOut0) / n / took
	name, goal := "traffic per node, both ways, on the wire (TLS, pings included)", ""
	if r.cfg.ReportInterval == 0 {
		name, goal = "idle traffic per node, both ways, on the wire (TLS, pings included)", "≤ 30 B/s"
	}
	r.rep.figure(name, wire, "B/s", goal)
	var m1 map[string]float64
	if r.apiAt.Load() == at0 {
		m1, err = Scrape(r.api()+"/metrics", steadyMetrics...)
		if err != nil && !r.moveAPI() {
			return err
		}
	}
	if r.apiAt.Load() != at0 {
		// The wire was counted on the edges; the cloud's counters are another process's now.
		r.say("the replica read was replaced during the run: the cloud's figures (CPU, reports, memory) are left out")
		return nil
	}
	mem1, err := GoMemory(r.api())
	if memErr == nil {
		memErr = err
	}
	payload := (m1["tether_cloud_hub_sent_bytes_total"] - m0["tether_cloud_hub_sent_bytes_total"] + m1["tether_cloud_hub_received_bytes_total"] - m0["tether_cloud_hub_received_bytes_total"]) / n / took
	r.rep.figure("of which protocol messages (hub count)", payload, "B/s", "")
	r.rep.figure("cloud CPU (share of all cores)", (m1["process_cpu_seconds_total"]-m0["process_cpu_seconds_total"])/took/float64(runtime.NumCPU())*100, "%", "< 50% at 10k nodes")
	delta := func(name string) float64 { return m1[name] - m0[name] }
	r.rep.figure("reports applied", delta(reportsApplied)/took, "reports/s", "")
	r.rep.figure("reports whose store write failed (the edge sends them again)", delta(reportsFailed), "reports", "")
	if bad := delta(reportsBad); bad > 0 {
		// The simulator sends only reports the cloud should take.
		r.say("the cloud refused %.0f reports as bad (counted as errors)", bad)
		r.errs.Add(int64(bad))
	}
	if memErr != nil {
		r.say("the cloud's memory could not be read (%v): its figures are left out", memErr)
		return nil
	}
	r.rep.figure("cloud Go memory change during the run", (mem1.InUse-mem0.InUse)/1e6, "MB", "")
	if r.joinedInUse > 0 && mem1.InUse > 0 {
		r.rep.figure("cloud Go memory per node, joined → connected (sessions, Node status)", (mem1.InUse-r.joinedInUse)/n/1024, "KB", "")
	}
	return nil
}

// fanout changes one 1 KB Service Changes times and measures how long until every node has it.
func (r *run) fanout(ctx context.Context) error {
	r.setPhase(fmt.Sprintf("fan-out of %d changes to %d nodes", r.cfg.Changes, r.cfg.Nodes))
	probe, err := NewFanoutProbe(ctx, r.api(), r.fleet.Edges, "sim", "sim-fanout", 1000)
	if err != nil {
		r.errs.Add(1)
		return err
	}
	defer probe.Close()
	var all, each []float64
	for change := 1; change <= r.cfg.Changes; change++ {
		tr, err := probe.Change(ctx, change, time.Minute)
		if err != nil {
			r.errs.Add(1)
			return err
		}
		all = append(all, ms(tr.All))
		for _, d := range tr.Each {
			each = append(each, ms(d))
		}
	}
	r.rep.Latency["fan-out, every node has it (ms)"] = all
	r.rep.Latency["fan-out, per node (ms)"] = each
	r.rep.figure(FigureFanoutP50, percentile(all, 0.5), "ms", "")
	r.rep.figure(FigureFanoutP99, percentile(all, 0.99), "ms", "≤ 15 ms at 1k, ≤ 150 ms at 10k")
	r.rep.figure("fan-out per node p99", percentile(each, 0.99), "ms", "")
	return nil
}

// twin sends a report from every device and waits for the cloud's Device.status, then changes
// the desired value of the devices and measures desired → arrival at the edge.
func (r *run) twin(ctx context.Context) error {
	if r.cfg.DevicesPerNode == 0 {
		return errors.New("scenario twin needs --devices-per-node ≥ 1")
	}
	if err := r.ensureDevices(); err != nil {
		return err
	}
	r.setPhase("every device reports once")
	// Values of this run only: a device left from an earlier run against the same cloud
	// already holds that run's report and desired value, and an unchanged desired value makes
	// no change to send.
	value, desired := fmt.Sprint(rand.Int64N(1e12)), fmt.Sprint(rand.Int64N(1e12))
	for desired == value {
		desired = fmt.Sprint(rand.Int64N(1e12))
	}
	t0 := time.Now()
	for _, e := range r.fleet.Edges {
		for d := 0; d < r.cfg.DevicesPerNode; d++ {
			report(e, fmt.Sprintf("%s-d%d", e.Name, d), value)
		}
	}
	total := r.cfg.Nodes * r.cfg.DevicesPerNode
	err := WaitUntil(ctx, 5*time.Minute, func() bool {
		body, err := Request(r.api(), http.MethodGet, "/apis/devices.kubeedge.io/v1beta1/namespaces/sim/devices", "", nil)
		return err == nil && strings.Count(string(body), `"value":"`+value+`"`) >= total
	})
	if err != nil {
		return fmt.Errorf("device reports did not all reach Device.status: %w", err)
	}
	r.rep.figure("every device's report in Device.status", time.Since(t0).Seconds(), "s", "")

	r.setPhase("the cloud changes every device's desired value")
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	for _, e := range r.fleet.Edges {
		e.Store.SetOnApply(func(msgs []protocol.Message) {
			now := time.Now()
			for _, m := range msgs {
				if u, ok := m.(*protocol.Upsert); ok && u.Key.Resource == "devices.devices.kubeedge.io" && strings.Contains(string(u.Object), `"value":"`+desired+`"`) {
					mu.Lock()
					if _, ok := arrived[u.Key.Name]; !ok {
						arrived[u.Key.Name] = now
					}
					mu.Unlock()
				}
			}
		})
	}
	defer func() {
		for _, e := range r.fleet.Edges {
			e.Store.SetOnApply(nil)
		}
	}()
	sent := map[string]time.Time{}
	patch := []byte(`{"spec":{"properties":[{"name":"temperature","desired":{"value":"` + desired + `"}}]}}`)
	for _, e := range r.fleet.Edges {
		for d := 0; d < r.cfg.DevicesPerNode; d++ {
			name := fmt.Sprintf("%s-d%d", e.Name, d)
			sent[name] = time.Now()
			if _, err := Request(r.api(), http.MethodPatch, "/apis/devices.kubeedge.io/v1beta1/namespaces/sim/devices/"+name, "application/merge-patch+json", patch); err != nil {
				r.errs.Add(1)
				return err
			}
		}
	}
	if err := WaitUntil(ctx, 5*time.Minute, func() bool { mu.Lock(); defer mu.Unlock(); return len(arrived) == total }); err != nil {
		return fmt.Errorf("desired values reached %d of %d devices' nodes: %w", len(arrived), total, err)
	}
	var lat []float64
	for name, at := range arrived {
		lat = append(lat, ms(at.Sub(sent[name])))
	}
	r.rep.Latency["desired → edge (ms)"] = lat
	r.rep.figure("desired change → edge p50", percentile(lat, 0.5), "ms", "")
	r.rep.figure("desired change → edge p99", percentile(lat, 0.99), "ms", "")
	return nil
}

// restart kills the cloud under the connected nodes and restarts it.
func (r *run) restart(ctx context.Context) error {
	time.Sleep(5 * time.Second) // progress marks bring every cursor to the head
	r.setPhase("kill -9 of the cloud, then restart")
	if err := r.cloud.Kill(); err != nil {
		return err
	}
	t0 := time.Now()
	if err := r.cloud.Start(); err != nil {
		return err
	}
	head, err := r.head()
	if err != nil {
		return err
	}
	if err := WaitUntil(ctx, 5*time.Minute, func() bool {
		return r.fleet.Connected() == r.cfg.Nodes && r.fleet.Synced(r.cluster, head) == r.cfg.Nodes
	}); err != nil {
		return fmt.Errorf("after the restart: %d connected, %d synced: %w", r.fleet.Connected(), r.fleet.Synced(r.cluster, head), err)
	}
	r.rep.figure("restart: all nodes connected and in sync", time.Since(t0).Seconds(), "s", "≤ 30 s at 10k")
	time.Sleep(time.Second)
	m, err := Scrape(r.api()+"/metrics", "tether_cloud_hub_sent_bytes_total", "tether_cloud_hub_catchup_bytes_total", "tether_cloud_hub_catchup_messages_total")
	if err != nil {
		return err
	}
	r.rep.figure("restart: hub bytes sent per node", m["tether_cloud_hub_sent_bytes_total"]/float64(r.cfg.Nodes), "B", "≤ 1024 B")
	r.rep.figure("restart: catch-up objects sent", m["tether_cloud_hub_catchup_messages_total"], "objects", "0")
	notReady, err := r.notReady()
	if err != nil {
		return err
	}
	r.rep.figure("restart: nodes the cloud reports NotReady", float64(notReady), "nodes", "0")
	return nil
}

func (r *run) notReady() (int, error) { return NotReady(r.api(), "sim-") }

// NotReady counts the nodes whose names start with prefix and whose Ready condition the cloud
// at api reports other than True.
func NotReady(api, prefix string) (int, error) {
	ready, err := Readiness(api, prefix)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range ready {
		if r.Status != "" && r.Status != "True" {
			n++
		}
	}
	return n, nil
}

// NodeReady is a Node's Ready condition: its status, and its message, which names the replica
// holding the node's session while it is True.
type NodeReady struct{ Status, Message string }

// Readiness reads the Ready condition of every node whose name starts with prefix from the cloud
// at api, by node name (a Node without the condition maps to the zero NodeReady).
func Readiness(api, prefix string) (map[string]NodeReady, error) {
	body, err := Request(api, http.MethodGet, "/api/v1/nodes", "", nil)
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct{ Name string }
			Status   struct {
				Conditions []struct{ Type, Status, Message string }
			}
		}
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, err
	}
	out := map[string]NodeReady{}
	for _, it := range list.Items {
		if !strings.HasPrefix(it.Metadata.Name, prefix) {
			continue
		}
		var r NodeReady
		for _, c := range it.Status.Conditions {
			if c.Type == "Ready" {
				r = NodeReady{c.Status, c.Message}
			}
		}
		out[it.Metadata.Name] = r
	}
	return out, nil
}

// settle waits until the cloud's goroutine count holds still for three seconds (connects and
// reconnects leave writers, status writes and handshakes finishing for a while), at most a
// minute, so that what is compared is the cloud at rest.
func (r *run) settle(ctx context.Context) {
	r.setPhase("waiting for the cloud to settle")
	last, still := -1.0, 0
	for end := time.Now().Add(time.Minute); time.Now().Before(end) && still < 3; {
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		}
		m, err := Scrape(r.api()+"/metrics", "go_goroutines")
		if err != nil {
			return
		}
		g := m["go_goroutines"]
		if last >= 0 && math.Abs(g-last) <= 2 {
			still++
		} else {
			still = 0
		}
		last = g
	}
}

// watchCacheBytes is the cloud's estimate of the memory its API watch cache holds.
const watchCacheBytes = "tether_cloud_api_watch_cache_bytes"

// The cloud's memory before and after churn is the least of churnReadings readings, churnReadingGap
// apart (see QuietMemory).
const (
	churnReadings   = 5
	churnReadingGap = 2 * time.Second
)

// churn disconnects and reconnects a share of the nodes every ChurnEvery for Duration, and
// compares the cloud's memory and goroutines at the end with the start.
func (r *run) churn(ctx context.Context) error {
	r.settle(ctx)
	mem0, err := QuietMemory(ctx, r.api(), churnReadings, churnReadingGap)
	if err != nil {
		return err
	}
	g0, err := Scrape(r.api()+"/metrics", "go_goroutines", watchCacheBytes)
	if err != nil {
		return err
	}
	r.setPhase(fmt.Sprintf("churn: %.0f%% of nodes reconnect every %s for %s", r.cfg.ChurnShare*100, r.cfg.ChurnEvery, r.cfg.Duration))
	end := time.Now().Add(r.cfg.Duration)
	k := int(float64(r.cfg.Nodes) * r.cfg.ChurnShare)
	rounds := 0
	for time.Now().Before(end) {
		perm := rand.Perm(len(r.fleet.Edges))[:k]
		for _, i := range perm {
			r.fleet.Edges[i].Stop()
		}
		select {
		case <-time.After(min(5*time.Second, r.cfg.ChurnEvery/4)):
		case <-ctx.Done():
			return ctx.Err()
		}
		for _, i := range perm {
			r.fleet.Edges[i].Start(r.ctx)
		}
		rounds++
		select {
		case <-time.After(time.Until(end.Add(-r.cfg.Duration).Add(time.Duration(rounds) * r.cfg.ChurnEvery))):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	head, _ := r.head()
	if err := WaitUntil(ctx, 5*time.Minute, func() bool {
		return r.fleet.Connected() == r.cfg.Nodes && r.fleet.Synced(r.cluster, head) == r.cfg.Nodes
	}); err != nil {
		return err
	}
	r.settle(ctx)
	mem1, err := QuietMemory(ctx, r.api(), churnReadings, churnReadingGap)
	if err != nil {
		return err
	}
	g1, err := Scrape(r.api()+"/metrics", "go_goroutines", watchCacheBytes)
	if err != nil {
		return err
	}
	r.rep.figure("churn rounds", float64(rounds), "rounds", "")
	// Live memory is what a leak grows; memory in use also counts the heap's fragmentation,
	// which reconnects stir up without anything being kept.
	r.rep.figure(fmt.Sprintf("churn: cloud live memory growth (live heap and stacks; least of %d readings)", churnReadings), (mem1.Live-mem0.Live)/mem0.Live*100, "%", "≤ 5%")
	// The API's watch cache takes every change, the Nodes' heartbeats included, and keeps those
	// of the last --watch-cache-window, at most --watch-cache of them: growth that stops, and
	// that churn does not cause. Its estimated size, beside the figure above.
	r.rep.figure("churn: of which the API watch cache (bounded by --watch-cache and --watch-cache-window)", (g1[watchCacheBytes]-g0[watchCacheBytes])/mem0.Live*100, "%", "")
	r.rep.figure("churn: cloud memory in use growth (fragmentation included)", (mem1.InUse-mem0.InUse)/mem0.InUse*100, "%", "")
	r.rep.figure("churn: goroutines at the end minus at the start", g1["go_goroutines"]-g0["go_goroutines"], "goroutines", "≈ 0")
	return nil
}
