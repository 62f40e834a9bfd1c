package hubbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/bench/figure"
	"github.com/tetherhub/tether/edgehub"
	"github.com/tetherhub/tether/internal/freeport"
	"github.com/tetherhub/tether/sim"
)

// Options configure a run.
type Options struct {
	Bin        string // directory holding tether-cloud
	Self       string // this program, started with -baseline-server for the baseline process
	FanoutN    int    // nodes for the fan-out and restart measurements
	MemoryN    []int  // node counts for the memory measurement
	Trials     int    // fan-out changes measured (0 skips fan-out and restart)
	ObjectSize int    // bytes of the changed object
	Log        zerolog.Logger
}

// Result is one measured figure beside its baseline.
type Result = figure.Result

// Run measures the hub and prints each figure as it is found.
func Run(ctx context.Context, o Options, w io.Writer) ([]Result, error) {
	var out []Result
	emit := func(r Result) {
		out = append(out, r)
		fmt.Fprintln(w, Format(r))
	}
	if o.Trials > 0 {
		if err := fanoutAndRestart(ctx, o, emit); err != nil {
			return out, fmt.Errorf("fan-out: %w", err)
		}
	}
	for _, n := range o.MemoryN {
		if err := memory(ctx, o, n, emit); err != nil {
			return out, fmt.Errorf("memory at %d: %w", n, err)
		}
	}
	return out, nil
}

// fanoutName names the fan-out figure for n nodes and a percentile ("p50", "p99").
func fanoutName(n int, p string) string {
	return fmt.Sprintf("fan-out 1 KB to %d nodes, all acked, %s", n, p)
}

// FanoutBaseline finds, among a run's results, the bare gorilla broadcast's p50 and p99 to n
// nodes (zero when the run did not measure them), for other suites to print beside theirs.
func FanoutBaseline(res []Result, n int) (p50, p99 float64) {
	for _, r := range res {
		switch r.Name {
		case fanoutName(n, "p50"):
			p50 = r.Baseline
		case fanoutName(n, "p99"):
			p99 = r.Baseline
		}
	}
	return p50, p99
}

// Format renders a result as one line.
func Format(r Result) string { return figure.Format(r) }

// fleet joins n simulated edges to c and runs them until the returned stop is called.
func fleet(ctx context.Context, o Options, c *sim.Cloud, n int) (*sim.Fleet, func(), error) {
	tok, err := c.Token(2 * time.Hour)
	if err != nil {
		return nil, nil, err
	}
	hc := edgehub.DefaultConfig()
	hc.Agent = "bench"
	f, err := sim.JoinFleet(ctx, sim.FleetConfig{Cloud: []string{c.Hub}, Join: "https://" + c.Join, Token: tok, Nodes: n,
		Prefix: "bench-", LocalAddrs: sim.LoopbackAddrs(8), Hub: hc, JoinConcurrency: 32}, o.Log, nil)
	if err != nil {
		return nil, nil, err
	}
	stop, err := f.RunUntilConnected(ctx, 2*time.Minute)
	if err != nil {
		return nil, nil, err
	}
	return f, stop, nil
}

// fanoutAndRestart measures fan-out latency against the baseline broadcasts, then restarts the
// cloud under the same nodes.
//
// Each system runs its trials alone, with only its own connections open. The simulated edges
// and the baselines' clients share this process, and its work (its garbage collections, say)
// lands on whichever trial is running: interleaving the three systems' trials, all connected
// at once, was tried, and in that run this process's CPU per trial rose to 45 ms in tether's
// trials (37 alone) and fell to 14 ms in the bare broadcast's (20 alone).
func fanoutAndRestart(ctx context.Context, o Options, emit func(Result)) error {
	n := o.FanoutN
	base, err := baselineTrials(ctx, o, n, false)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	// A second baseline whose clients acknowledge every message, as edges do: what delivery
	// with acks costs on bare gorilla, without a store, an API or a protocol.
	acked, err := baselineTrials(ctx, o, n, true)
	if err != nil {
		return fmt.Errorf("acked baseline: %w", err)
	}
	dir, err := os.MkdirTemp("", "hubbench")
	if err != nil {
		return err
	}
	if os.Getenv("HUBBENCH_KEEP") == "" {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "keeping", dir)
	}
	c, err := sim.StartCloud(o.Bin, dir, "--progress-interval", "1s")
	if err != nil {
		return err
	}
	defer c.Stop()
	f, stop, err := fleet(ctx, o, c, n)
	if err != nil {
		return err
	}
	defer stop()

	probe, err := sim.NewFanoutProbe(ctx, c.URL(""), f.Edges, "bench", "fanout", o.ObjectSize)
	if err != nil {
		return err
	}
	defer probe.Close()
	verbose := os.Getenv("HUBBENCH_VERBOSE") != ""
	tether := &side{name: "tether", pid: c.Pid(), trial: func(ctx context.Context, trial int) ([]time.Duration, error) {
		tr, err := probe.Change(ctx, trial, 30*time.Second)
		if err != nil {
			return nil, err
		}
		if verbose {
			fmt.Fprintf(os.Stderr, "trial %d: API answered in %.1f ms, first edge %.1f ms, all acked in %.1f ms\n",
				trial, figure.Ms(tr.API), figure.Ms(slices.Min(tr.Each)), figure.Ms(tr.All))
		}
		return tr.Each, nil
	}}
	stopProfile := func() {}
	if path := os.Getenv("HUBBENCH_CPUPROFILE"); path != "" {
		// A CPU profile of tether-cloud during the trials, for whoever is tuning the hub.
		go func() {
			resp, err := http.Get(c.URL("/debug/pprof/profile?seconds=8"))
			if err != nil {
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(path)
			if err != nil {
				return
			}
			defer f.Close()
			io.Copy(f, resp.Body)
		}()
		// And one of this process, where the simulated edges run, over the trials.
		if f, err := os.Create(path + ".edges"); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				stopProfile = sync.OnceFunc(func() { pprof.StopCPUProfile(); f.Close() })
				defer stopProfile() // a failed trial returns early
			}
		}
	}
	if err := tether.runTrials(ctx, o.Trials); err != nil {
		return err
	}
	stopProfile()
	b, a, t := base, acked, tether
	emit(Result{Name: fanoutName(n, "p50"), Unit: "ms", Value: figure.Percentile(t.all, 0.5), Baseline: figure.Percentile(b.all, 0.5),
		Note: t.cpuNote(o.Trials, "cloud", "edges") + "; baseline " + b.cpuNote(o.Trials, "server", "clients")})
	emit(Result{Name: fanoutName(n, "p99"), Unit: "ms", Value: figure.Percentile(t.all, 0.99), Baseline: figure.Percentile(b.all, 0.99), Goal: "≤ 2× baseline"})
	emit(Result{Name: fmt.Sprintf("fan-out 1 KB to %d nodes, per node, p99", n), Unit: "ms", Value: figure.Percentile(t.each, 0.99), Baseline: figure.Percentile(b.each, 0.99)})
	emit(Result{Name: fmt.Sprintf("fan-out 1 KB to %d nodes, all acked, p50, vs acked gorilla", n), Unit: "ms", Value: figure.Percentile(t.all, 0.5), Baseline: figure.Percentile(a.all, 0.5),
		Note: "baseline: bare gorilla broadcast whose clients ack every message; " + a.cpuNote(o.Trials, "server", "clients")})
	emit(Result{Name: fmt.Sprintf("fan-out 1 KB to %d nodes, all acked, p99, vs acked gorilla", n), Unit: "ms", Value: figure.Percentile(t.all, 0.99), Baseline: figure.Percentile(a.all, 0.99),
		Note: "baseline: bare gorilla broadcast whose clients ack every message"})

	// Restart the cloud under the same, up-to-date nodes.
	time.Sleep(3 * time.Second) // progress marks bring every cursor to the head
	info, err := sim.GetInfo(c.URL(""))
	if err != nil {
		return err
	}
	cluster := info.Cluster
	if err := c.Stop(); err != nil {
		return err
	}
	restart := time.Now()
	if err := c.Start(); err != nil {
		return err
	}
	head, err := sim.SyncTarget(ctx, c.URL(""))
	if err != nil {
		return err
	}
	if err := sim.WaitUntil(ctx, time.Minute, func() bool { return f.Connected() == n && f.Synced(cluster, head) == n }); err != nil {
		return fmt.Errorf("after restart: %d connected, %d synced: %w", f.Connected(), f.Synced(cluster, head), err)
	}
	took := time.Since(restart)
	time.Sleep(500 * time.Millisecond)
	m, err := sim.Scrape(c.URL("/metrics"), "tether_cloud_hub_sent_bytes_total", "tether_cloud_hub_catchup_messages_total")
	if err != nil {
		return err
	}
	notReady, err := sim.NotReady(c.URL(""), "bench-")
	if err != nil {
		return err
	}
	emit(Result{Name: fmt.Sprintf("cloud restart, %d up-to-date nodes: all connected and in sync", n), Unit: "s", Value: took.Seconds(), Goal: "≤ 10 s",
		Note: fmt.Sprintf("%d catch-up objects, %d nodes NotReady", int(m["tether_cloud_hub_catchup_messages_total"]), notReady)})
	emit(Result{Name: fmt.Sprintf("cloud restart, %d up-to-date nodes: hub bytes per node", n), Unit: "B", Value: m["tether_cloud_hub_sent_bytes_total"] / float64(n), Goal: "≤ 1024 B"})
	return nil
}

// side is one of the systems the fan-out trials compare: its latencies, and the CPU its server
// process and this process (its clients) used during its trials. Beside the latencies, the CPU
// says how much work each system did, which a shared host's noise moves much less.
type side struct {
	name  string
	pid   int // the server process
	trial func(ctx context.Context, trial int) (each []time.Duration, err error)

	all, each       []float64 // ms: the slowest node of each trial; every node of every trial
	server, clients float64   // CPU seconds over the trials
}

// run makes one trial and records it.
func (s *side) run(ctx context.Context, trial int) error {
	s0, err0 := figure.ProcCPU(s.pid)
	c0, err1 := figure.SelfCPU()
	each, err := s.trial(ctx, trial)
	if err != nil {
		return err
	}
	s1, err2 := figure.ProcCPU(s.pid)
	c1, err3 := figure.SelfCPU()
	if err := errors.Join(err0, err1, err2, err3); err != nil {
		return err
	}
	s.server += s1 - s0
	s.clients += c1 - c0
	worst := time.Duration(0)
	for _, d := range each {
		s.each = append(s.each, figure.Ms(d))
		worst = max(worst, d)
	}
	s.all = append(s.all, figure.Ms(worst))
	return nil
}

// runTrials makes the side's trials, 50 ms apart.
func (s *side) runTrials(ctx context.Context, trials int) error {
	for trial := 1; trial <= trials; trial++ {
		if err := s.run(ctx, trial); err != nil {
			return fmt.Errorf("%s trial %d: %w", s.name, trial, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// cpuNote renders the CPU per trial for a result's note.
func (s *side) cpuNote(trials int, server, clients string) string {
	return fmt.Sprintf("CPU per trial: %s %.1f ms, %s %.1f ms", server, s.server*1000/float64(trials), clients, s.clients*1000/float64(trials))
}

// startBaseline runs the baseline server process.
func startBaseline(o Options) (ws, ctl string, pid int, stop func(), err error) {
	if ws, err = freeport.Addr(); err != nil {
		return
	}
	if ctl, err = freeport.Addr(); err != nil {
		return
	}
	cmd := exec.Command(o.Self, "-baseline-server", "-ws", ws, "-ctl", ctl)
	cmd.Stderr = os.Stderr
	if err = cmd.Start(); err != nil {
		return
	}
	pid = cmd.Process.Pid
	stop = func() { cmd.Process.Kill(); cmd.Wait() }
	err = sim.WaitUntil(context.Background(), 20*time.Second, func() bool {
		resp, err := http.Get("http://" + ctl + "/mem")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	if err != nil {
		stop()
	}
	return
}

// baselineTrials starts a baseline server process, connects n clients to it, makes the trials,
// and stops both.
func baselineTrials(ctx context.Context, o Options, n int, ack bool) (*side, error) {
	ws, ctl, pid, stop, err := startBaseline(o)
	if err != nil {
		return nil, err
	}
	defer stop()
	bc, err := dialBaseline(ctx, ws, n, ack)
	defer bc.close()
	if err != nil {
		return nil, err
	}
	name := "gorilla"
	if ack {
		name = "acked gorilla"
	}
	s := &side{name: name, pid: pid, trial: func(ctx context.Context, trial int) ([]time.Duration, error) {
		t0 := time.Now()
		resp, err := http.Post(fmt.Sprintf("http://%s/broadcast?trial=%d&size=%d", ctl, trial, o.ObjectSize), "", nil)
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		var recv []time.Time
		if err := sim.WaitUntil(ctx, 30*time.Second, func() bool { recv = bc.received(uint64(trial)); return len(recv) == n }); err != nil {
			return nil, fmt.Errorf("%d of %d received", len(recv), n)
		}
		each := make([]time.Duration, len(recv))
		for i, r := range recv {
			each[i] = r.Sub(t0)
		}
		return each, nil
	}}
	time.Sleep(500 * time.Millisecond)
	return s, s.runTrials(ctx, o.Trials)
}

// memory measures the hub's memory per connected idle node at n nodes, beside a bare gorilla
// connection's.
func memory(ctx context.Context, o Options, n int, emit func(Result)) error {
	// Baseline: bare gorilla connections, default buffers.
	ws, ctl, _, stopBase, err := startBaseline(o)
	if err != nil {
		return err
	}
	mem := func() (float64, float64, error) {
		resp, err := http.Get("http://" + ctl + "/mem")
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		var m map[string]float64
		json.NewDecoder(resp.Body).Decode(&m)
		return m["live"], m["rss"], nil
	}
	b0, _, err := mem()
	if err != nil {
		stopBase()
		return err
	}
	bc, err := dialBaseline(ctx, ws, n, false)
	if err != nil {
		stopBase()
		return err
	}
	time.Sleep(2 * time.Second)
	b1, _, err := mem()
	bc.close()
	stopBase()
	if err != nil {
		return err
	}
	basePer := (b1 - b0) / float64(n)

	dir, err := os.MkdirTemp("", "hubbench-mem")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c, err := sim.StartCloud(o.Bin, dir)
	if err != nil {
		return err
	}
	defer c.Stop()
	f, stop, err := fleet(ctx, o, c, n)
	if err != nil {
		return err
	}
	// Measure with the nodes joined (their Node objects stored) but disconnected, then connected.
	stop()
	if err := sim.WaitUntil(ctx, time.Minute, func() bool {
		m, err := sim.Scrape(c.URL("/metrics"), "tether_cloud_hub_connected_nodes")
		return err == nil && m["tether_cloud_hub_connected_nodes"] == 0
	}); err != nil {
		return err
	}
	time.Sleep(time.Second)
	// Least of 3 readings: a collection keeps what in-flight work (here the disconnects just
	// handled) references at that instant; one reading once came out 55 MB high at 5,000 nodes.
	m0, err := sim.QuietMemory(ctx, c.URL(""), 3, time.Second)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.Run(fctx) }()
	defer func() { cancel(); wg.Wait() }()
	if err := sim.WaitUntil(ctx, 2*time.Minute, func() bool { return f.Connected() == n }); err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // idle: catch-up done, writers gone
	m1, err := sim.QuietMemory(ctx, c.URL(""), 3, time.Second)
	if err != nil {
		return err
	}
	// Live bytes (after a GC) on both sides: heap spans in use would also count the
	// fragmentation the first connect and disconnect of every node left behind.
	per := (m1.Live - m0.Live) / float64(n)
	emit(Result{Name: fmt.Sprintf("hub memory per idle node at %d nodes (live heap+stacks)", n), Unit: "KB", Value: per / 1024, Baseline: basePer / 1024, Goal: "≤ 16 KB",
		Note: fmt.Sprintf("heap spans in use %.1f KB/node; cloud RSS %.0f MB with the nodes connected, %.0f MB before", (m1.InUse-m0.InUse)/float64(n)/1024, m1.RSS/1e6, m0.RSS/1e6)})
	return nil
}
