package simbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhub/tether/bench/figure"
	"github.com/tetherhub/tether/sim"
)

// Options configure a run.
type Options struct {
	Bin   string // directory holding tether-sim and tether-cloud
	Size  string // default or full
	Nodes int    // overrides the size's node count when > 0
	// Fanout is the bare gorilla broadcast measured earlier in the same run, printed beside
	// the simulator's fan-out when it was to as many nodes.
	Fanout Baseline
}

// Baseline is a fan-out baseline: p50 and p99 in ms to Nodes connections (zero: none).
type Baseline struct {
	Nodes    int
	P50, P99 float64
}

type scenario struct {
	name string
	args []string
}

func scenarios(size string, nodes int) ([]scenario, int, error) {
	churn, every := "2m", "30s"
	switch size {
	case "", "default":
		if nodes == 0 {
			nodes = 1000
		}
	case "full":
		if nodes == 0 {
			nodes = 10000
		}
		churn, every = "10m", "1m"
	default:
		return nil, 0, fmt.Errorf("simbench: size %q is not default or full", size)
	}
	return []scenario{
		{"steady", []string{"--scenario", "steady", "--report-interval", "0", "--duration", "1m"}},
		{"fanout", []string{"--scenario", "fanout", "--changes", "100"}},
		{"restart", []string{"--scenario", "restart"}},
		{"churn", []string{"--scenario", "churn", "--duration", churn, "--churn-every", every, "--churn-share", "0.1"}},
	}, nodes, nil
}

// Run runs every scenario in turn and prints its figures to w. Each scenario's full output and
// its JSON and HTML reports stay in a directory named on w.
func Run(ctx context.Context, o Options, w io.Writer) error {
	list, nodes, err := scenarios(o.Size, o.Nodes)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tether-simbench")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "simulator reports in %s\n", dir)
	var failed []string
	for _, sc := range list {
		rep, err := runOne(ctx, o.Bin, dir, nodes, sc)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fmt.Fprintf(w, "sim %s: %v\n", sc.name, err)
			failed = append(failed, sc.name)
			continue
		}
		for _, r := range results(rep, o.Fanout) {
			fmt.Fprintln(w, figure.Format(r))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("scenarios failed: %s (logs in %s)", strings.Join(failed, ", "), dir)
	}
	return nil
}

func runOne(ctx context.Context, bin, dir string, nodes int, sc scenario) (*sim.Report, error) {
	report := filepath.Join(dir, sc.name+".json")
	logPath := filepath.Join(dir, sc.name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append([]string{"--start-cloud", bin, "--nodes", strconv.Itoa(nodes), "--report", report}, sc.args...)
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "tether-sim"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.WaitDelay = 10 * time.Second
	runErr := cmd.Run()
	rep, err := readReport(report)
	if err != nil {
		if runErr != nil {
			return nil, fmt.Errorf("%w (see %s)", runErr, logPath)
		}
		return nil, err
	}
	if runErr != nil || !rep.Converged || rep.Errors > 0 {
		return nil, fmt.Errorf("converged %v, %d errors, exit %v (see %s)", rep.Converged, rep.Errors, runErr, logPath)
	}
	return rep, nil
}

func readReport(path string) (*sim.Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rep sim.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &rep, nil
}

// results turns a report's figures into suite lines named by scenario and size.
func results(rep *sim.Report, base Baseline) []figure.Result {
	var out []figure.Result
	for _, f := range rep.Figures {
		r := figure.Result{Name: fmt.Sprintf("sim %s %d nodes: %s", rep.Scenario, rep.Nodes, f.Name), Unit: f.Unit, Value: f.Value, Goal: f.Goal}
		if base.Nodes == rep.Nodes {
			switch f.Name {
			case sim.FigureFanoutP50:
				r.Baseline = base.P50
			case sim.FigureFanoutP99:
				r.Baseline = base.P99
			}
		}
		if r.Baseline > 0 {
			r.Note = "baseline: the hub suite's bare gorilla broadcast to as many connections, this run"
		}
		out = append(out, r)
	}
	return out
}
