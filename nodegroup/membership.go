package nodegroup

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tetherhub/tether/index"
)

// Values of NodeStatus fields, as KubeEdge spells them.
const (
	Succeeded = "Succeeded"
	Failed    = "Failed"

	Ready    = "Ready"
	NotReady = "NotReady"
	Unknown  = "Unknown"
)

// Reasons given with a Failed selection.
const (
	reasonMissing   = "node does not exist"
	reasonBadName   = "the NodeGroup's name is not a valid label value (at most 63 characters: letters, digits, '-', '_', '.'), so it cannot hold nodes"
	reasonConflictF = "the node belongs to NodeGroup %q, which comes first (older, or as old with a name that sorts first)"
)

// Group is what membership needs of a NodeGroup.
type Group struct {
	Name        string
	Created     time.Time
	Nodes       []string          // spec.nodes
	MatchLabels map[string]string // spec.matchLabels
}

// Node is what membership needs of a Node.
type Node struct {
	Name   string
	Labels map[string]string
	Ready  string // Ready, NotReady or Unknown
}

// NodeStatus is one entry of a NodeGroup's status.nodeStatuses, in KubeEdge's shape.
type NodeStatus struct {
	NodeName              string `json:"nodeName"`
	ReadyStatus           string `json:"readyStatus"`
	SelectionStatus       string `json:"selectionStatus"`
	SelectionStatusReason string `json:"selectionStatusReason,omitempty"`
}

// Membership is the outcome of the selection rules.
type Membership struct {
	// Of maps each node that belongs to a group to that group.
	Of map[string]string
	// Statuses maps every group to its status.nodeStatuses, sorted by node name (nil if empty).
	Statuses map[string][]NodeStatus
}

// Compute applies the selection rules to groups and nodes; it is a pure function of them, so
// every replica (and a test recomputing from scratch) reaches the same answer.
//
//   - A group selects the nodes named in spec.nodes and the nodes whose labels include every
//     pair of spec.matchLabels. Empty matchLabels select nothing (not everything).
//   - Labels are matched without index.LabelGroup: that label is the outcome of membership, and
//     matching on it would let one group's membership feed another's (a matchLabels entry with
//     that key never matches).
//   - A node selected by several groups belongs to the first of them in order of creation time,
//     then name; the others list it as Failed, naming the group it belongs to.
//   - A group whose name is not a valid label value cannot hold nodes (the label could not be
//     written); it lists the nodes it selects as Failed.
//   - A name in spec.nodes with no Node is listed as Failed with readiness Unknown.
func Compute(groups []Group, nodes []Node) Membership {
	groups = slices.Clone(groups)
	slices.SortFunc(groups, func(a, b Group) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	byName := make(map[string]*Node, len(nodes))
	for i := range nodes {
		byName[nodes[i].Name] = &nodes[i]
	}
	m := Membership{Of: map[string]string{}, Statuses: map[string][]NodeStatus{}}
	type claim struct {
		node  *Node
		group int
	}
	var claims []claim // in group order
	missing := map[int][]string{}
	for gi, g := range groups {
		named := map[string]bool{}
		for _, n := range g.Nodes {
			if named[n] {
				continue
			}
			named[n] = true
			if node := byName[n]; node != nil {
				claims = append(claims, claim{node, gi})
			} else {
				missing[gi] = append(missing[gi], n)
			}
		}
		if len(g.MatchLabels) == 0 {
			continue
		}
		for i := range nodes {
			if n := &nodes[i]; !named[n.Name] && matches(n.Labels, g.MatchLabels) {
				claims = append(claims, claim{n, gi})
			}
		}
	}
	valid := make([]bool, len(groups))
	for gi, g := range groups {
		valid[gi] = len(validation.IsValidLabelValue(g.Name)) == 0
	}
	for _, c := range claims {
		g := groups[c.group]
		st := NodeStatus{NodeName: c.node.Name, ReadyStatus: c.node.Ready, SelectionStatus: Succeeded}
		switch owner, taken := m.Of[c.node.Name]; {
		case !valid[c.group]:
			st.SelectionStatus, st.SelectionStatusReason = Failed, reasonBadName
		case taken:
			st.SelectionStatus, st.SelectionStatusReason = Failed, fmt.Sprintf(reasonConflictF, owner)
		default:
			m.Of[c.node.Name] = g.Name
		}
		m.Statuses[g.Name] = append(m.Statuses[g.Name], st)
	}
	for gi, g := range groups {
		for _, n := range missing[gi] {
			m.Statuses[g.Name] = append(m.Statuses[g.Name], NodeStatus{NodeName: n, ReadyStatus: Unknown, SelectionStatus: Failed, SelectionStatusReason: reasonMissing})
		}
		slices.SortFunc(m.Statuses[g.Name], func(a, b NodeStatus) int { return cmp.Compare(a.NodeName, b.NodeName) })
	}
	return m
}

func matches(labels, want map[string]string) bool {
	for k, v := range want {
		if k == index.LabelGroup {
			return false
		}
		if have, ok := labels[k]; !ok || have != v {
			return false
		}
	}
	return true
}
