package cloudapi

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
)

// Report fences. With several replicas on one store, a node's reports can be applied by two
// replicas at once: the one its old session was on may still hold reports the node has since
// sent again, with newer ones, to another. Each session has an epoch (cloudhub.Epochs, taken
// from ReportEpochs), and a report writes its node and its session's epoch into the object it
// changes (resource.AnnotationReportEpoch), in the same write. A report from an older epoch of
// that node than the object holds is dropped: the node resent it, or something newer in its
// place, on the later session. One replica needs no fence (its hub applies a node's reports one at a time across
// sessions) and writes none: its sessions are all epoch 0.

// errStale: a report from an older session than the one whose report the object holds.
var errStale = errors.New("cloudapi: the object holds a report from a later session")

// reportEpochKey is the context key of the epoch a report write carries (see Objects.write).
type reportEpochKey struct{}

// reportSession is the node and epoch of the session whose report a write carries.
type reportSession struct {
	node  string
	epoch int64
}

// writeReport is the status write of a report from node's session epoch to one object: change
// edits the current object (or says errUnchanged), and the write carries the fence. A report
// older than the object's epoch changes nothing (errStale); one from a later session moves the
// epoch even when it changes nothing else, or a report the older session still holds could land
// after it and win. The epoch is written by Objects.write, after it has merged the status (a
// status write takes nothing else from the writer).
func (o *Objects) writeReport(ctx context.Context, info resource.Info, ns, name, node string, epoch int64, change func(cur object) (object, error)) error {
	if epoch > 0 {
		ctx = context.WithValue(ctx, reportEpochKey{}, reportSession{node, epoch})
	}
	ctx = context.WithValue(ctx, internalWriteKey{}, true)
	_, err := o.write(ctx, info, ns, name, "status", 0, func(cur object) (object, error) {
		held := reportEpoch(cur, node)
		if held > epoch {
			return nil, errStale
		}
		next, err := change(cur)
		if errors.Is(err, errUnchanged) && held < epoch {
			return cur, nil // only the epoch moves
		}
		return next, err
	})
	return err
}

// The annotation holds "node/epoch": the node whose session wrote it, and that session's epoch.

// reportEpoch returns the epoch obj holds from node's sessions. It is 0 when obj holds none, or
// one from another node: epochs are numbered across all nodes, and a Device moved to another
// node must take that node's reports whatever their epochs (the old node's are refused as not
// its own). It is 0 too when the epoch is not below the object's own version: a report's epoch
// is taken before the write that stores it, so such a value was not written by a report on this
// store (set before the cloud owned the annotation, or copied from another etcd whose revisions
// ran higher), and it must not hold back every report.
func reportEpoch(obj object, node string) int64 {
	md := obj.metadata()
	ann, _ := md["annotations"].(map[string]any)
	s, _ := ann[resource.AnnotationReportEpoch].(string)
	i := strings.LastIndexByte(s, '/')
	if i < 0 || s[:i] != node {
		return 0
	}
	e, err := strconv.ParseInt(s[i+1:], 10, 64)
	if err != nil || e <= 0 {
		return 0
	}
	if rv, _ := md["resourceVersion"].(string); rv != "" {
		if v, err := strconv.ParseInt(rv, 10, 64); err == nil && e >= v {
			return 0
		}
	}
	return e
}

// setReportEpoch makes obj hold epoch from node.
func setReportEpoch(obj object, node string, epoch int64) {
	md := obj.metadata()
	ann, _ := md["annotations"].(map[string]any)
	if ann == nil {
		ann = map[string]any{}
		md["annotations"] = ann
	}
	ann[resource.AnnotationReportEpoch] = node + "/" + strconv.FormatInt(epoch, 10)
}

// dropReportEpoch removes the epoch from md, the metadata of an object to be created: one copied
// from another object's manifest would otherwise fence this one's reports.
func dropReportEpoch(md map[string]any) {
	if ann, _ := md["annotations"].(map[string]any); ann != nil {
		delete(ann, resource.AnnotationReportEpoch)
	}
}

// reportEpochStoreKey is the key whose writes number sessions. It is outside the served kinds,
// so the index skips it.
const reportEpochStoreKey = "/tether/report-epoch"

// ReportEpochs implements cloudhub.Epochs over a store several replicas share: the epoch is the
// revision of a write of one key. The store's revisions only grow, so a session that asks after
// another one's epoch was taken, on any replica, gets a greater one. Sessions that ask while a
// write is under way share the next write (it starts after they asked, so the same holds), and a
// storm of connects costs a write per round trip to the store, not one per node.
type ReportEpochs struct {
	backend store.Backend
	timeout time.Duration

	mu      sync.Mutex
	waiting []chan<- epochResult // asked since the running write started
	writing bool                 // a writer goroutine runs
}

type epochResult struct {
	epoch int64
	err   error
}

// NewReportEpochs returns the numbering over backend; each write gives up after timeout.
func NewReportEpochs(backend store.Backend, timeout time.Duration) *ReportEpochs {
	return &ReportEpochs{backend: backend, timeout: timeout}
}

// Next implements cloudhub.Epochs.
func (e *ReportEpochs) Next(ctx context.Context) (int64, error) {
	ch := make(chan epochResult, 1)
	e.mu.Lock()
	e.waiting = append(e.waiting, ch)
	if !e.writing {
		e.writing = true
		go e.run()
	}
	e.mu.Unlock()
	select {
	case r := <-ch:
		return r.epoch, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run writes for those waiting until none are.
func (e *ReportEpochs) run() {
	for {
		e.mu.Lock()
		batch := e.waiting
		e.waiting = nil
		if len(batch) == 0 {
			e.writing = false
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
		epoch, err := e.write(ctx)
		cancel()
		for _, ch := range batch {
			ch <- epochResult{epoch, err}
		}
	}
}

func (e *ReportEpochs) write(ctx context.Context) (int64, error) {
	for {
		rev, err := e.backend.Update(ctx, reportEpochStoreKey, nil, 0)
		if !errors.Is(err, store.ErrNotFound) {
			return rev, err
		}
		rev, err = e.backend.Create(ctx, reportEpochStoreKey, nil)
		if !errors.Is(err, store.ErrExists) {
			return rev, err
		}
		// Another replica created it meanwhile: update it.
	}
}
