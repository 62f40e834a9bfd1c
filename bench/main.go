package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/bench/apibench"
	"github.com/tetherhub/tether/bench/failbench"
	"github.com/tetherhub/tether/bench/groupbench"
	"github.com/tetherhub/tether/bench/hubbench"
	"github.com/tetherhub/tether/bench/simbench"
	"github.com/tetherhub/tether/bench/twinbench"
)

func main() {
	size := flag.String("size", "default", "default (fits a 2-core machine in minutes) or full")
	bin := flag.String("bin", "bin", "directory holding the tether binaries")
	only := flag.String("only", "", "run only this suite (hub, api, twin, groups, sim, failover)")
	simNodes := flag.Int("sim-nodes", 0, "nodes for the sim suite (0: 1,000, or 10,000 with -size full)")
	baseline := flag.Bool("baseline-server", false, "internal: run the bare gorilla baseline server")
	ws := flag.String("ws", "", "internal: baseline websocket address")
	ctl := flag.String("ctl", "", "internal: baseline control address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *baseline {
		if err := hubbench.ServeBaseline(ctx, *ws, *ctl); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	raiseFileLimit()
	noteBacklog()
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir, _ := filepath.Abs(*bin)
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(zerolog.ErrorLevel)
	fmt.Printf("tether benchmarks (%s), %s\n", *size, time.Now().Format(time.RFC3339))
	failed := false
	var fanout simbench.Baseline // the hub suite's gorilla broadcast, for the sim suite's fan-out
	if *only == "" || *only == "hub" {
		o := hubbench.Options{Bin: binDir, Self: self, FanoutN: 1000, MemoryN: []int{1000, 5000}, Trials: 50, ObjectSize: 1024, Log: log}
		if *size == "full" {
			o.FanoutN, o.MemoryN = 10000, []int{1000, 5000, 10000}
		}
		switch os.Getenv("HUBBENCH") {
		case "fanout":
			o.MemoryN = nil // fan-out and restart only, for tuning
		case "memory":
			o.Trials = 0
		}
		fmt.Println("== hub")
		res, err := hubbench.Run(ctx, o, os.Stdout)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hub:", err)
			failed = true
		}
		fanout.Nodes = o.FanoutN
		fanout.P50, fanout.P99 = hubbench.FanoutBaseline(res, o.FanoutN)
	}
	if *only == "" || *only == "api" {
		fmt.Println("== api (cloud API and edge metaserver)")
		if _, err := apibench.Run(ctx, *size, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "api:", err)
			failed = true
		}
	}
	if *only == "" || *only == "twin" {
		fmt.Println("== twin (device twins over MQTT)")
		if err := twinbench.Run(ctx, *size, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "twin:", err)
			failed = true
		}
	}
	if *only == "" || *only == "groups" {
		fmt.Println("== node groups (traffic closure)")
		if err := groupbench.Run(ctx, binDir, *size, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "groups:", err)
			failed = true
		}
	}
	if *only == "" || *only == "sim" {
		fmt.Println("== sim (tether-sim scenarios against a real cloud)")
		if err := simbench.Run(ctx, simbench.Options{Bin: binDir, Size: *size, Nodes: *simNodes, Fanout: fanout}, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "sim:", err)
			failed = true
		}
	}
	if *only == "" || *only == "failover" {
		fmt.Println("== failover (two replicas on etcd)")
		o := failbench.Options{Bin: binDir, Nodes: 1000, Log: log}
		if *size == "full" {
			o.Nodes = 10000
		}
		if err := failbench.Run(ctx, o, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "failover:", err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		lim.Cur = lim.Max
		if lim.Max < 1<<20 {
			// Root may raise the hard limit too; if that fails the soft limit still rose.
			want := lim
			want.Cur, want.Max = 1<<20, 1<<20
			if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
				return
			}
		}
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// noteBacklog raises the kernel's per-CPU input queue for loopback packets when allowed: a
// thousand connections answering at once overflow the default of 1000 packets, and a dropped
// packet on loopback costs a 200 ms retransmission — for the baseline and tether alike. It says
// what it did, so the figures can be read with it.
func noteBacklog() {
	const path = "/proc/sys/net/core/netdev_max_backlog"
	cur, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var n int
	fmt.Sscan(string(cur), &n)
	if n >= 16384 {
		fmt.Printf("net.core.netdev_max_backlog = %d\n", n)
		return
	}
	if os.WriteFile(path, []byte("16384"), 0o644) == nil {
		fmt.Printf("net.core.netdev_max_backlog raised from %d to 16384 for this run\n", n)
		return
	}
	fmt.Printf("net.core.netdev_max_backlog = %d (could not raise it; loopback drops may add 200 ms outliers)\n", n)
}
