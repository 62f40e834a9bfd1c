package simbench

import (
	"testing"

	"github.com/tetherhub/tether/sim"
)

func TestResultsNameAndPairBaselines(t *testing.T) {
	rep := &sim.Report{Scenario: "fanout", Nodes: 1000, Figures: []sim.Figure{
		{Name: sim.FigureFanoutP99, Value: 30, Unit: "ms", Goal: "≤ 15 ms"},
		{Name: "join rate", Value: 200, Unit: "nodes/s"},
	}}
	got := results(rep, Baseline{Nodes: 1000, P50: 10, P99: 20})
	if len(got) != 2 {
		t.Fatalf("got %d results", len(got))
	}
	if got[0].Name != "sim fanout 1000 nodes: fan-out to all nodes p99" || got[0].Baseline != 20 || got[0].Goal != "≤ 15 ms" {
		t.Fatalf("fan-out line: %+v", got[0])
	}
	if got[1].Baseline != 0 || got[1].Note != "" {
		t.Fatalf("a figure without a baseline got one: %+v", got[1])
	}
	if other := results(rep, Baseline{Nodes: 5000, P50: 10, P99: 99}); other[0].Baseline != 0 {
		t.Fatalf("a baseline to 5000 nodes was put beside a fan-out to 1000: %+v", other[0])
	}
}

func TestScenariosBySize(t *testing.T) {
	if _, n, err := scenarios("default", 0); err != nil || n != 1000 {
		t.Fatalf("default: %d nodes, %v", n, err)
	}
	if _, n, err := scenarios("full", 0); err != nil || n != 10000 {
		t.Fatalf("full: %d nodes, %v", n, err)
	}
	if _, n, _ := scenarios("default", 50); n != 50 {
		t.Fatalf("an explicit node count was not kept: %d", n)
	}
	if _, _, err := scenarios("huge", 0); err == nil {
		t.Fatal("an unknown size was accepted")
	}
}
