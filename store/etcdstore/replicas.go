package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tetherhub/tether/store"
)

// KeepReplica keeps the key Prefix+"!replicas/"+name on an etcd lease of ttl until ctx ends,
// then revokes the lease, so the key vanishes at once on a clean stop and within ttl of a crash
// or of losing etcd. A lost lease (etcd unreachable for longer than ttl) is granted again once
// etcd answers. While another lease holds the key (a replica of the same name, or this one's
// previous run, whose lease has not run out), it waits, saying so in the log. It returns when
// ctx ends or the store is closed; failures are retried every ttl/3.
func (s *Store) KeepReplica(ctx context.Context, name string, ttl time.Duration) error {
	key := s.cfg.Prefix + keyReplicas + name
	secs := max(int64(ttl/time.Second), 1)
	retry := time.Duration(secs) * time.Second / 3
	for {
		id, alive, err := s.putReplica(ctx, key, secs)
		if err == nil {
			s.log.Debug().Str("key", key).Int64("ttl_s", secs).Msg("replica key on a lease")
			for range alive { // drained until the lease is lost or ctx ends
			}
			if ctx.Err() != nil {
				revoke, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
				_, _ = s.client.Revoke(revoke, id)
				cancel()
				return nil
			}
			if s.closed.Load() {
				return nil
			}
			s.log.Warn().Str("key", key).Msg("lost the replica lease; taking a new one")
		} else if errors.Is(err, store.ErrClosed) {
			return nil
		} else if ctx.Err() == nil {
			s.log.Warn().Err(err).Str("key", key).Msg("cannot keep the replica key; retrying")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

// errNameTaken: the key is on another lease, a replica of the same name that runs, or one that
// stopped less than its TTL ago (this one, restarted after a crash).
var errNameTaken = errors.New("another replica with this name holds the key (two replicas with one --replica-name, or this one's previous run, whose lease has not run out yet)")

// putReplica grants a lease, puts key on it unless the key exists, and keeps the lease alive.
func (s *Store) putReplica(ctx context.Context, key string, secs int64) (clientv3.LeaseID, <-chan *clientv3.LeaseKeepAliveResponse, error) {
	var id clientv3.LeaseID
	err := s.call(ctx, "lease", key, func(ctx context.Context) (*pb.ResponseHeader, error) {
		g, err := s.client.Grant(ctx, secs)
		if err != nil {
			return nil, err
		}
		id = g.ID
		resp, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, time.Now().UTC().Format(time.RFC3339), clientv3.WithLease(g.ID))).
			Commit()
		if err != nil {
			return nil, err
		}
		if !resp.Succeeded {
			_, _ = s.client.Revoke(ctx, g.ID)
			return resp.Header, errNameTaken
		}
		return resp.Header, nil
	})
	if err != nil {
		return 0, nil, err
	}
	alive, err := s.client.KeepAlive(ctx, id)
	if err != nil {
		return 0, nil, fmt.Errorf("etcdstore: keep lease of %s alive: %w", key, err)
	}
	return id, alive, nil
}

// ReplicaAlive says whether the replica called name keeps its key (KeepReplica).
func (s *Store) ReplicaAlive(ctx context.Context, name string) (bool, error) {
	key := s.cfg.Prefix + keyReplicas + name
	var found bool
	err := s.call(ctx, "replica", key, func(ctx context.Context) (*pb.ResponseHeader, error) {
		resp, err := s.client.Get(ctx, key, clientv3.WithCountOnly())
		if err != nil {
			return nil, err
		}
		found = resp.Count > 0
		return resp.Header, nil
	})
	return found, err
}

// WatchReplicasGone calls gone with the name of each replica whose key vanishes (KeepReplica:
// its lease ran out, or it was revoked on a clean stop) until ctx ends or the store is closed,
// so that the replica left can time the nodes the gone one held from the moment it went
// instead of finding out at its next look. A broken watch is opened again, from now: a
// replica that goes meanwhile is found by ReplicaAlive as before, only later. While it keeps
// breaking (etcd unreachable, no leader) it is opened again less and less often, up to every
// watchRetryMax, and only the first break is logged as a warning until the watch opens again.
func (s *Store) WatchReplicasGone(ctx context.Context, gone func(name string)) error {
	prefix := s.cfg.Prefix + keyReplicas
	delay := time.Second
	broken := 0 // breaks in a row, without a watch that opened in between
	for ctx.Err() == nil && !s.closed.Load() {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		watch := s.client.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
		for resp := range watch {
			if err := resp.Err(); err != nil {
				broken++
				if ctx.Err() == nil {
					ev := s.log.Debug()
					if broken == 1 {
						ev = s.log.Warn()
					}
					ev.Err(err).Int("breaks_in_a_row", broken).Msg("the watch of replica keys broke; opening it again")
				}
				break
			}
			if resp.Created {
				if broken > 0 {
					s.log.Info().Int("breaks", broken).Msg("the watch of replica keys is open again")
				}
				broken, delay = 0, time.Second
			}
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					gone(strings.TrimPrefix(string(ev.Kv.Key), prefix))
				}
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		if broken > 0 {
			delay = min(2*delay, watchRetryMax)
		}
	}
	return nil
}

// watchRetryMax is the longest WatchReplicasGone waits before opening a broken watch again.
const watchRetryMax = 30 * time.Second
