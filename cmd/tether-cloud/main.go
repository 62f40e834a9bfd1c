package main

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"

	"github.com/tetherhub/tether/cli"
	"github.com/tetherhub/tether/cloudapi"
	"github.com/tetherhub/tether/cloudhub"
	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/join"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/nodegroup"
	"github.com/tetherhub/tether/pki"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
	"github.com/tetherhub/tether/store/boltstore"
	"github.com/tetherhub/tether/store/etcdstore"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args, stdout, stderr)
	case "token":
		switch {
		case len(args) > 0 && args[0] == "create":
			err = tokenCreate(args[1:], stdout)
		case len(args) > 0 && (args[0] == "--help" || args[0] == "-h"):
			fmt.Fprintln(stdout, tokenUsage)
		default:
			err = cli.Usagef("%s", tokenUsage)
		}
	case "version":
		if len(args) > 0 {
			err = cli.Usagef("unexpected argument %q: version takes none", args[0])
			break
		}
		fmt.Fprintln(stdout, "tether-cloud", version)
	default:
		err = cli.Usagef("unknown command %q (serve, token create, version)", cmd)
	}
	return cli.Exit("tether-cloud", err, stderr)
}

const tokenUsage = "usage: tether-cloud token create --node NAME | --any-node [--ttl 24h] [--server URL]"

type config struct {
	dataDir, hubListen, joinListen, apiListen string
	advertise                                 []string
	storeKind                                 string
	etcdEndpoints                             []string
	etcd                                      etcdstore.Config
	apiTokenFile                              string
	apiTokens                                 []string // read from apiTokenFile by validate
	logFormat, logLevel                       string
	replica                                   string
	replicaTTL                                time.Duration
	history                                   int64
	hub                                       cloudhub.Config
	join                                      join.Config
	api                                       kubeapi.Config
	watchCache                                int
	watchCacheWindow                          time.Duration
	watchCacheBytes                           int64
	printConfig                               bool
	replaceClusterID                          string
}

func flags(c *config, stdout io.Writer) *pflag.FlagSet {
	fs := cli.NewFlagSet("tether-cloud serve", stdout)
	c.hub, c.join, c.api = cloudhub.DefaultConfig(), join.DefaultConfig(), kubeapi.DefaultConfig()
	c.etcd = etcdstore.DefaultConfig()
	host, _ := os.Hostname()
	fs.String("config", "", "YAML file whose keys are these flags' names")
	fs.BoolVar(&c.printConfig, "print-config", false, "print the effective configuration and exit")
	fs.StringVar(&c.replaceClusterID, "replace-cluster-id", "", "after restoring the store from a backup: if its cluster ID is this one (logged at start, and in /tether/v1/info), give it a new one, so that every edge gets a full reset; once only, as the ID then differs (with etcd, stop every replica first)")
	fs.StringVar(&c.dataDir, "data-dir", "./data/cloud", "directory for the store and the CA")
	fs.StringVar(&c.hubListen, "hub-listen", "0.0.0.0:10000", "hub address (TLS websocket, client certificates)")
	fs.StringVar(&c.joinListen, "join-listen", "0.0.0.0:10002", "join address (HTTPS)")
	fs.StringVar(&c.apiListen, "api-listen", "127.0.0.1:10080", "cloud API address (Kubernetes-style)")
	fs.StringSliceVar(&c.advertise, "advertise-address", []string{host}, "names and IPs edges use to reach this cloud (put in the hub certificate)")
	fs.StringVar(&c.storeKind, "store", "embedded", "embedded (bbolt) or etcd")
	fs.StringSliceVar(&c.etcdEndpoints, "etcd-endpoints", nil, "etcd endpoints for --store etcd")
	fs.StringVar(&c.etcd.Prefix, "etcd-prefix", c.etcd.Prefix, "prefix of this cluster's keys in etcd (clusters sharing an etcd need different ones)")
	fs.StringVar(&c.etcd.CAFile, "etcd-ca-file", "", "CA of etcd's serving certificate (turns TLS on)")
	fs.StringVar(&c.etcd.CertFile, "etcd-cert-file", "", "client certificate for etcd")
	fs.StringVar(&c.etcd.KeyFile, "etcd-key-file", "", "key of --etcd-cert-file")
	fs.DurationVar(&c.replicaTTL, "replica-ttl", 10*time.Second, "with --store etcd: how soon the other replicas learn that this one stopped (its etcd lease), and so mark NotReady the nodes it held that reconnect nowhere")
	fs.DurationVar(&c.etcd.CompactInterval, "etcd-compact-interval", c.etcd.CompactInterval, "how often etcd is compacted to --history revisions behind the last change; 0 leaves compaction to the operator")
	fs.StringVar(&c.apiTokenFile, "api-token-file", "", "file of bearer tokens (one per line); required when the API listens beyond loopback")
	fs.StringVar(&c.logFormat, "log-format", "json", "json or console")
	fs.StringVar(&c.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.StringVar(&c.replica, "replica-name", host, "this replica's name, shown in Node status")
	fs.Int64Var(&c.history, "history", 100_000, "revisions of change history kept for watches and catch-up")
	fs.IntVar(&c.watchCache, "watch-cache", 100_000, "recent changes kept in memory for API watches (and list continue tokens)")
	fs.Int64Var(&c.watchCacheBytes, "watch-cache-bytes", 256<<20, "and at most about this many bytes of objects in them (0: no byte bound)")
	fs.DurationVar(&c.watchCacheWindow, "watch-cache-window", 5*time.Minute, "and none older than this, once newer ones come (0: no age bound); a watch from further back relists")
	fs.DurationVar(&c.hub.Heartbeat, "heartbeat", c.hub.Heartbeat, "interval edges ping at; two missed intervals drop a node")
	fs.DurationVar(&c.hub.GracePeriod, "node-grace-period", c.hub.GracePeriod, "how long a disconnected node stays Ready")
	fs.DurationVar(&c.hub.StatusInterval, "node-status-interval", c.hub.StatusInterval, "how often a connected node's heartbeat time is written")
	fs.DurationVar(&c.hub.Progress, "progress-interval", c.hub.Progress, "how often idle nodes are told they are up to date")
	fs.DurationVar(&c.hub.WriteTimeout, "write-timeout", c.hub.WriteTimeout, "deadline of every network write to an edge")
	fs.DurationVar(&c.hub.SlowTimeout, "slow-node-timeout", c.hub.SlowTimeout, "a node that does not acknowledge for this long is disconnected")
	fs.IntVar(&c.hub.Window, "node-window", c.hub.Window, "messages in flight per node")
	fs.Int64Var(&c.hub.MaxMessage, "max-message-bytes", c.hub.MaxMessage, "largest websocket message accepted from an edge")
	fs.DurationVar(&c.join.CertValidity, "cert-validity", c.join.CertValidity, "validity of node certificates")
	fs.Int64Var(&c.api.MaxBodyBytes, "max-body-bytes", c.api.MaxBodyBytes, "largest API request body")
	fs.IntVar(&c.api.MaxWatches, "max-watches", c.api.MaxWatches, "most watches open on the API; more get 429 and Retry-After")
	return fs
}

func serve(args []string, stdout, stderr io.Writer) error {
	var c config
	fs := flags(&c, stdout)
	if err := cli.Load(fs, args); err != nil {
		return err
	}
	if c.printConfig {
		return cli.Print(fs, stdout)
	}
	log, err := cli.NewLogger(stderr, c.logFormat, c.logLevel, "tether-cloud")
	if err != nil {
		return err
	}
	if err := validate(&c); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = runCloud(ctx, &c, log)
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		log.Info().Msg("tether-cloud stopped") // a requested stop, at any stage, is not an error
		return nil
	}
	return err
}

// validate checks every flag, reporting a bad value as its flag (with the limits the packages
// export; their own Validate runs after and would name Config fields, not flags), then completes
// c: it fills in the package configurations and reads the API's bearer tokens. It starts and
// creates nothing.
func validate(c *config) error {
	err := cli.CheckFlags(
		cli.Flag("data-dir", cli.NotEmpty(c.dataDir)),
		cli.Flag("hub-listen", cli.HostPort(c.hubListen)),
		cli.Flag("join-listen", cli.HostPort(c.joinListen)),
		cli.Flag("api-listen", cli.HostPort(c.apiListen)),
		cli.Flag("advertise-address", certHostsErr(c.advertise)),
		cli.Flag("store", oneOf(c.storeKind, "embedded", "etcd")),
		cli.Flag("history", cli.AtLeast(c.history, 1000)),
		cli.Flag("watch-cache", cli.AtLeast(c.watchCache, 1)),
		cli.Flag("watch-cache-window", cli.AtLeast(c.watchCacheWindow, 0)),
		cli.Flag("watch-cache-bytes", cli.AtLeast(c.watchCacheBytes, 0)),
		cli.Flag("heartbeat", cli.Positive(c.hub.Heartbeat)),
		cli.Flag("node-grace-period", cli.Positive(c.hub.GracePeriod)),
		cli.Flag("node-status-interval", cli.Positive(c.hub.StatusInterval)),
		cli.Flag("progress-interval", cli.Positive(c.hub.Progress)),
		cli.Flag("write-timeout", cli.Positive(c.hub.WriteTimeout)),
		cli.Flag("slow-node-timeout", cli.Positive(c.hub.SlowTimeout)),
		cli.Flag("node-window", cli.Between(c.hub.Window, 1, cloudhub.MaxWindow)),
		cli.Flag("max-message-bytes", cli.AtLeast(c.hub.MaxMessage, cloudhub.MinMaxMessage)),
		cli.Flag("cert-validity", cli.Between(c.join.CertValidity, join.MinCertValidity, join.MaxCertValidity)),
		cli.Flag("max-body-bytes", cli.AtLeast(c.api.MaxBodyBytes, kubeapi.MinMaxBodyBytes)),
		cli.Flag("max-watches", cli.AtLeast(c.api.MaxWatches, 1)),
	)
	if err != nil {
		return err
	}
	if c.storeKind == "etcd" {
		err := cli.CheckFlags(
			cli.Flag("etcd-endpoints", etcdEndpointsErr(c.etcdEndpoints)),
			cli.Flag("etcd-prefix", etcdPrefixErr(c.etcd.Prefix)),
			cli.Flag("etcd-key-file", requiredWith(c.etcd.KeyFile, c.etcd.CertFile, "--etcd-cert-file")),
			cli.Flag("etcd-cert-file", requiredWith(c.etcd.CertFile, c.etcd.KeyFile, "--etcd-key-file")),
			cli.Flag("etcd-compact-interval", cli.AtLeast(c.etcd.CompactInterval, 0)),
			cli.Flag("replica-ttl", cli.Between(c.replicaTTL, 2*time.Second, 10*time.Minute)),
		)
		if err != nil {
			return err
		}
		c.etcd.Endpoints, c.etcd.History = c.etcdEndpoints, c.history
		if err := c.etcd.Validate(); err != nil {
			return cli.Usagef("%v", err)
		}
	}
	if !isLoopback(c.apiListen) {
		if c.apiTokenFile == "" {
			return cli.Usagef("--api-token-file: required when --api-listen (%s) is not a loopback address", c.apiListen)
		}
		if c.apiTokens, err = readTokens(c.apiTokenFile); err != nil {
			return cli.FlagError("api-token-file", err)
		}
	}
	c.hub.Listen = c.hubListen
	c.hub.History = int(c.history)
	// The packages' own checks catch what the flag checks above do not know of.
	for _, v := range []interface{ Validate() error }{c.hub, c.join, c.api} {
		if err := v.Validate(); err != nil {
			return cli.Usagef("%v", err)
		}
	}
	return nil
}

func oneOf(v string, allowed ...string) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
}

// certHostsErr checks the names and IPs for the server certificate as pki.IssueServer will,
// so that a bad one is reported before the data dir and the CA are created.
func certHostsErr(hosts []string) error {
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" || net.ParseIP(h) != nil {
			continue
		}
		name := strings.TrimPrefix(strings.ToLower(strings.TrimSuffix(h, ".")), "*.")
		if pki.ValidNodeName(name) != nil { // a Node name is a DNS-1123 subdomain
			if strings.Contains(h, ":") {
				return fmt.Errorf("%q is not an IP address or DNS name (give the host without a port)", h)
			}
			return fmt.Errorf("%q is not an IP address or DNS name", h)
		}
	}
	return nil
}

func etcdEndpointsErr(endpoints []string) error {
	if len(endpoints) == 0 {
		return errors.New("required with --store etcd")
	}
	for _, e := range endpoints {
		if strings.TrimSpace(e) == "" {
			return errors.New("an endpoint is empty")
		}
	}
	return nil
}

func etcdPrefixErr(prefix string) error {
	if !strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/") || strings.Contains(prefix, "!") {
		return fmt.Errorf("%q must start with /, not end with / and hold no !", prefix)
	}
	return nil
}

// requiredWith is the error of a flag whose value v is empty while that of its partner, other, is
// not: a client certificate needs its key and the reverse.
func requiredWith(v, other, otherFlag string) error {
	if v == "" && other != "" {
		return fmt.Errorf("required with %s", otherFlag)
	}
	return nil
}

func isLoopback(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func runCloud(ctx context.Context, c *config, log zerolog.Logger) error {
	now := time.Now
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var backend store.Backend
	var replicas *etcdstore.Store // with --store etcd: the replicas' liveness
	c.hub.SharedStore = c.storeKind == "etcd"
	var ca *pki.CA
	var serverCert tls.Certificate
	issue := func() (err error) {
		serverCert, err = ca.IssueServer(certHosts(c), 365*24*time.Hour, now())
		if err != nil {
			return cli.FlagError("advertise-address", err)
		}
		return nil
	}
	switch c.storeKind {
	case "etcd":
		c.etcd.ReplaceClusterID = c.replaceClusterID
		es, err := etcdstore.Open(ctx, c.etcd, log, promReg)
		if err != nil {
			return err
		}
		defer es.Close()
		backend, replicas = es, es
		// The replicas on one etcd sign with one CA, kept there by the first of them.
		if ca, err = pki.LoadSharedCA(ctx, c.dataDir, now(), es); err != nil {
			return err
		}
		if err := issue(); err != nil {
			return err
		}
	default:
		var err error
		if ca, err = pki.LoadOrCreateCA(c.dataDir, now()); err != nil {
			return err
		}
		if err := issue(); err != nil {
			return err
		}
		bcfg := boltstore.DefaultConfig(filepath.Join(c.dataDir, "cloud.db"))
		bcfg.History, bcfg.ReplaceClusterID = c.history, c.replaceClusterID
		bs, err := boltstore.Open(bcfg, log, promReg)
		if err != nil {
			return err
		}
		defer bs.Close()
		backend = bs
	}

	reg := resource.New()
	ixCfg := index.DefaultConfig()
	ixCfg.Preload = c.history
	ix, err := index.New(ixCfg, backend, reg, log, promReg)
	if err != nil {
		return err
	}
	objects := cloudapi.NewObjects(backend, ix, reg, c.watchCache, 10_000, now)
	objects.WatchCache().LimitBytes(c.watchCacheBytes)
	if c.watchCacheWindow > 0 {
		objects.WatchCache().LimitAge(c.watchCacheWindow, now)
	}
	tokens := cloudapi.NewTokens(backend, ca.Hash(), now, log)
	tokens.RevokeWithNodes(ctx, ix)
	namespaces := cloudapi.NewNamespaces(objects, reg, log.With().Str("component", "namespaces").Logger())
	nodes := cloudapi.NewNodes(objects, reg)
	status := cloudapi.NewNodeStatus(objects, reg, c.replica, now)
	if replicas != nil {
		status.UseLiveness(replicas, c.hub.GracePeriod)
	}
	uploads := cloudapi.NewUploads(backend, cloudapi.DefaultUploadsConfig(), now, log, promReg)
	status.RouteDeviceReports(cloudapi.NewDeviceReports(objects, reg, uploads, promReg))
	groups, err := nodegroup.New(nodegroup.DefaultConfig(), ix, objects, reg, log, promReg)
	if err != nil {
		return err
	}
	api, err := kubeapi.New(c.api, reg, objects, log.With().Str("component", "api").Logger(), promReg, "tether_cloud_api")
	if err != nil {
		return err
	}
	var epochs cloudhub.Epochs // several replicas on one store fence each other's reports
	if replicas != nil {
		epochs = cloudapi.NewReportEpochs(backend, c.hub.WriteTimeout)
	}
	hub, err := cloudhub.New(c.hub, cloudhub.Deps{
		Index: ix, Registry: reg, ClusterID: backend.ClusterID(), Status: status, Reports: status, Epochs: epochs, StoreRev: backend.Rev,
		Forwarder: cloudapi.NewForwarder(api, objects),
		Signer:    ca, CertValidity: c.join.CertValidity, TLS: ca.ServerTLSConfig(serverCert),
		Log: log, Metrics: promReg, Now: now,
	})
	if err != nil {
		return err
	}
	joinSrv, err := join.NewServer(ca, tokens, nodes, c.join, log, promReg)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	cli.OpsHandlers(mux, promReg,
		cli.Check{Name: "store", Run: func(ctx context.Context) error { _, err := backend.Rev(ctx); return err }},
		cli.Check{Name: "index", Run: func(context.Context) error {
			select {
			case <-ix.Current():
				return nil
			default:
				return errors.New("loading")
			}
		}},
	)
	mux.Handle(cloudapi.TokensPath, tokens)
	mux.Handle(cloudapi.UploadsPath, uploads)
	info, _ := json.Marshal(map[string]string{"version": version, "cluster": backend.ClusterID(), "caHash": ca.Hash(), "replica": c.replica})
	mux.HandleFunc("/tether/v1/info", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(info)
	})
	// Profiles for operators (and the benchmarks' memory figures: heap?gc=1 collects first).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.Handle("/", api)
	var apiHandler http.Handler = mux
	apiTLS := !isLoopback(c.apiListen)
	if apiTLS {
		apiHandler = bearer(c.apiTokens, mux)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ix.Run(gctx) })
	g.Go(func() error { return hub.Run(gctx) })
	g.Go(func() error { return uploads.Run(gctx) })
	g.Go(func() error { return groups.Run(gctx) })
	g.Go(func() error { return namespaces.Run(gctx) })
	if replicas != nil {
		g.Go(func() error { return replicas.KeepReplica(gctx, c.replica, c.replicaTTL) })
		g.Go(func() error {
			return replicas.WatchReplicasGone(gctx, func(name string) {
				if status.HolderStopped(name) { // not this one's own key, revoked on the way out
					log.Info().Str("replica", name).Msg("a replica stopped; timing the nodes it held from now")
					hub.RecheckElsewhere()
				}
			})
		})
	}
	joinHTTP := joinSrv.HTTPServer(serverCert)
	joinHTTP.Addr = c.joinListen
	g.Go(func() error { return serveHTTP(gctx, joinHTTP, c.joinListen, true, "join", maxJoinConns, log) })
	apiHTTP := &http.Server{Handler: apiHandler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	if apiTLS {
		apiHTTP.TLSConfig = join.TLSConfig(serverCert)
	}
	g.Go(func() error { return serveHTTP(gctx, apiHTTP, c.apiListen, apiTLS, "api", maxAPIConns, log) })
	log.Info().Str("version", version).Str("data_dir", c.dataDir).Str("cluster", backend.ClusterID()).
		Str("ca_hash", ca.Hash()).Msg("tether-cloud starting")
	return g.Wait()
}

// certHosts is what the certificate the hub, join and API ports share names: the advertised
// names and IPs, and the specific IP each of those ports listens on, so that a client dialing
// that IP (kubectl at --api-listen, say) verifies it without --advertise-address. A wildcard
// listen address (0.0.0.0, ::) names no address and adds nothing.
func certHosts(c *config) []string {
	hosts := slices.Clone(c.advertise)
	for _, addr := range []string{c.hubListen, c.joinListen, c.apiListen} {
		host, _, _ := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			hosts = append(hosts, ip.String())
		}
	}
	return hosts
}

// serveHTTP runs srv on addr until ctx ends, then shuts it down.
// Connections the join port and the API port serve at once; more wait to be accepted. A join is
// one short request (an enrolment storm runs a few dozen at a time); the API's connections are
// operators' and controllers', watches included.
const (
	maxJoinConns = 1024
	maxAPIConns  = 4096
)

// limitedListen listens on addr and accepts at most maxConns connections at once: a client
// opening connections and stalling them waits in the backlog instead of using up the process's
// file descriptors.
func limitedListen(addr string, maxConns int) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return netutil.LimitListener(ln, maxConns), nil
}

func serveHTTP(ctx context.Context, srv *http.Server, addr string, tls bool, name string, maxConns int, log zerolog.Logger) error {
	ln, err := limitedListen(addr, maxConns)
	if err != nil {
		return fmt.Errorf("%s: listen: %w", name, err)
	}
	log.Info().Str("addr", ln.Addr().String()).Msg(name + " listening")
	errc := make(chan error, 1)
	go func() {
		if tls {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close() // watches do not end on their own
	}
	return nil
}

func readTokens(path string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(raw), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no token", path)
	}
	return out, nil
}

// bearer admits requests carrying one of tokens, except the liveness and readiness probes.
func bearer(tokens []string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		for _, t := range tokens {
			if subtle.ConstantTimeCompare([]byte(got), []byte(t)) == 1 {
				next.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"a valid bearer token is required","reason":"Unauthorized","code":401}`))
	})
}

func tokenCreate(args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("tether-cloud token create", stdout)
	server := fs.String("server", "http://127.0.0.1:10080", "the cloud API")
	node := fs.String("node", "", "bind the token to this node name")
	anyNode := fs.Bool("any-node", false, "make a fleet token, valid for any node name")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	bearerFile := fs.String("token-file", "", "file holding a bearer token for the API (when it is not on loopback)")
	caFile := fs.String("ca-file", "", "the cloud CA (its data dir's ca.crt) to trust an HTTPS --server")
	fs.String("config", "", "YAML file whose keys are these flags' names")
	if err := cli.Load(fs, args); err != nil {
		return err
	}
	if (*node == "") == !*anyNode {
		return cli.Usagef("give exactly one of --node NAME or --any-node")
	}
	if *node != "" {
		if err := pki.ValidNodeName(*node); err != nil {
			return cli.FlagError("node", err)
		}
	}
	if err := cli.CheckFlags(cli.Flag("ttl", cli.Positive(*ttl)), cli.Flag("server", serverURLErr(*server))); err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{"node": *node, "anyNode": *anyNode, "ttl": ttl.String()})
	req, err := http.NewRequest(http.MethodPost, strings.TrimSuffix(*server, "/")+cloudapi.TokensPath, bytes.NewReader(body))
	if err != nil {
		return cli.FlagError("server", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if *bearerFile != "" {
		toks, err := readTokens(*bearerFile)
		if err != nil {
			return cli.FlagError("token-file", err)
		}
		req.Header.Set("Authorization", "Bearer "+toks[0])
	}
	client := &http.Client{Timeout: 15 * time.Second}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return cli.FlagError("ca-file", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return cli.Usagef("--ca-file: %s holds no PEM certificate", *caFile)
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the cloud API at %s: %w", *server, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(raw, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(raw))
		}
		return fmt.Errorf("the cloud refused: %s (HTTP %d)", e.Error, resp.StatusCode)
	}
	var tr cloudapi.TokenResponse
	if err := json.Unmarshal(raw, &tr); err != nil {
		return fmt.Errorf("unexpected answer from the cloud: %w", err)
	}
	fmt.Fprintln(stdout, tr.Token)
	return nil
}

// serverURLErr is nil if raw is an http:// or https:// URL with a host.
func serverURLErr(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL of the cloud API", raw)
	}
	return nil
}
