package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tetherhub/tether/store"
)

// Pauses before an interrupted etcd watch is opened again.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

// Watch implements store.Backend with one etcd watch over the store's keys, with previous
// values. It checks the bounds first (ErrFutureRev, ErrCompacted), then hands events over as
// etcd sends them.
//
// The watch outlives etcd trouble: a lost connection is resumed by the etcd client, a lost leader
// or another passing failure by opening the etcd watch again after the last event taken, and a
// compaction that overtakes the watch meanwhile ends it only if it removed a change of this
// store the watcher has not had (store.ErrCompacted); otherwise the watch goes on after the
// compaction. It also ends with store.ErrSlowWatcher when WatchBuffer events wait undelivered,
// store.ErrClosed at Close, ErrEtcdChanged, or an error etcd gives for good (permissions).
func (s *Store) Watch(ctx context.Context, rev int64) (<-chan store.WatchResponse, error) {
	head, err := s.Rev(ctx)
	if err != nil {
		return nil, err
	}
	if rev > head {
		return nil, fmt.Errorf("%w: watch from %d, store is at %d", store.ErrFutureRev, rev, head)
	}
	compact, last, err := s.history(ctx)
	if err != nil {
		return nil, err
	}
	if rev < last {
		return nil, fmt.Errorf("%w: watch from %d, history starts after %d", store.ErrCompacted, rev, last)
	}
	w := &watcher{s: s, ctx: ctx, out: make(chan store.WatchResponse), last: max(rev, 0), replayTo: head}
	s.metrics.watchers.Inc()
	go w.run(max(rev, compact) + 1)
	return w.out, nil
}

// watcher moves events from etcd to one consumer. Every field is owned by run.
type watcher struct {
	s        *Store
	ctx      context.Context          // the consumer's
	out      chan store.WatchResponse // unbuffered: what waits is in pending, where it is counted
	last     int64                    // revision of the newest event taken from etcd, or the start
	replayTo int64                    // the store's revision when the watch began: events up to it are history
	pending  []store.Event            // taken from etcd, not yet handed over
}

// run never blocks on the consumer while etcd sends: the etcd client buffers without bound, so
// events are taken from it at once and counted against WatchBuffer here. History is paced
// instead: etcd sends it as fast as it reads it, a thousand revisions at a time, and a watcher
// dropped for being slow during the replay would be dropped again after every re-watch. So when
// WatchBuffer events of history wait, the etcd watch is closed, and opened again after the last
// event taken once the consumer has had them. Only changes made after the watch began count
// against the consumer, as in boltstore; it is dropped when WatchBuffer of them wait and etcd
// sends more.
func (w *watcher) run(start int64) {
	defer close(w.out)
	defer w.s.metrics.watchers.Dec()
	var (
		ch     clientv3.WatchChan      // the open etcd watch, nil while none is
		opened chan clientv3.WatchChan // an etcd watch being opened (clientv3 blocks until etcd answers)
		pause  <-chan time.Time        // before opening again after an interruption
		cancel = func() {}
		delay  = retryMin
		paced  bool // the etcd watch is closed until the consumer takes what waits
	)
	defer func() { cancel() }()
	open := func(from int64) {
		cancel()
		var wctx context.Context
		// Require a leader: a member cut off from the rest would otherwise keep the watch open
		// and silent. Losing the leader ends the etcd watch, and it is opened again below.
		wctx, cancel = context.WithCancel(clientv3.WithRequireLeader(w.ctx))
		opened, ch = make(chan clientv3.WatchChan, 1), nil
		go func(c chan clientv3.WatchChan) {
			c <- w.s.client.Watch(wctx, w.s.dataFrom, clientv3.WithRange(w.s.dataEnd), clientv3.WithRev(from), clientv3.WithPrevKV())
		}(opened)
	}
	interrupted := func(why error) {
		cancel()
		ch, opened = nil, nil
		w.s.metrics.restarts.WithLabelValues("interrupted").Inc()
		w.s.log.Warn().Err(why).Int64("rev", w.last).Dur("retry_in", delay).Msg("etcd watch interrupted; resuming")
		pause = time.After(delay)
		delay = min(2*delay, retryMax)
	}
	open(start)
	for {
		var send chan store.WatchResponse
		if len(w.pending) > 0 {
			send = w.out
		}
		select {
		case send <- store.WatchResponse{Events: w.pending}:
			w.pending = nil
			if paced {
				paced = false
				open(w.last + 1)
			}
		case ch = <-opened:
			opened = nil
		case <-pause:
			pause = nil
			open(w.last + 1)
		case <-w.ctx.Done():
			return
		case <-w.s.ctx.Done():
			w.finish(store.ErrClosed)
			return
		case <-w.s.fault:
			w.finish(ErrEtcdChanged)
			return
		case resp, ok := <-ch:
			if !ok {
				if w.ctx.Err() != nil {
					return
				}
				interrupted(errors.New("watch channel closed"))
				continue
			}
			from, err := w.take(resp)
			switch {
			case errors.Is(err, errInterrupted):
				interrupted(resp.Err())
			case errors.Is(err, errPace):
				cancel()
				ch, opened, paced = nil, nil, true
				w.s.metrics.restarts.WithLabelValues("paced").Inc()
			case err != nil:
				w.finish(err)
				return
			case from > 0:
				w.s.metrics.restarts.WithLabelValues("compacted").Inc()
				open(from)
			case len(resp.Events) > 0:
				delay = retryMin
			}
		}
	}
}

var (
	errInterrupted = errors.New("etcdstore: etcd watch interrupted")
	errPace        = errors.New("etcdstore: history waits for the consumer")
)

// take handles one etcd response. It returns a revision to open the etcd watch again from when
// a compaction overtook it without taking anything this watcher needs, errInterrupted when the
// watch should be opened again after a pause, errPace when history waits for the consumer (the
// rest of resp is read again later), or the error that ends the watch.
func (w *watcher) take(resp clientv3.WatchResponse) (from int64, err error) {
	if err := w.s.checkHeader(resp.Header); err != nil {
		return 0, err
	}
	if resp.CompactRevision != 0 {
		return w.afterCompaction(resp.CompactRevision)
	}
	if err := resp.Err(); err != nil {
		switch {
		case transient(err):
			return 0, errInterrupted
		case errors.Is(err, rpctypes.ErrFutureRev):
			return 0, fmt.Errorf("%w: etcd says %v", store.ErrFutureRev, err)
		}
		return 0, fmt.Errorf("etcdstore: watch: %w", err)
	}
	if len(w.pending) >= w.s.cfg.WatchBuffer {
		// A response is taken whole or not at all, so a watcher holds at most WatchBuffer
		// events plus one response (etcd sends at most a thousand revisions in one).
		for _, ev := range resp.Events {
			switch rev := ev.Kv.ModRevision; {
			case rev <= w.last:
				continue
			case rev <= w.replayTo:
				return 0, errPace
			default:
				return 0, store.ErrSlowWatcher
			}
		}
	}
	for _, ev := range resp.Events {
		e, ok := w.s.event(ev)
		if !ok {
			// etcd reads the previous value at the event's revision minus one, and leaves it
			// out without a word when that revision has been compacted meanwhile.
			return 0, fmt.Errorf("%w: the value %s had before revision %d is compacted", store.ErrCompacted, e.KV.Key, e.Rev())
		}
		if e.Rev() <= w.last {
			continue // sent again after a resume
		}
		w.pending = append(w.pending, e)
		w.last = e.Rev()
		w.s.see(w.last)
	}
	return 0, nil
}

// afterCompaction decides what etcd's compaction at rev means for this watcher: nothing lost
// if the store made no change after the last event taken up to the compaction (the revisions
// between were other clusters' or bookkeeping), and the watch goes on after it.
func (w *watcher) afterCompaction(rev int64) (int64, error) {
	w.s.noteCompacted(rev)
	compact, last, err := w.s.history(w.ctx)
	if err != nil {
		return 0, err
	}
	if last > w.last {
		return 0, fmt.Errorf("%w: the watch is at %d, history starts after %d", store.ErrCompacted, w.last, last)
	}
	w.s.log.Info().Int64("rev", w.last).Int64("compact_rev", compact).Msg("etcd compaction overtook a watch; it took no change of this store, so the watch goes on")
	return compact + 1, nil
}

// finish hands over what was taken (unless the consumer was too slow for it) and then err.
func (w *watcher) finish(err error) {
	if errors.Is(err, store.ErrSlowWatcher) {
		w.pending = nil
	}
	if len(w.pending) > 0 {
		select {
		case w.out <- store.WatchResponse{Events: w.pending}:
		case <-w.ctx.Done():
			return
		}
	}
	select {
	case w.out <- store.WatchResponse{Err: err}:
	case <-w.ctx.Done():
	}
}

// transient tells the failures a watch is opened again after: no leader, unreachable members.
func transient(err error) bool {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable || ee.Code() == codes.Internal
	}
	c := status.Code(err)
	return c == codes.Unavailable || c == codes.Internal
}

// event converts an etcd event. ok is false when etcd left out a previous value it must have had.
func (s *Store) event(ev *clientv3.Event) (e store.Event, ok bool) {
	e = store.Event{Type: store.Put, KV: s.kv(ev.Kv)}
	if ev.Type == mvccpb.DELETE {
		e = store.Event{Type: store.Delete, KV: store.KV{Key: e.KV.Key, ModRev: ev.Kv.ModRevision}}
	}
	if ev.PrevKv != nil {
		p := s.kv(ev.PrevKv)
		e.Prev = &p
		return e, true
	}
	return e, ev.IsCreate()
}
