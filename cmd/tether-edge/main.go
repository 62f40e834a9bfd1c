package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/tetherhub/tether/broker"
	"github.com/tetherhub/tether/cli"
	"github.com/tetherhub/tether/edgehub"
	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/join"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/metaserver"
	"github.com/tetherhub/tether/nodestatus"
	"github.com/tetherhub/tether/pki"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/twin/engine"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = runCmd(args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "tether-edge", version)
	default:
		err = cli.Usagef("unknown command %q (run, version)", cmd)
	}
	return cli.Exit("tether-edge", err, stderr)
}

type config struct {
	nodeName, joinURL, token, dataDir string
	cloud                             []string
	metaListen, mqttListen            string
	labels                            map[string]string
	logFormat, logLevel               string
	hub                               edgehub.Config
	api                               kubeapi.Config
	mqtt                              broker.Config
	twin                              engine.Config
	outboxLimit                       int
	memoryLimitMiB                    int
	printConfig                       bool
}

func flags(c *config) *pflag.FlagSet {
	fs := pflag.NewFlagSet("tether-edge run", pflag.ContinueOnError)
	c.hub, c.api, c.mqtt = edgehub.DefaultConfig(), kubeapi.DefaultConfig(), broker.DefaultConfig()
	c.twin = engine.DefaultConfig("")
	fs.String("config", "", "YAML file whose keys are these flags' names")
	fs.BoolVar(&c.printConfig, "print-config", false, "print the effective configuration and exit")
	fs.StringVar(&c.nodeName, "node-name", "", "this node's name (required to join)")
	fs.StringSliceVar(&c.cloud, "cloud", nil, "hub addresses HOST:PORT[,HOST:PORT…]")
	fs.StringVar(&c.joinURL, "join", "", "join service https://HOST:PORT (first start only)")
	fs.StringVar(&c.token, "token", "", "join token (first start only)")
	cli.MarkSecret(fs, "token")
	fs.StringVar(&c.dataDir, "data-dir", "./data/edge", "directory for the store and the node's identity")
	fs.StringVar(&c.metaListen, "metaserver-listen", "127.0.0.1:10550", "metaserver address (Kubernetes-style API)")
	fs.StringVar(&c.mqttListen, "mqtt-listen", "127.0.0.1:1883", "MQTT broker address")
	fs.StringToStringVar(&c.labels, "node-labels", nil, "labels set on the Node at join (k=v,…)")
	fs.StringVar(&c.logFormat, "log-format", "json", "json or console")
	fs.StringVar(&c.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.DurationVar(&c.hub.WriteTimeout, "write-timeout", c.hub.WriteTimeout, "deadline of every write to the cloud")
	fs.DurationVar(&c.hub.BackoffMax, "reconnect-max", c.hub.BackoffMax, "longest wait between reconnect attempts")
	fs.IntVar(&c.hub.ReportWindow, "report-window", c.hub.ReportWindow, "reports in flight to the cloud")
	fs.IntVar(&c.outboxLimit, "outbox-limit", edgestore.DefaultConfig("").OutboxLimit, "reports the durable outbox holds before devices get errors (a full outbox shows as the Node condition OutboxFull)")
	fs.Float64Var(&c.hub.RenewAt, "cert-renew-at", c.hub.RenewAt, "share of the certificate's lifetime after which it is renewed over the hub session")
	fs.Uint32Var(&c.mqtt.MaxPacketSize, "mqtt-max-packet-bytes", c.mqtt.MaxPacketSize, "largest MQTT packet accepted")
	fs.IntVar(&c.mqtt.MaxClients, "mqtt-max-clients", c.mqtt.MaxClients, "most MQTT clients at once")
	fs.IntVar(&c.twin.MaxDevices, "max-devices", c.twin.MaxDevices, "most devices whose twins the node serves")
	fs.IntVar(&c.memoryLimitMiB, "memory-limit-mib", 0, "soft limit on the agent's Go memory (heap and goroutine stacks), in MiB: the garbage collector works harder near it, trading CPU for memory (0: none, or $GOMEMLIMIT)")
	fs.IntVar(&c.twin.Limits.MaxValueLen, "twin-max-value-length", c.twin.Limits.MaxValueLen, "longest twin value accepted, in characters")
	return fs
}

func runCmd(args []string, stdout, stderr io.Writer) error {
	var c config
	fs := flags(&c)
	if err := cli.Load(fs, args); err != nil {
		return err
	}
	if c.printConfig {
		return cli.Print(fs, stdout)
	}
	log, err := cli.NewLogger(stderr, c.logFormat, c.logLevel, "tether-edge")
	if err != nil {
		return err
	}
	c.hub.Cloud, c.hub.Agent, c.mqtt.Listen = c.cloud, version, c.mqttListen
	if err := c.hub.Validate(); err != nil {
		return cli.Usagef("cloud: %v", err)
	}
	if _, _, err := net.SplitHostPort(c.metaListen); err != nil {
		return cli.Usagef("metaserver-listen: %v", err)
	}
	if err := c.mqtt.Validate(); err != nil {
		return cli.Usagef("mqtt: %v", err)
	}
	if c.twin.MaxDevices < 1 {
		return cli.Usagef("max-devices: must be at least 1, got %d", c.twin.MaxDevices)
	}
	if c.twin.Limits.MaxValueLen < 1 {
		return cli.Usagef("twin-max-value-length: must be at least 1, got %d", c.twin.Limits.MaxValueLen)
	}
	if c.outboxLimit < 1 {
		return cli.Usagef("outbox-limit: must be at least 1, got %d", c.outboxLimit)
	}
	if c.memoryLimitMiB < 0 {
		return cli.Usagef("memory-limit-mib: must not be negative, got %d", c.memoryLimitMiB)
	}
	if c.memoryLimitMiB > 0 {
		debug.SetMemoryLimit(int64(c.memoryLimitMiB) << 20)
	}
	if err := join.ValidateLabels(c.labels); err != nil {
		return cli.Usagef("node-labels: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runEdge(ctx, &c, log)
}

// identity loads the node's identity, joining the cloud first if there is none.
func identity(ctx context.Context, c *config, log zerolog.Logger) (*edgehub.FileIdentity, error) {
	id, err := edgehub.LoadIdentity(c.dataDir)
	switch {
	case err == nil:
		if c.nodeName != "" && c.nodeName != id.Current().Name {
			return nil, cli.Usagef("node-name: %q, but the data dir %s holds the identity of %q", c.nodeName, c.dataDir, id.Current().Name)
		}
		return id, nil
	case !errors.Is(err, pki.ErrNoIdentity):
		return nil, err
	}
	if c.nodeName == "" || c.joinURL == "" || c.token == "" {
		return nil, cli.Usagef("this node has not joined yet: give --node-name, --join and --token")
	}
	if err := pki.ValidNodeName(c.nodeName); err != nil {
		return nil, cli.Usagef("node-name: %v", err)
	}
	tok, err := pki.ParseToken(c.token)
	if err != nil {
		return nil, cli.Usagef("token: %v", err)
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	wait := time.Second
	for {
		certPEM, caPEM, err := join.Join(ctx, c.joinURL, tok, c.nodeName, c.labels, key)
		if err == nil {
			if err := pki.SaveNodeIdentity(c.dataDir, certPEM, caPEM, key); err != nil {
				return nil, err
			}
			log.Info().Str("node", c.nodeName).Msg("joined the cloud")
			return edgehub.LoadIdentity(c.dataDir)
		}
		var jerr *join.Error
		if errors.As(err, &jerr) || errors.Is(err, join.ErrCAMismatch) {
			return nil, fmt.Errorf("join refused: %w", err) // retrying will not help
		}
		log.Warn().Err(err).Dur("retry_in", wait).Msg("cannot reach the join service yet")
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func isLoopback(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func runEdge(ctx context.Context, c *config, log zerolog.Logger) error {
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg := resource.New()
	// Open the store before joining: a second agent on the same data dir must fail at once.
	scfg := edgestore.DefaultConfig(filepath.Join(c.dataDir, "edge.db"))
	scfg.OutboxLimit = c.outboxLimit
	st, err := edgestore.Open(scfg, reg, log, promReg)
	if err != nil {
		return err
	}
	defer st.Close()
	id, err := identity(ctx, c, log)
	if err != nil {
		return err
	}
	node := id.Current().Name
	log = log.With().Str("node", node).Logger()
	hub, err := edgehub.New(c.hub, id, st, log, promReg)
	if err != nil {
		return err
	}
	meta := metaserver.New(st, reg, 10_000, 10_000, hub)
	api, err := kubeapi.New(c.api, reg, meta, log.With().Str("component", "metaserver").Logger(), promReg, "tether_edge_metaserver")
	if err != nil {
		return err
	}
	mqtt, err := broker.New(c.mqtt, log, promReg)
	if err != nil {
		return err
	}
	// The twin engine subscribes to the store's commits, so it is built before the first write.
	c.twin.Node = node
	twins, err := engine.New(c.twin, engine.Deps{Store: st, Broker: mqtt, Log: log, Metrics: promReg})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	cli.OpsHandlers(mux, promReg,
		cli.Check{Name: "store", Run: func(context.Context) error { _, _, err := st.List("/nodes/"); return err }},
		cli.Check{Name: "synced", Run: func(context.Context) error {
			if !st.Synced() {
				return errors.New("never synced with the cloud")
			}
			return nil
		}},
		cli.Check{Name: "cloud-link", Informational: true, Run: func(context.Context) error {
			s, d, last := hub.State()
			if s == edgehub.Connected {
				return nil
			}
			return fmt.Errorf("%s for %s: %s", s, d.Round(time.Second), last)
		}},
	)
	if isLoopback(c.metaListen) {
		// Profiles for operators and the twin benchmark; the metaserver has no authentication,
		// so only on loopback.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	}
	mux.Handle("/", api)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return hub.Run(gctx) })
	g.Go(func() error { return mqtt.Run(gctx) })
	g.Go(func() error { return twins.Run(gctx) })
	g.Go(func() error { return nodestatus.New(st, version, 2*time.Second, log).Run(gctx) })
	g.Go(func() error {
		ln, err := net.Listen("tcp", c.metaListen)
		if err != nil {
			return fmt.Errorf("metaserver: listen: %w", err)
		}
		log.Info().Str("addr", ln.Addr().String()).Msg("metaserver listening")
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case err := <-errc:
			return fmt.Errorf("metaserver: %w", err)
		case <-gctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		return nil
	})
	log.Info().Str("version", version).Str("data_dir", c.dataDir).Strs("cloud", c.cloud).Msg("tether-edge starting")
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		log.Info().Msg("tether-edge stopped")
		return nil
	}
	return err
}
