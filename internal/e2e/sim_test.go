package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetherhub/tether/store/etcdstore/etcdtest"
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
			if sc.name == "twin" {
				// Again against the same cloud, whose devices hold the first run's values.
				if out, err = exec.Command(filepath.Join(binDir, "tether-sim"), args...).CombinedOutput(); err != nil {
					t.Fatalf("tether-sim %v, a second time: %v\n%s", args, err, out)
				}
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

// TestSimFollowsReplica: tether-sim given a join URL that does not answer joins through the
// next one. Told two replicas' APIs, it reads its progress from the first;
// when that replica is killed mid-run it says so, reads the other from then on, and its steady
// run still ends converged, with the cloud's figures left out rather than mixed from two
// processes.
func TestSimFollowsReplica(t *testing.T) {
	srv := etcdtest.Start(t)
	args := []string{"--store", "etcd", "--etcd-endpoints", srv.Endpoint(), "--etcd-prefix", "/simfollow", "--replica-ttl", "2s"}
	a := newCloud(t, append(args, "--replica-name", "replica-a")...)
	b := newCloud(t, append(args, "--replica-name", "replica-b")...)
	report := filepath.Join(t.TempDir(), "report.json")
	// The first join URL given is a replica that is not there: the nodes join through the next.
	deadJoin := "https://" + freePort(t)
	cmd := exec.Command(filepath.Join(binDir, "tether-sim"), "--cloud", a.hub+","+b.hub, "--join", deadJoin+",https://"+a.join,
		"--api", a.url("")+","+b.url(""), "--nodes", "10", "--scenario", "steady", "--duration", "12s", "--report", report)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var out strings.Builder
	sc := bufio.NewScanner(pipe)
	killed := false
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		if !killed && strings.Contains(line, "steady for") && strings.Contains(line, "cloud RSS") {
			a.kill()
			killed = true
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tether-sim: %v\n%s", err, out.String())
	}
	if !killed {
		t.Fatalf("no progress line of the steady phase read from replica-a:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "the join service at "+deadJoin+" does not answer; joining through https://"+a.join) {
		t.Fatalf("tether-sim did not say it joined through the second join URL:\n%s", out.String())
	}
	switched := "does not answer; reading " + b.url("") + " from now on"
	_, after, found := strings.Cut(out.String(), switched)
	if !found {
		t.Fatalf("tether-sim did not move to replica-b:\n%s", out.String())
	}
	if !strings.Contains(after, "(the replica at "+b.url("")+")") {
		t.Fatalf("no progress read from replica-b after the move:\n%s", out.String())
	}
	var rep struct {
		Converged bool
		Errors    int
		Figures   []struct{ Name string }
	}
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(raw, &rep)
	if !rep.Converged || rep.Errors != 0 {
		t.Fatalf("report: converged %v, errors %d\n%s", rep.Converged, rep.Errors, out.String())
	}
	for _, f := range rep.Figures {
		if strings.HasPrefix(f.Name, "cloud CPU") {
			t.Fatalf("a cloud CPU figure across two replicas: %+v\n%s", rep.Figures, out.String())
		}
	}
	t.Logf("tether-sim's output:\n%s", out.String())
}
