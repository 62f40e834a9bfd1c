package failbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/bench/figure"
	"github.com/tetherhub/tether/edgehub"
	"github.com/tetherhub/tether/sim"
	"github.com/tetherhub/tether/store/etcdstore/etcdtest"
)

// Options configure a run.
type Options struct {
	Bin   string // directory holding tether-cloud
	Nodes int
	Log   zerolog.Logger
}

const prefix = "failover-"

// Run measures one failover and prints its figures.
func Run(ctx context.Context, o Options, w io.Writer) error {
	dir, err := os.MkdirTemp("", "failbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"etcd", "replica-a", "replica-b"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	etcd, err := etcdtest.Run(filepath.Join(dir, "etcd"))
	if err != nil {
		return err
	}
	defer etcd.Kill()
	replica := func(name string) (*sim.Cloud, error) {
		return sim.StartCloud(o.Bin, filepath.Join(dir, name), "--store", "etcd", "--etcd-endpoints", etcd.Endpoint(),
			"--replica-name", name)
	}
	a, err := replica("replica-a")
	if err != nil {
		return fmt.Errorf("replica-a: %w", err)
	}
	defer a.Kill()
	b, err := replica("replica-b") // after a: it takes the CA a stored in etcd
	if err != nil {
		return fmt.Errorf("replica-b: %w", err)
	}
	defer b.Kill()

	tok, err := a.Token(2 * time.Hour)
	if err != nil {
		return err
	}
	hc := edgehub.DefaultConfig()
	hc.Agent = "bench"
	f, err := sim.JoinFleet(ctx, sim.FleetConfig{Cloud: []string{a.Hub, b.Hub}, Join: "https://" + a.Join, Token: tok, Nodes: o.Nodes,
		Prefix: prefix, LocalAddrs: sim.LoopbackAddrs(8), Hub: hc, JoinConcurrency: 32}, o.Log, nil)
	if err != nil {
		return err
	}
	connectStart := time.Now()
	stop, err := f.RunUntilConnected(ctx, 2*time.Minute)
	if err != nil {
		return err
	}
	defer stop()
	connected := time.Since(connectStart)
	var onA int
	var last readiness // what the last look saw, for the error
	err = sim.WaitUntil(ctx, time.Minute, func() bool {
		ready, err := sim.Readiness(b.URL(""), prefix)
		if err != nil {
			last = readiness{err: err}
			return false
		}
		last = tally(ready)
		onA = 0
		for _, r := range ready {
			if strings.HasSuffix(r.Message, "replica-a") {
				onA++
			}
		}
		return len(ready) == o.Nodes && last.ready == o.Nodes
	})
	if err != nil {
		return fmt.Errorf("waiting for every node Ready: %w (%s)%s", err, last, diagnose(a, b))
	}

	killed := time.Now()
	if err := a.Kill(); err != nil {
		return err
	}
	everNot := map[string]string{} // node → what it first showed that was not Ready, and when
	err = sim.WaitUntil(ctx, 2*time.Minute, func() bool {
		ready, err := sim.Readiness(b.URL(""), prefix)
		if err != nil {
			return false
		}
		onB := 0
		for name, r := range ready {
			switch {
			case r.Status != "True":
				if _, seen := everNot[name]; !seen {
					everNot[name] = fmt.Sprintf("%s %q at +%.1fs", r.Status, r.Message, time.Since(killed).Seconds())
				}
			case strings.HasSuffix(r.Message, "replica-b"):
				onB++
			}
		}
		return onB == o.Nodes
	})
	took := time.Since(killed)
	if err != nil {
		return fmt.Errorf("waiting for every node on replica-b: %w%s", err, diagnose(b))
	}
	fmt.Fprintln(w, figure.Format(figure.Result{Name: fmt.Sprintf("failover on etcd, %d nodes: all Ready on the other replica", o.Nodes), Unit: "s",
		Value: took.Seconds(), Baseline: connected.Seconds(),
		Note: fmt.Sprintf("baseline: the same edges' first connect; %d of them were on the killed replica", onA)}))
	fmt.Fprintln(w, figure.Format(figure.Result{Name: fmt.Sprintf("failover on etcd, %d nodes: nodes seen not Ready meanwhile", o.Nodes), Unit: "nodes",
		Value: float64(len(everNot)), Goal: "0", Note: "the other replica's Node list read again 20 ms after each read"}))
	if len(everNot) > 0 {
		shown := map[string]int{}
		for _, what := range everNot {
			shown[what[:strings.LastIndex(what, " at +")]]++
		}
		fmt.Fprintf(w, "  not Ready meanwhile, by what they showed: %v; first of them: %s%s\n", shown, firstOf(everNot), diagnose(b))
	}
	return nil
}

// readiness is a tally of the Ready conditions of the fleet's Nodes, as one list showed them.
type readiness struct {
	listed, ready int
	others        map[string]int // "status: message" of the rest → how many
	err           error
}

func tally(ready map[string]sim.NodeReady) readiness {
	t := readiness{listed: len(ready), others: map[string]int{}}
	for _, r := range ready {
		if r.Status == "True" {
			t.ready++
		} else {
			t.others[r.Status+": "+r.Message]++
		}
	}
	return t
}

func (t readiness) String() string {
	if t.err != nil {
		return "the last list failed: " + t.err.Error()
	}
	s := fmt.Sprintf("the last list: %d nodes, %d Ready", t.listed, t.ready)
	n := 0
	for k, c := range t.others {
		if n++; n > 5 {
			s += "; …"
			break
		}
		s += fmt.Sprintf("; %d %q", c, k)
	}
	return s
}

// diagnose says, for a failed wait, what each replica saw: its Ready-condition writes the store
// did not take in time, its sessions refused, and how many warnings of each kind its log holds.
func diagnose(replicas ...*sim.Cloud) string {
	var out strings.Builder
	for _, c := range replicas {
		m, err := sim.Scrape(c.URL("/metrics"), "tether_cloud_hub_status_write_failures_total", "tether_cloud_hub_connected_nodes")
		fmt.Fprintf(&out, "\n  %s: %v %v", filepath.Base(c.Dir), m, err)
		log, err := os.ReadFile(filepath.Join(c.Dir, "cloud.log"))
		if err != nil {
			continue
		}
		msgs, example := map[string]int{}, map[string]string{}
		for line := range strings.Lines(string(log)) {
			var l struct{ Level, Message, Error string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Level != "" && l.Level != "info" && l.Level != "debug" {
				k := l.Level + ": " + l.Message
				if msgs[k]++; l.Error != "" && example[k] == "" {
					example[k] = l.Error
				}
			}
		}
		for msg, n := range msgs {
			fmt.Fprintf(&out, "\n    %d× %s", n, msg)
			if e := example[msg]; e != "" {
				fmt.Fprintf(&out, " (first: %s)", e)
			}
		}
	}
	return out.String()
}

// firstOf is the earliest-seen entry of everNot, by the "+N.Ns" it ends with.
func firstOf(everNot map[string]string) string {
	best, bestAt := "", -1.0
	for name, what := range everNot {
		var at float64
		fmt.Sscanf(what[strings.LastIndex(what, " at +")+5:], "%fs", &at)
		if bestAt < 0 || at < bestAt {
			best, bestAt = name+": "+what, at
		}
	}
	return best
}
