package etcdstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tetherhub/tether/store"
)

// Names of the store's own keys, after Prefix. Changing them is a data-format change.
const (
	keyCluster = "!cluster-id" // random, made by the first replica that opens the prefix
	keyRev     = "!rev"        // put by every write: its ModRevision is the revision of the last change
	keyCompact = "!compacted"  // decimal etcd revision of the last compaction a replica made
	keyCA      = "!ca"         // the replicas' shared CA (ClaimCA), stored by the first replica
	// keyReplicas + a replica's name is on that replica's lease while it runs (KeepReplica).
	keyReplicas = "!replicas/"
)

var (
	// ErrBadKey is returned for a key that does not start with "/": every store key does, and the
	// store's own keys live outside that space.
	ErrBadKey = errors.New("etcdstore: key does not start with /")
	// ErrEtcdChanged is returned by every call, and ends every watch, once etcd is seen not to
	// hold the history the store opened on: another etcd cluster answers, the cluster ID key is
	// gone or changed, or the store's revision went back (etcd wiped, or restored from a backup).
	// Mixing two histories would corrupt every edge's view, so the store stops; restart the
	// process to open it afresh (edges then get a reset).
	ErrEtcdChanged = errors.New("etcdstore: etcd no longer holds the history the store opened on (wiped or restored?)")
)

// Store is a store.Backend over an etcd cluster. It is safe for concurrent use.
type Store struct {
	cfg     Config
	client  *clientv3.Client
	log     zerolog.Logger
	metrics *metrics

	// Set at Open.
	cluster                        string // tether's cluster ID
	etcdID                         uint64 // etcd's cluster ID
	dataFrom, dataEnd              string // the etcd range holding every store key
	clusterKey, revKey, compactKey string

	ctx    context.Context // ended by Close; background work and watches run under it
	cancel context.CancelFunc
	bg     sync.WaitGroup // the compaction loop

	closed    atomic.Bool
	faultOnce sync.Once
	fault     chan struct{} // closed by broken: etcd no longer holds this store's history
	compact   atomic.Int64  // newest etcd compaction revision known to have happened
	historyAt atomic.Int64  // last answer of Compacted, for the metric
	seen      atomic.Int64  // newest revision this replica has seen, for the metric
	floor     atomic.Int64  // newest store revision a completed Rev, List or write returned
}

// Open connects to etcd, creates the cluster ID under cfg.Prefix unless a replica already did,
// and starts compacting if cfg.CompactInterval is set. ctx bounds the connection, as does
// cfg.DialTimeout.
func Open(ctx context.Context, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: cfg.RequestTimeout,
		TLS:                  tlsCfg,
		Logger:               zap.NewNop(), // we log what matters ourselves, with zerolog
		// gRPC's default reconnect backoff grows to two minutes; a store that comes back after
		// a restart should be used again within seconds.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcdstore: client: %w", err)
	}
	s := &Store{
		cfg:        cfg,
		client:     client,
		log:        log.With().Str("component", "store").Str("prefix", cfg.Prefix).Logger(),
		dataFrom:   cfg.Prefix + "/",
		dataEnd:    clientv3.GetPrefixRangeEnd(cfg.Prefix + "/"),
		clusterKey: cfg.Prefix + keyCluster,
		revKey:     cfg.Prefix + keyRev,
		compactKey: cfg.Prefix + keyCompact,
		fault:      make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.metrics = newMetrics(s)
	octx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if err := s.init(octx); err != nil {
		s.cancel()
		client.Close()
		return nil, fmt.Errorf("etcdstore: open %v: %w", cfg.Endpoints, err)
	}
	s.metrics.register(reg)
	if cfg.CompactInterval > 0 {
		s.bg.Add(1)
		go s.compactLoop()
	}
	return s, nil
}

// init creates the cluster ID in one transaction, so replicas starting together agree on it,
// and reads the last compaction recorded.
func (s *Store) init(ctx context.Context) error {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	id := hex.EncodeToString(b[:])
	if old := s.cfg.ReplaceClusterID; old != "" {
		resp, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.Value(s.clusterKey), "=", old)).
			Then(clientv3.OpPut(s.clusterKey, id)).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			s.log.Warn().Str("was", old).Str("cluster", id).Msg("cluster ID replaced: every edge gets a full reset")
		} else {
			s.log.Info().Str("replace", old).Msg("the cluster's ID is not the one to replace; kept")
		}
	}
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.clusterKey), "=", 0)).
		Then(clientv3.OpPut(s.clusterKey, id), clientv3.OpGet(s.compactKey), clientv3.OpGet(s.revKey, clientv3.WithKeysOnly())).
		Else(clientv3.OpGet(s.clusterKey), clientv3.OpGet(s.compactKey), clientv3.OpGet(s.revKey, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return err
	}
	s.etcdID = resp.Header.ClusterId
	s.cluster = id
	get := resp.Responses[1].GetResponseRange()
	s.floor.Store(modRev(resp.Responses[2].GetResponseRange().Kvs))
	if !resp.Succeeded {
		s.cluster = string(resp.Responses[0].GetResponseRange().Kvs[0].Value)
	}
	if len(get.Kvs) == 1 {
		if c, err := strconv.ParseInt(string(get.Kvs[0].Value), 10, 64); err == nil {
			s.noteCompacted(c)
		}
	}
	return nil
}

// ClaimCA implements pki.CAShare: it stores pair under Prefix+"!ca" unless a value is there
// already (one transaction, so replicas starting together agree), and returns what is there.
func (s *Store) ClaimCA(ctx context.Context, pair []byte) ([]byte, error) {
	key := s.cfg.Prefix + keyCA
	var stored []byte
	err := s.call(ctx, "claim", key, func(ctx context.Context) (*pb.ResponseHeader, error) {
		resp, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(pair))).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return nil, err
		}
		stored = pair
		if !resp.Succeeded {
			kvs := resp.Responses[0].GetResponseRange().Kvs
			if len(kvs) != 1 {
				return nil, fmt.Errorf("%s vanished", key)
			}
			stored = kvs[0].Value
		}
		return resp.Header, nil
	})
	return stored, err
}

// ClusterID implements store.Backend.
func (s *Store) ClusterID() string { return s.cluster }

// Prefix returns the prefix the store's keys live under.
func (s *Store) Prefix() string { return s.cfg.Prefix }

// Rev implements store.Backend: the revision of the last change, which is the ModRevision of the
// key every write also puts. (etcd's own head revision counts writes of other clusters and of
// the store's bookkeeping, which are no change of this store.)
func (s *Store) Rev(ctx context.Context) (int64, error) {
	var rev int64
	var cluster []*mvccpb.KeyValue
	floor := s.floor.Load()
	err := s.call(ctx, "rev", "", func(ctx context.Context) (*pb.ResponseHeader, error) {
		resp, err := s.client.Txn(ctx).Then(clientv3.OpGet(s.revKey, clientv3.WithKeysOnly()), clientv3.OpGet(s.clusterKey)).Commit()
		if err != nil {
			return nil, err
		}
		rev, cluster = modRev(resp.Responses[0].GetResponseRange().Kvs), resp.Responses[1].GetResponseRange().Kvs
		return resp.Header, nil
	})
	if err != nil {
		return 0, err
	}
	if err := s.checkHistory(cluster, rev, floor); err != nil {
		return 0, err
	}
	return rev, nil
}

// Get implements store.Backend.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if err := checkKey(key); err != nil {
		return store.KV{}, err
	}
	var kvs []*mvccpb.KeyValue
	err := s.call(ctx, "get", key, func(ctx context.Context) (*pb.ResponseHeader, error) {
		resp, err := s.client.Get(ctx, s.cfg.Prefix+key)
		if err != nil {
			return nil, err
		}
		kvs = resp.Kvs
		return resp.Header, nil
	})
	switch {
	case err != nil:
		return store.KV{}, err
	case len(kvs) == 0:
		return store.KV{}, store.ErrNotFound
	}
	return s.kv(kvs[0]), nil
}

// List implements store.Backend. The first page and the revision come from one transaction; the
// later pages are read at that transaction's etcd revision, so the whole answer is one snapshot.
// A compaction that overtakes a long list makes it start again.
func (s *Store) List(ctx context.Context, prefix, after string, limit int) ([]store.KV, int64, error) {
	return s.listRange(ctx, prefix, after, limit)
}

// Keys implements store.Backend: List with etcd's keys-only reads.
func (s *Store) Keys(ctx context.Context, prefix, after string, limit int) ([]store.KV, int64, error) {
	return s.listRange(ctx, prefix, after, limit, clientv3.WithKeysOnly())
}

func (s *Store) listRange(ctx context.Context, prefix, after string, limit int, opts ...clientv3.OpOption) ([]store.KV, int64, error) {
	from, end := s.dataFrom, s.dataEnd
	switch {
	case prefix != "" && !strings.HasPrefix(prefix, "/"):
		from = end // no store key there: an empty answer at the current revision
	case prefix != "":
		from = s.cfg.Prefix + prefix
		end = clientv3.GetPrefixRangeEnd(from)
	}
	if after != "" && s.cfg.Prefix+after+"\x00" > from {
		from = s.cfg.Prefix + after + "\x00"
	}
	for attempt := 1; ; attempt++ {
		kvs, rev, err := s.list(ctx, from, end, limit, opts)
		if errors.Is(err, errListCompacted) && attempt < 3 {
			continue
		}
		return kvs, rev, err
	}
}

var errListCompacted = errors.New("etcdstore: list overtaken by compaction")

func (s *Store) list(ctx context.Context, from, end string, limit int, opts []clientv3.OpOption) ([]store.KV, int64, error) {
	page := s.cfg.ListPage
	if limit > 0 && limit < page {
		page = limit
	}
	var out []store.KV
	var rev, at int64
	var cluster []*mvccpb.KeyValue
	more := false
	floor := s.floor.Load()
	if from >= end {
		// Nothing can match; still answer with the revision.
		r, err := s.Rev(ctx)
		return nil, r, err
	}
	err := s.call(ctx, "list", from, func(ctx context.Context) (*pb.ResponseHeader, error) {
		resp, err := s.client.Txn(ctx).Then(
			clientv3.OpGet(s.revKey, clientv3.WithKeysOnly()),
			clientv3.OpGet(s.clusterKey),
			clientv3.OpGet(from, append(opts[:len(opts):len(opts)], clientv3.WithRange(end), clientv3.WithLimit(int64(page)))...),
		).Commit()
		if err != nil {
			return nil, err
		}
		rev, cluster = modRev(resp.Responses[0].GetResponseRange().Kvs), resp.Responses[1].GetResponseRange().Kvs
		r := resp.Responses[2].GetResponseRange()
		for _, kv := range r.Kvs {
			out = append(out, s.kv(kv))
		}
		more, at = r.More, resp.Header.Revision
		return resp.Header, nil
	})
	if err != nil {
		return nil, 0, err
	}
	if err := s.checkHistory(cluster, rev, floor); err != nil {
		return nil, 0, err
	}
	for more && (limit == 0 || len(out) < limit) {
		n := page
		if limit > 0 && limit-len(out) < n {
			n = limit - len(out)
		}
		next := s.cfg.Prefix + out[len(out)-1].Key + "\x00"
		err := s.call(ctx, "list", next, func(ctx context.Context) (*pb.ResponseHeader, error) {
			resp, err := s.client.Get(ctx, next, append(opts[:len(opts):len(opts)], clientv3.WithRange(end), clientv3.WithLimit(int64(n)), clientv3.WithRev(at))...)
			if err != nil {
				return nil, err
			}
			for _, kv := range resp.Kvs {
				out = append(out, s.kv(kv))
			}
			more = resp.More
			return resp.Header, nil
		})
		if isCompacted(err) {
			return nil, 0, errListCompacted
		}
		if err != nil {
			return nil, 0, err
		}
	}
	return out, rev, nil
}

// Create implements store.Backend.
func (s *Store) Create(ctx context.Context, key string, value []byte) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	k := s.cfg.Prefix + key
	var resp *clientv3.TxnResponse
	floor := s.floor.Load()
	err := s.call(ctx, "create", key, func(ctx context.Context) (h *pb.ResponseHeader, err error) {
		resp, err = s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, string(value)), clientv3.OpPut(s.revKey, "")).
			Commit()
		if err != nil {
			return nil, err
		}
		return resp.Header, nil
	})
	switch {
	case err != nil:
		return 0, err
	case !resp.Succeeded:
		return 0, store.ErrExists
	}
	if err := s.checkWrite(resp.Header.Revision, floor); err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// Update implements store.Backend.
func (s *Store) Update(ctx context.Context, key string, value []byte, rev int64) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	k := s.cfg.Prefix + key
	resp, err := s.write(ctx, "update", key, rev, clientv3.OpPut(k, string(value)))
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// Delete implements store.Backend.
func (s *Store) Delete(ctx context.Context, key string, rev int64) (int64, store.KV, error) {
	if err := checkKey(key); err != nil {
		return 0, store.KV{}, err
	}
	k := s.cfg.Prefix + key
	resp, err := s.write(ctx, "delete", key, rev, clientv3.OpDelete(k, clientv3.WithPrevKV()))
	if err != nil {
		return 0, store.KV{}, err
	}
	prev := resp.Responses[0].GetResponseDeleteRange().PrevKvs
	if len(prev) != 1 {
		return 0, store.KV{}, fmt.Errorf("etcdstore: delete %s: etcd returned %d previous values", key, len(prev))
	}
	return resp.Header.Revision, s.kv(prev[0]), nil
}

// write applies op to key if the key exists and, when rev is not 0, was last changed at rev. On
// failure the Else branch reads the key, which tells a missing key from a newer one.
func (s *Store) write(ctx context.Context, name, key string, rev int64, op clientv3.Op) (*clientv3.TxnResponse, error) {
	k := s.cfg.Prefix + key
	cmp := clientv3.Compare(clientv3.ModRevision(k), "=", rev)
	if rev == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(k), ">", 0)
	}
	var resp *clientv3.TxnResponse
	floor := s.floor.Load()
	err := s.call(ctx, name, key, func(ctx context.Context) (h *pb.ResponseHeader, err error) {
		resp, err = s.client.Txn(ctx).If(cmp).
			Then(op, clientv3.OpPut(s.revKey, "")).
			Else(clientv3.OpGet(k, clientv3.WithKeysOnly())).
			Commit()
		if err != nil {
			return nil, err
		}
		return resp.Header, nil
	})
	switch {
	case err != nil:
		return nil, err
	case resp.Succeeded:
		if err := s.checkWrite(resp.Header.Revision, floor); err != nil {
			return nil, err
		}
		return resp, nil
	case len(resp.Responses[0].GetResponseRange().Kvs) == 0:
		return nil, store.ErrNotFound
	default:
		return nil, store.ErrConflict
	}
}

// call runs one request under the request timeout, counts it, checks that etcd is still the
// cluster it was at Open, and wraps a failure once with the operation and key.
func (s *Store) call(ctx context.Context, op, key string, fn func(context.Context) (*pb.ResponseHeader, error)) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	select {
	case <-s.fault:
		return ErrEtcdChanged
	default:
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	start := time.Now()
	h, err := fn(ctx)
	s.metrics.observe(op, time.Since(start), err)
	switch {
	case err == nil:
		return s.checkHeader(h)
	case s.closed.Load():
		return store.ErrClosed
	case tooLarge(err):
		return fmt.Errorf("etcdstore: %s %s: %w (%v)", op, key, store.ErrTooLarge, err)
	case key == "":
		return fmt.Errorf("etcdstore: %s: %w", op, err)
	default:
		return fmt.Errorf("etcdstore: %s %s: %w", op, key, err)
	}
}

// checkHeader notices an etcd that is not the cluster the store opened on.
func (s *Store) checkHeader(h *pb.ResponseHeader) error {
	if h == nil || h.ClusterId == 0 || h.ClusterId == s.etcdID {
		return nil
	}
	return s.broken(fmt.Sprintf("etcd cluster %x answers instead of %x", h.ClusterId, s.etcdID))
}

// checkHistory checks what a Rev or List read besides its answer: the cluster ID key is the one
// the store opened on, and the store's revision is not below one a call that completed before
// this one began returned (linearizable reads never go back).
func (s *Store) checkHistory(cluster []*mvccpb.KeyValue, rev, floor int64) error {
	switch {
	case len(cluster) != 1 || string(cluster[0].Value) != s.cluster:
		return s.broken("the cluster ID key " + s.clusterKey + " is gone or changed")
	case rev < floor:
		return s.broken(fmt.Sprintf("the store's revision went back from %d to %d", floor, rev))
	}
	s.raise(rev)
	return nil
}

// checkWrite checks that a write landed after every revision completed calls returned.
func (s *Store) checkWrite(rev, floor int64) error {
	if rev <= floor {
		return s.broken(fmt.Sprintf("a write landed at %d, not after %d", rev, floor))
	}
	s.raise(rev)
	return nil
}

// broken stops the store for good: every call fails and every watch ends with ErrEtcdChanged.
func (s *Store) broken(why string) error {
	s.faultOnce.Do(func() {
		s.log.Error().Str("reason", why).Msg("etcd no longer holds this store's history (wiped or restored?); the store stops, restart to open it afresh")
		close(s.fault)
	})
	return ErrEtcdChanged
}

// raise records a store revision a call returned.
func (s *Store) raise(rev int64) {
	for {
		cur := s.floor.Load()
		if rev <= cur || s.floor.CompareAndSwap(cur, rev) {
			break
		}
	}
	s.see(rev)
}

// Close stops compacting, ends every watch with store.ErrClosed and closes the client; calls in
// flight fail with store.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.cancel()
	s.bg.Wait()
	if err := s.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("etcdstore: close: %w", err)
	}
	return nil
}

func (s *Store) kv(kv *mvccpb.KeyValue) store.KV {
	return store.KV{Key: string(kv.Key[len(s.cfg.Prefix):]), Value: kv.Value, CreateRev: kv.CreateRevision, ModRev: kv.ModRevision}
}

// see records a revision for the revision metric.
func (s *Store) see(rev int64) {
	for {
		cur := s.seen.Load()
		if rev <= cur || s.seen.CompareAndSwap(cur, rev) {
			return
		}
	}
}

func checkKey(key string) error {
	if !strings.HasPrefix(key, "/") {
		return fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	return nil
}

// modRev is the ModRevision of the only key in kvs, or 0 when there is none: no change yet.
func modRev(kvs []*mvccpb.KeyValue) int64 {
	if len(kvs) == 0 {
		return 0
	}
	return kvs[0].ModRevision
}

// tooLarge reports whether etcd (its request limit, --max-request-bytes) or its client (the
// largest message it sends) refused a request for its size. Not etcd's "database space
// exceeded", also ResourceExhausted: that one passes once an operator makes room.
func tooLarge(err error) bool {
	return errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrGRPCRequestTooLarge) ||
		(status.Code(err) == codes.ResourceExhausted && strings.Contains(err.Error(), "larger than max"))
}
