package nodegroup

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/index"
)

func TestCompute(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	nodes := []Node{
		{Name: "n1", Labels: map[string]string{"zone": "a"}, Ready: Ready},
		{Name: "n2", Labels: map[string]string{"zone": "a", index.LabelGroup: "stale"}, Ready: NotReady},
		{Name: "n3", Labels: map[string]string{"zone": "b"}, Ready: Unknown},
		{Name: "n4", Labels: map[string]string{"zone": "b", "rack": "1"}, Ready: Ready},
		{Name: "n5", Labels: map[string]string{index.LabelGroup: "east"}, Ready: Ready},
	}
	groups := []Group{
		// Listed out of order: "first" is by creation time, then name.
		{Name: "west", Created: t0.Add(time.Hour), MatchLabels: map[string]string{"zone": "b"}},
		{Name: "east", Created: t0, MatchLabels: map[string]string{"zone": "a"}, Nodes: []string{"n3", "ghost", "n3"}},
		{Name: "alpha", Created: t0.Add(time.Hour), Nodes: []string{"n4"}},
		{Name: "feedback", Created: t0, MatchLabels: map[string]string{index.LabelGroup: "east"}},
		{Name: "everything", Created: t0, MatchLabels: map[string]string{}},
		{Name: "x" + strings.Repeat("y", 63), Created: t0, Nodes: []string{"n5"}},
	}
	m := Compute(groups, nodes)
	wantOf := map[string]string{"n1": "east", "n2": "east", "n3": "east", "n4": "alpha"}
	if got, _ := json.Marshal(m.Of); string(got) != mustString(wantOf) {
		t.Errorf("membership %s\nwant       %s", got, mustString(wantOf))
	}
	want := map[string]string{
		"east": `[{"nodeName":"ghost","readyStatus":"Unknown","selectionStatus":"Failed","selectionStatusReason":"node does not exist"},` +
			`{"nodeName":"n1","readyStatus":"Ready","selectionStatus":"Succeeded"},` +
			`{"nodeName":"n2","readyStatus":"NotReady","selectionStatus":"Succeeded"},` +
			`{"nodeName":"n3","readyStatus":"Unknown","selectionStatus":"Succeeded"}]`,
		"alpha": `[{"nodeName":"n4","readyStatus":"Ready","selectionStatus":"Succeeded"}]`,
		"west": `[{"nodeName":"n3","readyStatus":"Unknown","selectionStatus":"Failed","selectionStatusReason":"the node belongs to NodeGroup \"east\", which comes first (older, or as old with a name that sorts first)"},` +
			`{"nodeName":"n4","readyStatus":"Ready","selectionStatus":"Failed","selectionStatusReason":"the node belongs to NodeGroup \"alpha\", which comes first (older, or as old with a name that sorts first)"}]`,
		"feedback":                    `null`,
		"everything":                  `null`,
		"x" + strings.Repeat("y", 63): `[{"nodeName":"n5","readyStatus":"Ready","selectionStatus":"Failed","selectionStatusReason":"` + reasonBadName + `"}]`,
	}
	for g, w := range want {
		if got := mustString(m.Statuses[g]); got != w {
			t.Errorf("status of %s\n got %s\nwant %s", g, got, w)
		}
	}
}

func mustString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
