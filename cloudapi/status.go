package cloudapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tetherhub/tether/cloudhub"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// NodeStatus writes what the hub learns about nodes into Node.status. It implements
// cloudhub.Status and cloudhub.Reports.
type NodeStatus struct {
	objects *Objects
	info    resource.Info
	replica string
	now     func() time.Time
	devices cloudhub.Reports // device twins, state and uploads (devices.go); nil refuses them

	liveness ReplicaLiveness // nil: a holder counts as running until its heartbeat is old
	grace    time.Duration   // a stopped holder's nodes stay Ready this long after it is seen stopped
	mu       sync.Mutex
	alive    map[string]seenAlive // guarded by mu: recent answers of liveness, by replica
}

// ReplicaLiveness says whether a replica still runs: etcdstore.Store, where each replica keeps
// a key on a lease (KeepReplica).
type ReplicaLiveness interface {
	ReplicaAlive(ctx context.Context, name string) (bool, error)
}

type seenAlive struct {
	alive bool
	at    time.Time // when liveness answered
	since time.Time // not alive: when it was first answered so (kept across answers)
}

// aliveFor is how long an answer of the liveness check is used: a replica that died holding
// thousands of nodes costs one check per this, not one per node.
const aliveFor = time.Second

// connectedTo starts the Ready condition's message on a connected node; the holder's name
// follows it.
const connectedTo = "the edge is connected to "

// UseLiveness makes SetReady mark NotReady a node whose holder has stopped (its lease is
// gone) without waiting for the holder's last heartbeat to age: once grace has passed since
// the holder was first seen stopped (cloudhub.HolderStoppedError until then), as the node
// lost its session when its holder stopped and is most likely reconnecting to a replica.
func (n *NodeStatus) UseLiveness(l ReplicaLiveness, grace time.Duration) {
	n.liveness, n.grace = l, grace
}

// holderState says whether the replica named in a Ready message still runs, and if not, since
// when this replica knows it stopped. Without a liveness source, a message of another shape, or
// when the check fails, it runs: marking a node NotReady that its replica still serves is the
// worse mistake.
func (n *NodeStatus) holderState(ctx context.Context, msg string) (holder string, runs bool, stoppedSince time.Time) {
	holder, ok := strings.CutPrefix(msg, connectedTo)
	if n.liveness == nil || !ok || holder == "" {
		return holder, true, time.Time{}
	}
	now := n.now()
	n.mu.Lock()
	seen, ok := n.alive[holder]
	n.mu.Unlock()
	if ok && now.Sub(seen.at) < aliveFor {
		return holder, seen.alive, seen.since
	}
	alive, err := n.liveness.ReplicaAlive(ctx, holder)
	if err != nil {
		return holder, true, time.Time{}
	}
	next := seenAlive{alive: alive, at: now}
	if !alive {
		next.since = now
		if ok && !seen.alive {
			next.since = seen.since
		}
	}
	n.mu.Lock()
	if n.alive == nil {
		n.alive = map[string]seenAlive{}
	}
	n.alive[holder] = next
	n.mu.Unlock()
	return holder, alive, next.since
}

// HolderStopped records that the replica called name stopped, as of now, without waiting for
// a node's check to ask the liveness source (etcdstore.Store.WatchReplicasGone tells of it the
// moment its key goes). A stop already known keeps the time it was first seen. It reports
// whether name is another replica's: this one's own key goes only as it stops.
func (n *NodeStatus) HolderStopped(name string) bool {
	if name == n.replica {
		return false
	}
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.alive == nil {
		n.alive = map[string]seenAlive{}
	}
	next := seenAlive{alive: false, at: now, since: now}
	if seen, ok := n.alive[name]; ok && !seen.alive {
		next.since = seen.since
	}
	n.alive[name] = next
	return true
}

// NewNodeStatus returns the writer; replica names this cloud process in the Ready condition.
func NewNodeStatus(objects *Objects, reg *resource.Registry, replica string, now func() time.Time) *NodeStatus {
	info, _ := reg.ByGroupResource(resource.Nodes)
	return &NodeStatus{objects: objects, info: info, replica: replica, now: now}
}

type condition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	Reason             string `json:"reason,omitempty"`
	Message            string `json:"message,omitempty"`
	LastHeartbeatTime  string `json:"lastHeartbeatTime,omitempty"`
	LastTransitionTime string `json:"lastTransitionTime,omitempty"`
}

// SetReady implements cloudhub.Status. Which replica has a node's session is in the Ready
// condition's message; a node that another replica holds, with a heartbeat less than interval
// old, is not marked NotReady (cloudhub.ErrHeldElsewhere), unless that replica is known to
// have stopped, for a grace period (UseLiveness); nor is one this replica reports connected
// with a heartbeat after the hub started timing its absence (cloudhub.GoneSince, ErrBackHere).
func (n *NodeStatus) SetReady(ctx context.Context, node string, ready bool, reason string, heartbeat time.Time, interval time.Duration) error {
	connectedHere := connectedTo + n.replica
	want, msg := "True", connectedHere
	if !ready {
		want, msg = "Unknown", "the edge has not been connected for the grace period"
	}
	goneSince, timed := cloudhub.GoneSince(ctx)
	_, err := n.objects.write(context.WithValue(ctx, internalWriteKey{}, true), n.info, "", node, "status", 0, func(cur object) (object, error) {
		status, _ := cur["status"].(map[string]any)
		if status == nil {
			status = map[string]any{}
		}
		var conds []condition
		if raw, err := json.Marshal(status["conditions"]); err == nil {
			json.Unmarshal(raw, &conds)
		}
		hb := heartbeat.UTC().Format(time.RFC3339)
		found := false
		for i := range conds {
			c := &conds[i]
			if c.Type != "Ready" {
				continue
			}
			found = true
			last, _ := time.Parse(time.RFC3339, c.LastHeartbeatTime)
			if !ready && timed && c.Status == "True" && c.Message == connectedHere && last.After(goneSince.Truncate(time.Second)) {
				return nil, cloudhub.ErrBackHere // connected here again since its absence was timed
			}
			if !ready && c.Status == "True" && c.Message != connectedHere && heartbeat.Sub(last) < interval {
				holder, runs, since := n.holderState(ctx, c.Message)
				if runs {
					return nil, cloudhub.ErrHeldElsewhere // another replica has the node's session
				}
				if wait := n.grace - n.now().Sub(since); wait > 0 {
					return nil, &cloudhub.HolderStoppedError{Holder: holder, Wait: wait}
				}
			}
			if c.Status == want && c.Message == msg && (!ready || heartbeat.Sub(last) < interval) {
				return nil, errUnchanged
			}
			if c.Status != want {
				c.LastTransitionTime = n.now().UTC().Format(time.RFC3339)
			}
			c.Status, c.Reason, c.Message = want, reason, msg
			if ready {
				c.LastHeartbeatTime = hb
			}
		}
		if !found && !ready {
			// A node that never connected has no Ready condition, which already reads as
			// Unknown (kubectl prints it so); writing one would cost the store a write per
			// node joined and not yet connected, thousands at once when a fleet is provisioned.
			return nil, errUnchanged
		}
		if !found {
			conds = append(conds, condition{Type: "Ready", Status: want, Reason: reason, Message: msg, LastHeartbeatTime: hb, LastTransitionTime: n.now().UTC().Format(time.RFC3339)})
		}
		status["conditions"] = conds
		cur["status"] = status
		return cur, nil
	})
	if err == errUnchanged && !ready {
		return cloudhub.ErrNotMarked
	}
	if err == errUnchanged || apierrors.IsNotFound(err) {
		return nil // nothing to write, or the node was deleted meanwhile
	}
	return err
}

// errUnchanged lets a mutate function skip a write that would change nothing.
var errUnchanged = fmt.Errorf("cloudapi: unchanged")

// nodeReport is what an edge reports about itself (protocol.ReportNodeStatus).
type nodeReport struct {
	NodeInfo  map[string]string `json:"nodeInfo"`
	Addresses []struct {
		Type    string `json:"type"`
		Address string `json:"address"`
	} `json:"addresses"`
	Capacity    map[string]string `json:"capacity"`
	Allocatable map[string]string `json:"allocatable"`
	// Conditions the edge owns (OutboxFull); Ready is the hub's and is ignored here.
	Conditions []condition `json:"conditions"`
}

// Apply implements cloudhub.Reports.
func (n *NodeStatus) Apply(ctx context.Context, node string, epoch int64, r *protocol.Report) error {
	switch r.Kind {
	case protocol.ReportNodeStatus:
		return n.applyNodeStatus(ctx, node, epoch, r.Payload)
	case protocol.ReportTwin, protocol.ReportDeviceState, protocol.ReportUpload:
		if n.devices != nil {
			return n.devices.Apply(ctx, node, epoch, r)
		}
	}
	return fmt.Errorf("%w: report kind %d is not handled by this cloud", cloudhub.ErrBadReport, r.Kind)
}

// maxNodeConditions bounds the condition types a Node's status keeps (the hub's Ready and the
// edge's own, OutboxFull today): a report adding types past it is refused, or an edge could grow
// its Node without end.
const maxNodeConditions = 16

func (n *NodeStatus) applyNodeStatus(ctx context.Context, node string, epoch int64, payload []byte) error {
	if err := kubeapi.CheckJSONShape(payload); err != nil {
		return fmt.Errorf("%w: node status: %v", cloudhub.ErrBadReport, err)
	}
	var rep nodeReport
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		return fmt.Errorf("%w: node status: %v", cloudhub.ErrBadReport, err)
	}
	err := n.objects.writeReport(ctx, n.info, "", node, node, epoch, func(cur object) (object, error) {
		status, _ := cur["status"].(map[string]any)
		if status == nil {
			status = map[string]any{}
		}
		before, _ := json.Marshal(status)
		if rep.NodeInfo != nil {
			status["nodeInfo"] = rep.NodeInfo
		}
		if rep.Addresses != nil {
			status["addresses"] = rep.Addresses
		}
		if rep.Capacity != nil {
			status["capacity"] = rep.Capacity
		}
		if rep.Allocatable != nil {
			status["allocatable"] = rep.Allocatable
		}
		if len(rep.Conditions) > 0 {
			var conds []condition
			if raw, err := json.Marshal(status["conditions"]); err == nil {
				json.Unmarshal(raw, &conds)
			}
			at := make(map[string]int, len(conds))
			for i, c := range conds {
				at[c.Type] = i
			}
			for _, c := range rep.Conditions {
				if c.Type == "" || c.Type == "Ready" {
					continue
				}
				if i, ok := at[c.Type]; ok {
					conds[i] = c
					continue
				}
				if len(conds) >= maxNodeConditions {
					return nil, kubeapi.BadRequest("node status: more than %d condition types", maxNodeConditions)
				}
				at[c.Type] = len(conds)
				conds = append(conds, c)
			}
			status["conditions"] = conds
		}
		if after, _ := json.Marshal(status); string(after) == string(before) {
			return nil, errUnchanged
		}
		cur["status"] = status
		return cur, nil
	})
	if err == errUnchanged || err == errStale {
		return nil
	}
	if refusedInput(err) {
		return fmt.Errorf("%w: node status: %v", cloudhub.ErrBadReport, err)
	}
	return err
}
