package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/edgehub"
	"github.com/tetherhub/tether/internal/wsframe"
	"github.com/tetherhub/tether/join"
	"github.com/tetherhub/tether/pki"
)

// FleetConfig describes the simulated edges.
type FleetConfig struct {
	Cloud  []string  // hub addresses
	Join   string    // join service URL
	Token  pki.Token // a fleet token (--any-node)
	Nodes  int
	Prefix string // node names are Prefix + index
	// LocalAddrs are source IPs the edges dial from, round robin (127.0.0.x).
	LocalAddrs []string
	// Hub is the template of every edge's hub client configuration.
	Hub edgehub.Config
	// JoinConcurrency bounds joins in flight.
	JoinConcurrency int
	// Wire, if set, counts every edge's bytes on the wire.
	Wire *Wire
	// JoinRetries, if set, counts joins tried again after a 5xx or no answer.
	JoinRetries *atomic.Int64
}

// Edge is one simulated edge node.
type Edge struct {
	Name   string
	Store  *MemStore
	Client *edgehub.Client
	id     *memIdentity

	mu     sync.Mutex // guards cancel and done
	cancel context.CancelFunc
	done   chan struct{}
}

// Start runs the edge's hub client until Stop or ctx ends. Starting a running edge does nothing.
func (e *Edge) Start(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cancel != nil {
		return
	}
	ctx, e.cancel = context.WithCancel(ctx)
	e.done = make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		e.Client.Run(ctx)
	}(e.done)
}

// Stop ends the edge's session (its store is kept, as a real edge's would be) and waits.
func (e *Edge) Stop() {
	e.mu.Lock()
	cancel, done := e.cancel, e.done
	e.cancel, e.done = nil, nil
	e.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// Fleet is a set of simulated edges.
type Fleet struct {
	Edges []*Edge
	log   zerolog.Logger
}

// memIdentity is an edgehub.Identity kept in memory.
type memIdentity struct {
	mu  sync.Mutex
	cur *pki.NodeIdentity
}

func (m *memIdentity) Current() *pki.NodeIdentity {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur
}

func (m *memIdentity) Renewed(certPEM []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, err := pki.NewNodeIdentity(certPEM, m.cur.CAPEM, m.cur.Key)
	if err != nil {
		return err
	}
	m.cur = id
	return nil
}

// JoinFleet joins cfg.Nodes nodes (each with its own key and certificate) and prepares a hub
// client for each. progress, if not nil, is called as joins complete.
func JoinFleet(ctx context.Context, cfg FleetConfig, log zerolog.Logger, progress func(done int)) (*Fleet, error) {
	if cfg.JoinConcurrency < 1 {
		cfg.JoinConcurrency = 16
	}
	f := &Fleet{Edges: make([]*Edge, cfg.Nodes), log: log}
	if cfg.Hub.Frames == nil {
		cfg.Hub.Frames = new(wsframe.Reader) // one for the fleet: a few warm buffers, not one per edge
	}
	var next, done atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, cfg.JoinConcurrency)
	for w := 0; w < cfg.JoinConcurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Nodes || ctx.Err() != nil {
					return
				}
				e, err := joinOne(ctx, cfg, i, log)
				if err != nil {
					select {
					case errc <- err:
					default:
					}
					return
				}
				f.Edges[i] = e
				if n := done.Add(1); progress != nil {
					progress(int(n))
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return nil, err
	default:
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return f, nil
}

func joinOne(ctx context.Context, cfg FleetConfig, i int, log zerolog.Logger) (*Edge, error) {
	name := fmt.Sprintf("%s%05d", cfg.Prefix, i)
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	var certPEM, caPEM []byte
	for attempt := 0; ; attempt++ {
		certPEM, caPEM, err = join.Join(ctx, cfg.Join, cfg.Token, name, nil, key)
		if err == nil {
			break
		}
		var jerr *join.Error
		if errors.As(err, &jerr) && jerr.Status < 500 || attempt == 5 || ctx.Err() != nil {
			return nil, fmt.Errorf("join %s: %w", name, err)
		}
		if cfg.JoinRetries != nil {
			cfg.JoinRetries.Add(1)
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	nid, err := pki.NewNodeIdentity(certPEM, caPEM, key)
	if err != nil {
		return nil, err
	}
	id := &memIdentity{cur: nid}
	hc := cfg.Hub
	hc.Cloud = cfg.Cloud
	if len(cfg.LocalAddrs) > 0 {
		hc.LocalAddr = cfg.LocalAddrs[i%len(cfg.LocalAddrs)]
	}
	if cfg.Wire != nil {
		hc.WrapConn = cfg.Wire.Wrap
	}
	st := NewMemStore()
	client, err := edgehub.New(hc, id, st, log.With().Str("node", name).Logger(), nil)
	if err != nil {
		return nil, err
	}
	return &Edge{Name: name, Store: st, Client: client, id: id}, nil
}

// Run runs every edge's hub client until ctx ends, then stops them all.
func (f *Fleet) Run(ctx context.Context) {
	for _, e := range f.Edges {
		e.Start(ctx)
	}
	<-ctx.Done()
	f.Stop()
}

// RunUntilConnected runs f in the background (Run) and waits, at most d, until every edge is
// connected. stop ends the run and waits for it; on an error the run is already stopped.
func (f *Fleet) RunUntilConnected(ctx context.Context, d time.Duration) (stop func(), err error) {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); f.Run(rctx) }()
	stop = func() { cancel(); <-done }
	if err := WaitUntil(ctx, d, func() bool { return f.Connected() == len(f.Edges) }); err != nil {
		stop()
		return nil, fmt.Errorf("connecting %d edges: %w (%d connected)", len(f.Edges), err, f.Connected())
	}
	return stop, nil
}

// LoopbackAddrs lists 127.0.0.1 … 127.0.0.n: source addresses to spread edges over, each with
// its own range of ephemeral ports.
func LoopbackAddrs(n int) []string {
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("127.0.0.%d", i+1)
	}
	return addrs
}

// Connected counts edges whose session is up.
func (f *Fleet) Connected() int {
	n := 0
	for _, e := range f.Edges {
		if s, _, _ := e.Client.State(); s == edgehub.Connected {
			n++
		}
	}
	return n
}

// Sessions counts the sessions the edges have opened with the cloud, reconnects included.
func (f *Fleet) Sessions() int64 {
	var n int64
	for _, e := range f.Edges {
		n += e.Client.Sessions()
	}
	return n
}

// Stale counts the changes the edges received out of order (MemStore.Stale).
func (f *Fleet) Stale() int {
	n := 0
	for _, e := range f.Edges {
		n += e.Store.Stale()
	}
	return n
}

// Stop stops every edge, at once, and waits for them.
func (f *Fleet) Stop() {
	var wg sync.WaitGroup
	for _, e := range f.Edges {
		wg.Add(1)
		go func() { defer wg.Done(); e.Stop() }()
	}
	wg.Wait()
}

// Synced counts edges whose cursor is at least rev in cluster.
func (f *Fleet) Synced(cluster string, rev uint64) int {
	n := 0
	for _, e := range f.Edges {
		if c, cur := e.Store.Cursor(); c == cluster && cur >= rev {
			n++
		}
	}
	return n
}

// Wire counts the bytes the simulated edges send and receive on their TCP connections (TLS
// records, websocket frames and control frames included), for traffic figures.
type Wire struct {
	In, Out atomic.Int64
}

// Wrap returns conn counting into w.
func (w *Wire) Wrap(conn net.Conn) net.Conn { return &countingConn{Conn: conn, w: w} }

type countingConn struct {
	net.Conn
	w *Wire
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.In.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.w.Out.Add(int64(n))
	return n, err
}
