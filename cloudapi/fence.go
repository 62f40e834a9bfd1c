package cloudapi

import (
	"context"
	"errors"
	"strconv"

	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
)

// Report fences. With several replicas on one store, a node's reports can be applied by two
// replicas at once: the one its old session was on may still hold reports the node has since
// sent again, with newer ones, to another. Each session has an epoch (cloudhub.Epochs, taken
// from ReportEpochs), and a report writes its session's epoch into the object it changes
// (resource.AnnotationReportEpoch), in the same write. A report from an older epoch than the
// object holds is dropped: the node resent it, or something newer in its place, on the later
// session. One replica needs no fence (its hub applies a node's reports one at a time across
// sessions) and writes none: its sessions are all epoch 0.

// errStale: a report from an older session than the one whose report the object holds.
var errStale = errors.New("cloudapi: the object holds a report from a later session")

// reportEpochKey is the context key of the epoch a report write carries (see Objects.write).
type reportEpochKey struct{}

// withReportEpoch returns ctx for a write of a report from session epoch.
func withReportEpoch(ctx context.Context, epoch int64) context.Context {
	if epoch <= 0 {
		return ctx
	}
	return context.WithValue(ctx, reportEpochKey{}, epoch)
}

// fenced wraps change, a report's edit of an object, with the fence: a report older than the
// object's epoch changes nothing (errStale), and one from a later session moves the epoch even
// when it changes nothing else. Otherwise a report the older session still holds could land
// after it and win.
func fenced(epoch int64, change func(cur object) (object, error)) func(cur object) (object, error) {
	return func(cur object) (object, error) {
		held := reportEpoch(cur)
		if held > epoch {
			return nil, errStale
		}
		next, err := change(cur)
		if errors.Is(err, errUnchanged) && held < epoch {
			return cur, nil // Objects.write moves the epoch
		}
		return next, err
	}
}

// reportEpoch returns the epoch obj holds (0 if none).
func reportEpoch(obj object) int64 {
	ann, _ := obj.metadata()["annotations"].(map[string]any)
	s, _ := ann[resource.AnnotationReportEpoch].(string)
	e, _ := strconv.ParseInt(s, 10, 64)
	return e
}

// setReportEpoch makes obj hold epoch.
func setReportEpoch(obj object, epoch int64) {
	md := obj.metadata()
	ann, _ := md["annotations"].(map[string]any)
	if ann == nil {
		ann = map[string]any{}
		md["annotations"] = ann
	}
	ann[resource.AnnotationReportEpoch] = strconv.FormatInt(epoch, 10)
}

// keepReportEpoch makes md, the metadata a client wrote, hold what curMD holds: the epoch is
// the cloud's. Removing it is refused as quietly as changing it, since a manifest saved before
// the epoch was set would otherwise take the fence away.
func keepReportEpoch(md, curMD map[string]any) {
	curAnn, _ := curMD["annotations"].(map[string]any)
	v, held := curAnn[resource.AnnotationReportEpoch]
	ann, _ := md["annotations"].(map[string]any)
	switch {
	case held && ann == nil:
		md["annotations"] = map[string]any{resource.AnnotationReportEpoch: v}
	case held:
		ann[resource.AnnotationReportEpoch] = v
	case ann != nil:
		delete(ann, resource.AnnotationReportEpoch)
	}
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

// ReportEpochs implements cloudhub.Epochs over a store several replicas share: each Next writes
// one key, and the revision of that write is the epoch. The store's revisions only grow, so a
// session started after another, on any replica, has the greater epoch. It costs one small
// write per connect.
type ReportEpochs struct {
	backend store.Backend
}

// NewReportEpochs returns the numbering over backend.
func NewReportEpochs(backend store.Backend) *ReportEpochs { return &ReportEpochs{backend: backend} }

// Next implements cloudhub.Epochs.
func (e *ReportEpochs) Next(ctx context.Context, node string) (int64, error) {
	for {
		rev, err := e.backend.Update(ctx, reportEpochStoreKey, []byte(node), 0)
		if !errors.Is(err, store.ErrNotFound) {
			return rev, err
		}
		rev, err = e.backend.Create(ctx, reportEpochStoreKey, []byte(node))
		if !errors.Is(err, store.ErrExists) {
			return rev, err
		}
		// Another replica created it meanwhile: update it.
	}
}
