package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Compacted implements store.Backend. The answer is this store's last change at or before
// etcd's compaction revision C: etcd keeps the newest version of every key as of C, so a watch
// from that change misses nothing of this store even when the revisions up to C are other
// clusters' writes or the store's bookkeeping. (Events after C carry their previous values;
// events at or before C would not, which is why C itself is never a place to start from.)
func (s *Store) Compacted(ctx context.Context) (int64, error) {
	_, last, err := s.history(ctx)
	return last, err
}

// history returns etcd's compaction revision and Compacted's answer. It reads the revision key
// as of the newest compaction known; etcd refusing that read means someone compacted further
// (an operator, etcd's auto-compaction, another cluster on the same etcd, another replica), and
// the compaction revision is then found by bisection between the known one and the head.
func (s *Store) history(ctx context.Context) (compact, last int64, err error) {
	compact = max(s.compact.Load(), 1) // the oldest revision there is (0 would mean the head)
	last, err = s.revAt(ctx, compact)
	if isCompacted(err) {
		compact, last, err = s.findCompaction(ctx, compact)
	}
	if err != nil {
		return 0, 0, err
	}
	s.noteCompacted(compact)
	s.historyAt.Store(last)
	return compact, last, nil
}

// revAt returns the revision of this store's last change as of etcd revision rev.
func (s *Store) revAt(ctx context.Context, rev int64) (int64, error) {
	var last int64
	err := s.call(ctx, "compacted", "", func(ctx context.Context) (*pb.ResponseHeader, error) {
		resp, err := s.client.Get(ctx, s.revKey, clientv3.WithKeysOnly(), clientv3.WithRev(rev))
		if err != nil {
			return nil, err
		}
		last = modRev(resp.Kvs)
		return resp.Header, nil
	})
	return last, err
}

// findCompaction bisects for the oldest revision etcd still reads, knowing it refused lo. The
// head is always readable. About log2(head-lo) reads, and only after a compaction this
// replica did not make.
func (s *Store) findCompaction(ctx context.Context, lo int64) (compact, last int64, err error) {
	var hi int64
	err = s.call(ctx, "compacted", "", func(ctx context.Context) (*pb.ResponseHeader, error) {
		resp, err := s.client.Get(ctx, s.revKey, clientv3.WithKeysOnly())
		if err != nil {
			return nil, err
		}
		hi, last = resp.Header.Revision, modRev(resp.Kvs)
		return resp.Header, nil
	})
	if err != nil {
		return 0, 0, err
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		m, err := s.revAt(ctx, mid)
		switch {
		case err == nil:
			hi, last = mid, m
		case isCompacted(err):
			lo = mid
		default:
			return 0, 0, err
		}
	}
	s.log.Info().Int64("compact_rev", hi).Msg("etcd was compacted by someone else; history starts there")
	return hi, last, nil
}

// noteCompacted records that etcd has been compacted at least to rev.
func (s *Store) noteCompacted(rev int64) {
	for {
		cur := s.compact.Load()
		if rev <= cur || s.compact.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// compactLoop compacts every CompactInterval until Close.
func (s *Store) compactLoop() {
	defer s.bg.Done()
	t := time.NewTicker(s.cfg.CompactInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if err := s.compactOnce(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("compaction failed; trying again at the next interval")
		}
	}
}

// compactOnce compacts etcd to History revisions behind this store's last change unless it is
// compacted that far already, then records the revision under the compaction key (only ever
// raising it, so that replicas compacting at once leave the newest) for the other replicas and
// the next start. The target follows the store's own changes, not etcd's head: the record
// written here moves the head, and a target chasing it would wear the history away one
// revision per interval while the store is idle.
func (s *Store) compactOnce(ctx context.Context) error {
	var head int64
	err := s.call(ctx, "compact", "", func(ctx context.Context) (*pb.ResponseHeader, error) {
		resp, err := s.client.Txn(ctx).Then(clientv3.OpGet(s.compactKey), clientv3.OpGet(s.revKey, clientv3.WithKeysOnly())).Commit()
		if err != nil {
			return nil, err
		}
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			if c, err := strconv.ParseInt(string(kvs[0].Value), 10, 64); err == nil {
				s.noteCompacted(c)
			}
		}
		head = modRev(resp.Responses[1].GetResponseRange().Kvs)
		return resp.Header, nil
	})
	if err != nil {
		return err
	}
	target := head - s.cfg.History
	if target <= s.compact.Load() {
		return nil
	}
	err = s.call(ctx, "compact", "", func(ctx context.Context) (*pb.ResponseHeader, error) {
		resp, err := s.client.Compact(ctx, target)
		if err != nil {
			return nil, err
		}
		return resp.Header, nil
	})
	if err != nil && !isCompacted(err) { // compacted: someone went further; history() finds it
		return err
	}
	if err == nil {
		s.noteCompacted(target)
		s.metrics.compactions.Inc()
		s.log.Debug().Int64("compact_rev", target).Msg("compacted etcd")
	}
	v := fmt.Sprintf("%019d", target) // fixed width: etcd compares values as bytes
	err = s.call(ctx, "compact", "", func(ctx context.Context) (*pb.ResponseHeader, error) {
		resp, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.Version(s.compactKey), "=", 0)).
			Then(clientv3.OpPut(s.compactKey, v)).
			Else(clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(s.compactKey), "<", v)},
				[]clientv3.Op{clientv3.OpPut(s.compactKey, v)}, nil)).
			Commit()
		if err != nil {
			return nil, err
		}
		return resp.Header, nil
	})
	if err != nil {
		return err
	}
	_, _, err = s.history(ctx)
	return err
}

func isCompacted(err error) bool { return errors.Is(err, rpctypes.ErrCompacted) }
