package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSimulator runs tether-sim briefly, as a user would, against a real cloud it starts itself,
// and checks its report: no errors and every node converged, for the scenarios that exercise the
// protocol end to end.
func TestSimulator(t *testing.T) {
	for _, sc := range []struct {
		name string
		args []string
	}{
		{"fanout", []string{"--nodes", "30", "--changes", "10"}},
		{"twin", []string{"--nodes", "20", "--devices-per-node", "2"}},
		{"restart", []string{"--nodes", "30"}},
		{"churn", []string{"--nodes", "30", "--duration", "6s", "--churn-every", "2s", "--churn-share", "0.3"}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			dir := t.TempDir()
			report := filepath.Join(dir, "report.json")
			args := append([]string{"--start-cloud", binDir, "--cloud-data-dir", filepath.Join(dir, "cloud"),
				"--scenario", sc.name, "--report", report}, sc.args...)
			out, err := exec.Command(filepath.Join(binDir, "tether-sim"), args...).CombinedOutput()
			if err != nil {
				t.Fatalf("tether-sim %v: %v\n%s", args, err, out)
			}
			var rep struct {
				Converged bool
				Errors    int
				Nodes     int
				Figures   []struct {
					Name  string
					Value float64
				}
			}
			raw, err := os.ReadFile(report)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &rep); err != nil {
				t.Fatal(err)
			}
			if !rep.Converged || rep.Errors != 0 || len(rep.Figures) == 0 {
				t.Fatalf("report: converged %v, errors %d, %d figures\n%s", rep.Converged, rep.Errors, len(rep.Figures), out)
			}
			html, err := os.ReadFile(strings.TrimSuffix(report, ".json") + ".html")
			if err != nil || !strings.Contains(string(html), "<svg") {
				t.Fatalf("no HTML report with plots: %v", err)
			}
			for _, f := range rep.Figures {
				if sc.name == "restart" && f.Name == "restart: nodes the cloud reports NotReady" && f.Value != 0 {
					t.Errorf("%d nodes NotReady during the restart", int(f.Value))
				}
			}
		})
	}
}
