package nodegroup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/cloudapi"
	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/nodegroup"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store/boltstore"
)

// TestControllerKeepsLabelsAndStatus runs the controller over a real store, index and cloud
// objects and checks the labels and statuses it writes as groups and nodes change.
func TestControllerKeepsLabelsAndStatus(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := boltstore.Open(boltstore.DefaultConfig(filepath.Join(t.TempDir(), "cloud.db")), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	reg := resource.New()
	ix, err := index.New(index.DefaultConfig(), b, reg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	objects := cloudapi.NewObjects(b, ix, reg, 1000, 1000, time.Now)
	ctl, err := nodegroup.New(nodegroup.DefaultConfig(), ix, objects, reg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { ix.Run(ctx); done <- struct{}{} }()
	go func() { ctl.Run(ctx); done <- struct{}{} }()
	defer func() { cancel(); <-done; <-done }()

	nodeInfo, _ := reg.ByGroupResource(resource.Nodes)
	groupInfo, _ := reg.ByGroupResource(resource.NodeGroups)
	create := func(info resource.Info, obj map[string]any) {
		t.Helper()
		body, _ := json.Marshal(obj)
		if _, err := objects.Create(ctx, info, "", body); err != nil {
			t.Fatal(err)
		}
	}
	patch := func(info resource.Info, name, sub string, p map[string]any) {
		t.Helper()
		body, _ := json.Marshal(p)
		if _, err := objects.Patch(ctx, info, "", name, sub, kubeapi.MergePatch, body); err != nil {
			t.Fatal(err)
		}
	}
	node := func(name string, labels map[string]string) {
		create(nodeInfo, map[string]any{"metadata": map[string]any{"name": name, "labels": labels}})
	}
	group := func(name string, nodes []string, match map[string]string) {
		create(groupInfo, map[string]any{"metadata": map[string]any{"name": name}, "spec": map[string]any{"nodes": nodes, "matchLabels": match}})
	}
	// state renders every node's group and every group's status, one line each.
	state := func() string {
		snap := ix.Snapshot()
		var lines []string
		for _, o := range snap.List(resource.Prefix(resource.Nodes, ""), "", 0) {
			lines = append(lines, fmt.Sprintf("%s in %q", o.Key.Name, o.Labels[index.LabelGroup]))
		}
		for _, o := range snap.List(resource.Prefix(resource.NodeGroups, ""), "", 0) {
			var g struct {
				Status struct{ NodeStatuses []nodegroup.NodeStatus }
			}
			json.Unmarshal(o.Raw, &g)
			var sts []string
			for _, s := range g.Status.NodeStatuses {
				st := s.NodeName + ":" + s.ReadyStatus + ":" + s.SelectionStatus
				if s.SelectionStatusReason != "" {
					words := strings.Fields(s.SelectionStatusReason)
					st += "(" + strings.Trim(words[len(words)-1], "()") + ")"
				}
				sts = append(sts, st)
			}
			lines = append(lines, o.Key.Name+": "+strings.Join(sts, " "))
		}
		sort.Strings(lines)
		return strings.Join(lines, "\n")
	}
	expect := func(what string, want ...string) {
		t.Helper()
		sort.Strings(want)
		w := strings.Join(want, "\n")
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := state()
			if got == w {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s:\n got\n%s\nwant\n%s", what, got, w)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	node("n1", map[string]string{"zone": "a"})
	node("n2", map[string]string{"zone": "a"})
	node("n3", map[string]string{"zone": "b"})
	node("n4", nil)
	group("east", []string{"n4", "ghost"}, map[string]string{"zone": "a"})
	// creationTimestamp has a resolution of a second: make sure west is younger.
	time.Sleep(1100 * time.Millisecond)
	group("west", []string{"n1"}, map[string]string{"zone": "b"})
	expect("two groups, n1 claimed by both",
		`n1 in "east"`, `n2 in "east"`, `n3 in "west"`, `n4 in "east"`,
		"east: ghost:Unknown:Failed(exist) n1:Unknown:Succeeded n2:Unknown:Succeeded n4:Unknown:Succeeded",
		"west: n1:Unknown:Failed(first) n3:Unknown:Succeeded")

	patch(nodeInfo, "n3", "", map[string]any{"metadata": map[string]any{"labels": map[string]any{"zone": "a"}}})
	expect("n3 relabelled into east",
		`n1 in "east"`, `n2 in "east"`, `n3 in "east"`, `n4 in "east"`,
		"east: ghost:Unknown:Failed(exist) n1:Unknown:Succeeded n2:Unknown:Succeeded n3:Unknown:Succeeded n4:Unknown:Succeeded",
		"west: n1:Unknown:Failed(first)")

	patch(nodeInfo, "n2", "", map[string]any{"metadata": map[string]any{"labels": map[string]any{index.LabelGroup: "west"}}})
	expect("a hand-set belonging-to label is undone",
		`n1 in "east"`, `n2 in "east"`, `n3 in "east"`, `n4 in "east"`,
		"east: ghost:Unknown:Failed(exist) n1:Unknown:Succeeded n2:Unknown:Succeeded n3:Unknown:Succeeded n4:Unknown:Succeeded",
		"west: n1:Unknown:Failed(first)")

	patch(nodeInfo, "n1", "status", map[string]any{"status": map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}}})
	patch(nodeInfo, "n2", "status", map[string]any{"status": map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "False"}}}})
	expect("readiness shows in both groups",
		`n1 in "east"`, `n2 in "east"`, `n3 in "east"`, `n4 in "east"`,
		"east: ghost:Unknown:Failed(exist) n1:Ready:Succeeded n2:NotReady:Succeeded n3:Unknown:Succeeded n4:Unknown:Succeeded",
		"west: n1:Ready:Failed(first)")

	if _, err := objects.Delete(ctx, groupInfo, "", "east", kubeapi.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("east deleted: n1 falls to west, the others to no group",
		`n1 in "west"`, `n2 in ""`, `n3 in ""`, `n4 in ""`,
		"west: n1:Ready:Succeeded")

	node("ghost", map[string]string{"zone": "b"})
	patch(groupInfo, "west", "", map[string]any{"spec": map[string]any{"nodes": nil}})
	expect("west now selects by label only",
		`ghost in "west"`, `n1 in ""`, `n2 in ""`, `n3 in ""`, `n4 in ""`,
		"west: ghost:Unknown:Succeeded")
}
