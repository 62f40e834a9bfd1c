package cloudapi

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tetherhub/tether/cloudhub"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/twin"
)

// DeviceReports applies what edges report about their devices: twins (protocol.ReportTwin) and
// state (protocol.ReportDeviceState) go into Device.status, uploads (protocol.ReportUpload) to
// Uploads. It implements cloudhub.Reports for those kinds; NodeStatus hands them over (see
// NodeStatus.RouteDeviceReports).
//
// Reports are snapshots (see package twin), applied with twin.MergeSnapshot, so a report the
// edge resends after a newer one cannot move a value back, and a report that changes nothing
// writes nothing. A node may report only devices bound to it (spec.nodeName); a report about
// another node's device, or a malformed one, is dropped (cloudhub.ErrBadReport). A report about
// a device that no longer exists is dropped too: there is nothing left to show it on (reports
// name the Device's uid, so this holds for one made again under its name since). So is a
// report from an older session of the node than the one the Device holds a report from (see
// Objects.writeReport).
type DeviceReports struct {
	objects *Objects
	info    resource.Info
	uploads *Uploads
	reports *prometheus.CounterVec
}

// NewDeviceReports returns the applier; uploads may be nil (uploads are then refused as bad).
func NewDeviceReports(objects *Objects, reg *resource.Registry, uploads *Uploads, promReg prometheus.Registerer) *DeviceReports {
	info, _ := reg.ByGroupResource(resource.Devices)
	d := &DeviceReports{objects: objects, info: info, uploads: uploads,
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_cloud_device_reports_total",
			Help: "Device twin and state reports from edges, by kind and outcome (applied, unchanged, gone, refused, stale: from an older session than the device holds).",
		}, []string{"kind", "outcome"})}
	if promReg != nil {
		promReg.MustRegister(d.reports)
	}
	return d
}

// RouteDeviceReports makes n hand device reports (twins, state, uploads) to d. Call it before
// the hub runs.
func (n *NodeStatus) RouteDeviceReports(d cloudhub.Reports) { n.devices = d }

// errNotOwner: a node reported a device bound to another node.
var errNotOwner = errors.New("cloudapi: the device is not bound to this node")

// errReplaced: a report about a Device that was deleted and made again under its name.
var errReplaced = errors.New("cloudapi: the device the report is about was replaced")

// Apply implements cloudhub.Reports.
func (d *DeviceReports) Apply(ctx context.Context, node string, epoch int64, r *protocol.Report) error {
	switch r.Kind {
	case protocol.ReportTwin:
		rep, err := twin.DecodeTwinReport(r.Payload)
		if err != nil {
			d.reports.WithLabelValues("twin", "refused").Inc()
			return fmt.Errorf("%w: %s: %v", cloudhub.ErrBadReport, r.Subject, err)
		}
		return d.write(ctx, node, epoch, r.Subject, "twin", rep.UID, func(status map[string]any) bool {
			return twin.PutTwins(status, rep.Twins)
		})
	case protocol.ReportDeviceState:
		s, err := twin.DecodeStateReport(r.Payload)
		if err != nil {
			d.reports.WithLabelValues("state", "refused").Inc()
			return fmt.Errorf("%w: %s: %v", cloudhub.ErrBadReport, r.Subject, err)
		}
		return d.write(ctx, node, epoch, r.Subject, "state", s.UID, func(status map[string]any) bool {
			return twin.PutState(status, s.DeviceState)
		})
	case protocol.ReportUpload:
		if d.uploads == nil {
			return fmt.Errorf("%w: this cloud does not store uploads", cloudhub.ErrBadReport)
		}
		return d.uploads.Apply(ctx, node, r)
	}
	return fmt.Errorf("%w: report kind %d is not a device report", cloudhub.ErrBadReport, r.Kind)
}

// write changes the status of the Device named by subject (namespace/name) with change, which
// reports whether it changed anything. A report that names a uid is about that Device only: one
// made again under the name since has another, and the report is dropped as gone.
func (d *DeviceReports) write(ctx context.Context, node string, epoch int64, subject, kind, uid string, change func(status map[string]any) bool) error {
	ns, name, ok := strings.Cut(subject, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		d.reports.WithLabelValues(kind, "refused").Inc()
		return fmt.Errorf("%w: device %q is not namespace/name", cloudhub.ErrBadReport, subject)
	}
	err := d.objects.writeReport(ctx, d.info, ns, name, node, epoch, func(cur object) (object, error) {
		if cuid, _ := cur.metadata()["uid"].(string); uid != "" && uid != cuid {
			return nil, errReplaced
		}
		spec, _ := cur["spec"].(map[string]any)
		if owner, _ := spec["nodeName"].(string); owner != node {
			return nil, errNotOwner
		}
		status, _ := cur["status"].(map[string]any)
		if status == nil {
			status = map[string]any{}
		}
		if !change(status) {
			return nil, errUnchanged
		}
		cur["status"] = status
		return cur, nil
	})
	switch {
	case err == nil:
		d.reports.WithLabelValues(kind, "applied").Inc()
		return nil
	case errors.Is(err, errUnchanged):
		d.reports.WithLabelValues(kind, "unchanged").Inc()
		return nil
	case errors.Is(err, errStale):
		d.reports.WithLabelValues(kind, "stale").Inc()
		return nil
	case apierrors.IsNotFound(err), errors.Is(err, errReplaced):
		d.reports.WithLabelValues(kind, "gone").Inc()
		return nil
	case errors.Is(err, errNotOwner):
		d.reports.WithLabelValues(kind, "refused").Inc()
		return fmt.Errorf("%w: %s: %v", cloudhub.ErrBadReport, subject, err)
	case refusedInput(err):
		d.reports.WithLabelValues(kind, "refused").Inc()
		return fmt.Errorf("%w: %s: %v", cloudhub.ErrBadReport, subject, err)
	}
	return err
}
