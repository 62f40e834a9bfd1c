package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tetherhub/tether/cli"
	"github.com/tetherhub/tether/sim"
)

func runScenario(args []string, stdout, stderr io.Writer) error {
	cfg := sim.DefaultConfig()
	fs := cli.NewFlagSet("tether-sim", stdout)
	fs.String("config", "", "YAML file whose keys are these flags' names")
	printConfig := fs.Bool("print-config", false, "print the effective configuration and exit")
	fs.StringSliceVar(&cfg.Cloud, "cloud", cfg.Cloud, "hub addresses HOST:PORT")
	fs.StringSliceVar(&cfg.Join, "join", cfg.Join, "join service URLs, one per replica: nodes join through the first that answers")
	fs.StringSliceVar(&cfg.API, "api", cfg.API, "cloud API URLs, one per replica: setup and metrics use the first that answers")
	fs.StringVar(&cfg.Token, "token", "", "a fleet token (tether-cloud token create --any-node); made through the API if empty")
	cli.MarkSecret(fs, "token")
	fs.StringVar(&cfg.StartCloud, "start-cloud", "", "directory holding tether-cloud: start (and for restart, kill) a cloud of the simulator's own")
	fs.StringVar(&cfg.DataDir, "cloud-data-dir", "", "data dir of the started cloud (a temp dir if empty)")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "simulated edge nodes")
	fs.IntVar(&cfg.DevicesPerNode, "devices-per-node", cfg.DevicesPerNode, "simulated devices per node")
	fs.StringVar(&cfg.Scenario, "scenario", cfg.Scenario, strings.Join(sim.Scenarios(), ", "))
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long steady and churn run")
	fs.DurationVar(&cfg.ReportInterval, "report-interval", cfg.ReportInterval, "steady: each device reports this often (0: idle)")
	fs.IntVar(&cfg.Changes, "changes", cfg.Changes, "fanout: changes measured")
	fs.Float64Var(&cfg.ChurnShare, "churn-share", cfg.ChurnShare, "churn: share of nodes that reconnect each period")
	fs.DurationVar(&cfg.ChurnEvery, "churn-every", cfg.ChurnEvery, "churn: period")
	fs.IntVar(&cfg.LocalAddrs, "local-addrs", cfg.LocalAddrs, "spread edges over 127.0.0.1 … 127.0.0.N")
	report := fs.String("report", "", "write the JSON report here (and an HTML page with plots beside it)")
	logLevel := fs.String("log-level", "error", "log level of the simulated edges")
	if err := cli.Load(fs, args); err != nil {
		return err
	}
	if *printConfig {
		return cli.Print(fs, stdout)
	}
	if err := cfg.Validate(); err != nil {
		return cli.Usagef("%v", err)
	}
	log, err := cli.NewLogger(stderr, "console", *logLevel, "tether-sim")
	if err != nil {
		return err
	}
	raiseFileLimit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, runErr := sim.Run(ctx, cfg, log, stdout)
	if rep != nil {
		rep.WriteTable(stdout)
		if *report != "" {
			if err := writeReports(rep, *report); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "report: %s and %s\n", *report, htmlPath(*report))
		}
		if runErr == nil && rep.Errors > 0 {
			runErr = fmt.Errorf("%d errors during the run; the figures are suspect", rep.Errors)
		}
	}
	return runErr
}

func htmlPath(p string) string { return strings.TrimSuffix(p, filepath.Ext(p)) + ".html" }

func writeReports(rep *sim.Report, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	h, err := os.Create(htmlPath(path))
	if err != nil {
		return err
	}
	if err := rep.WriteHTML(h); err != nil {
		h.Close()
		return err
	}
	return h.Close()
}

// raiseFileLimit lifts the open-file limit as far as the process may: thousands of simulated
// edges hold thousands of sockets.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return
	}
	want := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if lim.Max >= want.Max || syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}
