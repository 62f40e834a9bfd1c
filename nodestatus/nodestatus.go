package nodestatus

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime"
	"sort"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/protocol"
)

// Outbox is what the reporter needs of the edge store.
type Outbox interface {
	Enqueue(ctx context.Context, entries ...protocol.Report) error
	// OutboxFull says whether the outbox is at its limit and how many reports it has refused.
	OutboxFull() (full bool, refused int64)
}

// Condition is a Node condition as the edge reports it.
type Condition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	Reason             string `json:"reason,omitempty"`
	Message            string `json:"message,omitempty"`
	LastTransitionTime string `json:"lastTransitionTime,omitempty"`
}

// Report is the payload of a protocol.ReportNodeStatus.
type Report struct {
	NodeInfo    map[string]string   `json:"nodeInfo,omitempty"`
	Addresses   []map[string]string `json:"addresses,omitempty"`
	Capacity    map[string]string   `json:"capacity,omitempty"`
	Allocatable map[string]string   `json:"allocatable,omitempty"`
	Conditions  []Condition         `json:"conditions,omitempty"`
}

// Reporter reports the node's status.
type Reporter struct {
	out      Outbox
	version  string
	interval time.Duration
	log      zerolog.Logger
	now      func() time.Time
}

// New returns a reporter that checks the outbox every interval.
func New(out Outbox, version string, interval time.Duration, log zerolog.Logger) *Reporter {
	return &Reporter{out: out, version: version, interval: interval, log: log.With().Str("component", "nodestatus").Logger(), now: time.Now}
}

// Run reports the host once, then watches the outbox until ctx ends. A report the outbox
// refuses (an edge offline long enough to fill even the reserve for status reports) is not
// fatal: the agent keeps serving, and the reporter tries again at the next interval.
func (r *Reporter) Run(ctx context.Context) error {
	hostSent := r.trySend(ctx, r.host(), "could not queue the host report; trying again later")
	t := time.NewTicker(r.interval)
	defer t.Stop()
	full, lastRefused := false, int64(0)
	_, lastRefused = r.out.OutboxFull()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !hostSent {
			hostSent = r.trySend(ctx, r.host(), "could not queue the host report; trying again later")
		}
		atLimit, refused := r.out.OutboxFull()
		// Full while at the limit or while reports were refused since the last look; clear once
		// neither holds.
		now := atLimit || refused > lastRefused
		if now == full {
			lastRefused = refused
			continue
		}
		lost := refused - lastRefused
		c := Condition{Type: "OutboxFull", Status: "False", Reason: "OutboxDraining", Message: "the outbox has room",
			LastTransitionTime: r.now().UTC().Format(time.RFC3339)}
		if now {
			c.Status, c.Reason = "True", "OutboxAtLimit"
			c.Message = fmt.Sprintf("the edge's outbox is full: %d reports were refused (devices got error results and resend)", lost)
		}
		if !r.trySend(ctx, Report{Conditions: []Condition{c}}, "could not queue the outbox condition; trying again later") {
			continue // the transition is reported at a later tick
		}
		full, lastRefused = now, refused
		if full {
			r.log.Warn().Int64("refused", lost).Msg("outbox full: reports are being refused")
		} else {
			r.log.Info().Msg("outbox has room again")
		}
	}
}

// trySend queues rep, logging failures with msg; it reports whether rep was queued.
func (r *Reporter) trySend(ctx context.Context, rep Report, msg string) bool {
	err := r.send(ctx, rep)
	if err != nil && ctx.Err() == nil {
		r.log.Warn().Err(err).Msg(msg)
	}
	return err == nil
}

func (r *Reporter) send(ctx context.Context, rep Report) error {
	payload, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	return r.out.Enqueue(ctx, protocol.Report{Kind: protocol.ReportNodeStatus, Subject: "node", Payload: payload})
}

// host describes the machine the agent runs on.
func (r *Reporter) host() Report {
	host, _ := os.Hostname()
	addrs := []map[string]string{{"type": "Hostname", "address": host}}
	if ifaces, err := net.InterfaceAddrs(); err == nil {
		var ips []string
		for _, a := range ifaces {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				ips = append(ips, ipn.IP.String())
			}
		}
		sort.Strings(ips)
		for _, ip := range ips {
			addrs = append(addrs, map[string]string{"type": "InternalIP", "address": ip})
		}
	}
	return Report{
		NodeInfo: map[string]string{
			"architecture": runtime.GOARCH, "operatingSystem": runtime.GOOS,
			"kubeletVersion": "tether-" + r.version, "containerRuntimeVersion": "",
		},
		Addresses: addrs,
		Capacity:  map[string]string{"cpu": fmt.Sprint(runtime.NumCPU())},
		Conditions: []Condition{{Type: "OutboxFull", Status: "False", Reason: "OutboxDraining", Message: "the outbox has room",
			LastTransitionTime: r.now().UTC().Format(time.RFC3339)}},
	}
}
