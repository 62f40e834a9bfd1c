package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
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
	"github.com/tetherhub/tether/internal/connlimit"
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
		if len(args) > 0 {
			err = cli.Usagef("unexpected argument %q: version takes none", args[0])
			break
		}
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
	metaMaxConns                      int
	labels                            map[string]string
	joinToken                         pki.Token // parsed from token by validate
	logFormat, logLevel               string
	hub                               edgehub.Config
	api                               kubeapi.Config
	mqtt                              broker.Config
	twin                              engine.Config
	outboxLimit                       int
	memoryLimitMiB                    int
	printConfig                       bool
}

func flags(c *config, stdout io.Writer) *pflag.FlagSet {
	fs := cli.NewFlagSet("tether-edge run", stdout)
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
	fs.IntVar(&c.metaMaxConns, "metaserver-max-connections", 1024, "most connections the metaserver holds open; more are answered 503 at once")
	fs.IntVar(&c.api.MaxWatches, "metaserver-max-watches", c.api.MaxWatches, "most watches open on the metaserver; more get 429 and Retry-After")
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
	fs.IntVar(&c.mqtt.MaxSubscriptionsPerClient, "mqtt-max-subscriptions", c.mqtt.MaxSubscriptionsPerClient, "most topic filters one MQTT client may hold (a mapper subscribing per device needs a few per device)")
	fs.IntVar(&c.twin.MaxDevices, "max-devices", c.twin.MaxDevices, "most devices whose twins the node serves")
	fs.IntVar(&c.memoryLimitMiB, "memory-limit-mib", 0, "soft limit on the agent's Go memory (heap and goroutine stacks), in MiB: the garbage collector works harder near it, trading CPU for memory (0: none, or $GOMEMLIMIT)")
	fs.IntVar(&c.twin.Limits.MaxValueLen, "twin-max-value-length", c.twin.Limits.MaxValueLen, "longest twin value accepted, in characters")
	fs.DurationVar(&c.twin.StatusEvery, "device-status-interval", c.twin.StatusEvery, "how often, at most, what devices reported is written into the edge's own copies of their Devices (kubectl on the metaserver shows it)")
	fs.IntVar(&c.twin.StatusRate, "device-status-rate", c.twin.StatusRate, "and at most this many Devices written a second (reports go up to the cloud at once either way)")
	return fs
}

func runCmd(args []string, stdout, stderr io.Writer) error {
	var c config
	fs := flags(&c, stdout)
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
	if err := validate(&c); err != nil {
		return err
	}
	// Whether this node must still join decides which flags it needs; reading the data dir
	// creates nothing in it.
	id, err := edgehub.LoadIdentity(c.dataDir)
	switch {
	case errors.Is(err, pki.ErrNoIdentity):
		if err := joinFlagsErr(&c); err != nil {
			return err
		}
	case err != nil:
		return err
	case c.nodeName != "" && c.nodeName != id.Current().Name:
		return cli.Usagef("--node-name: %q, but the data dir %s holds the identity of %q", c.nodeName, c.dataDir, id.Current().Name)
	}
	if c.memoryLimitMiB > 0 {
		debug.SetMemoryLimit(int64(c.memoryLimitMiB) << 20)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = runEdge(ctx, &c, id, log)
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		log.Info().Msg("tether-edge stopped") // a requested stop, at any stage (joining too), is not an error
		return nil
	}
	return err
}

// validate checks every flag, reporting a bad value as its flag (with the limits the packages
// export; their own Validate runs after and would name Config fields, not flags), then completes
// c: it fills in the package configurations and parses the join token. It starts and creates
// nothing.
func validate(c *config) error {
	err := cli.CheckFlags(
		cli.Flag("data-dir", cli.NotEmpty(c.dataDir)),
		cli.Flag("cloud", cloudErr(c.cloud)),
		cli.Flag("metaserver-listen", cli.HostPort(c.metaListen)),
		cli.Flag("mqtt-listen", cli.HostPort(c.mqttListen)),
		cli.Flag("metaserver-max-connections", cli.AtLeast(c.metaMaxConns, 1)),
		cli.Flag("metaserver-max-watches", cli.AtLeast(c.api.MaxWatches, 1)),
		cli.Flag("node-name", ifGiven(c.nodeName, pki.ValidNodeName)),
		cli.Flag("join", ifGiven(c.joinURL, joinURLErr)),
		cli.Flag("node-labels", join.ValidateLabels(c.labels)),
		cli.Flag("write-timeout", cli.Positive(c.hub.WriteTimeout)),
		// BackoffMin is no flag: a longest wait below it is as wrong as a negative one.
		cli.Flag("reconnect-max", cli.AtLeast(c.hub.BackoffMax, c.hub.BackoffMin)),
		cli.Flag("report-window", cli.Between(c.hub.ReportWindow, 1, edgehub.MaxReportWindow)),
		cli.Flag("cert-renew-at", shareErr(c.hub.RenewAt)),
		cli.Flag("mqtt-max-packet-bytes", cli.Between(c.mqtt.MaxPacketSize, broker.MinPacketSize, broker.MaxMQTTPacket)),
		// broker.Config.Validate: MaxClients+MaxPendingConnections must fit in an int32.
		cli.Flag("mqtt-max-clients", cli.Between(c.mqtt.MaxClients, 1, math.MaxInt32-c.mqtt.MaxPendingConnections)),
		cli.Flag("mqtt-max-subscriptions", cli.AtLeast(c.mqtt.MaxSubscriptionsPerClient, 1)),
		cli.Flag("max-devices", cli.AtLeast(c.twin.MaxDevices, 1)),
		cli.Flag("twin-max-value-length", cli.AtLeast(c.twin.Limits.MaxValueLen, 1)),
		cli.Flag("device-status-interval", cli.Positive(c.twin.StatusEvery)),
		cli.Flag("device-status-rate", cli.AtLeast(c.twin.StatusRate, 1)),
		cli.Flag("outbox-limit", cli.AtLeast(c.outboxLimit, 1)),
		cli.Flag("memory-limit-mib", cli.AtLeast(c.memoryLimitMiB, 0)),
	)
	if err != nil {
		return err
	}
	if c.token != "" {
		if c.joinToken, err = pki.ParseToken(c.token); err != nil {
			return cli.FlagError("token", err) // the error says what is wrong, never the token
		}
	}
	c.hub.Cloud, c.hub.Agent, c.mqtt.Listen = c.cloud, version, c.mqttListen
	// The packages' own checks catch what the flag checks above do not know of.
	for _, v := range []interface{ Validate() error }{c.hub, c.mqtt} {
		if err := v.Validate(); err != nil {
			return cli.Usagef("%v", err)
		}
	}
	return nil
}

// joinFlagsErr names the flags a node that has not joined yet lacks.
func joinFlagsErr(c *config) error {
	var missing []string
	for _, f := range []struct{ name, v string }{{"node-name", c.nodeName}, {"join", c.joinURL}, {"token", c.token}} {
		if f.v == "" {
			missing = append(missing, "--"+f.name)
		}
	}
	if len(missing) > 0 {
		return cli.Usagef("%s: required: this node has not joined yet (no identity in %s)", strings.Join(missing, ", "), c.dataDir)
	}
	return nil
}

func ifGiven(v string, check func(string) error) error {
	if v == "" {
		return nil
	}
	return check(v)
}

func cloudErr(addrs []string) error {
	if len(addrs) == 0 {
		return errors.New("required: the hub's HOST:PORT[,HOST:PORT…]")
	}
	for _, a := range addrs {
		if err := cli.HostPort(a); err != nil {
			return err
		}
	}
	return nil
}

// joinURLErr is nil if raw is what join.Join accepts: https://HOST:PORT, without user, query or
// fragment. Checked at startup: join.Join's error would only come back at the first attempt,
// which the retry loop then repeats forever.
func joinURLErr(raw string) error {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q must be https://HOST:PORT", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must be https://HOST:PORT, without user, query or fragment", u.Redacted())
	}
	return nil
}

// shareErr is nil if v is strictly between 0 and 1.
func shareErr(v float64) error {
	if !(v > 0 && v < 1) {
		return fmt.Errorf("must be between 0 and 1 (exclusive), got %g", v)
	}
	return nil
}

// joinCloud joins the cloud, retrying while the join service cannot be reached, and returns the
// identity it stored in the data dir.
func joinCloud(ctx context.Context, c *config, log zerolog.Logger) (*edgehub.FileIdentity, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	wait := time.Second
	for {
		certPEM, caPEM, err := join.Join(ctx, c.joinURL, c.joinToken, c.nodeName, c.labels, key)
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
		if ctx.Err() != nil {
			return nil, ctx.Err() // stopped during the attempt
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

// runEdge runs the agent as id, the identity runCmd found in the data dir; with none (nil) the
// node joins first.
func runEdge(ctx context.Context, c *config, id *edgehub.FileIdentity, log zerolog.Logger) error {
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
	if id == nil {
		if id, err = joinCloud(ctx, c, log); err != nil {
			return err
		}
	}
	node := id.Current().Name
	log = log.With().Str("node", node).Logger()
	hub, err := edgehub.New(c.hub, id, st, log, promReg)
	if err != nil {
		return err
	}
	// The watch cache: 10,000 changes, and no more than 4 MiB of them. A Device with two
	// properties and its status is about 650 bytes as the engine's tests store it (more with
	// the cloud's metadata), so 4 MiB still holds thousands of a busy node's status writes, which
	// come at most 100 a second.
	meta := metaserver.New(st, reg, 10_000, 4<<20, 10_000, hub)
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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}

	raw, err := net.Listen("tcp", c.metaListen)
	if err != nil {
		return fmt.Errorf("metaserver: listen: %w", err)
	}
	ln := metaListener(raw, c.metaMaxConns, promReg)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return hub.Run(gctx) })
	g.Go(func() error { return mqtt.Run(gctx) })
	g.Go(func() error { return twins.Run(gctx) })
	g.Go(func() error { return nodestatus.New(st, version, 2*time.Second, log).Run(gctx) })
	g.Go(func() error {
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
	return g.Wait()
}

// metaListener caps the metaserver's open connections (package connlimit) and reports them.
func metaListener(raw net.Listener, maxConns int, reg prometheus.Registerer) *connlimit.Listener {
	refused := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tether_edge_metaserver_connections_refused_total",
		Help: "Connections to the metaserver answered 503 and closed because --metaserver-max-connections were open.",
	})
	ln := connlimit.New(raw, maxConns, refused.Inc)
	reg.MustRegister(refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_edge_metaserver_connections",
		Help: "Connections the metaserver holds open.",
	}, func() float64 { return float64(ln.Open()) }))
	return ln
}
