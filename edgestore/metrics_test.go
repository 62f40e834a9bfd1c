package edgestore

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/resource"
)

// TestCommitDiskTime: every commit is timed whole and in its disk part (page writes and
// fdatasyncs), and the disk part is some of the whole: an operator reading a slow commit can
// tell a stalling disk from a busy process.
func TestCommitDiskTime(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := Open(DefaultConfig(filepath.Join(t.TempDir(), "edge.db")), resource.New(), zerolog.Nop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 20 {
		id := fmt.Sprintf("ns/dev-%d", i)
		if _, err := s.WriteTwin(context.Background(), id, []byte(`{"temp":1}`), twinReport(id, "r")); err != nil {
			t.Fatal(err)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	hist := map[string][2]float64{} // name: count, sum
	for _, f := range families {
		if h := f.GetMetric()[0].GetHistogram(); h != nil {
			hist[f.GetName()] = [2]float64{float64(h.GetSampleCount()), h.GetSampleSum()}
		}
	}
	whole, disk := hist["tether_edge_store_commit_seconds"], hist["tether_edge_store_commit_disk_seconds"]
	t.Logf("commits %v s, disk part %v s", whole, disk)
	if whole[0] < 20 || disk[0] != whole[0] {
		t.Fatalf("%v commits timed whole and %v in their disk part, want the same, at least 20", whole[0], disk[0])
	}
	if disk[1] <= 0 || disk[1] > whole[1] {
		t.Fatalf("disk part %.6f s of commits taking %.6f s", disk[1], whole[1])
	}
}
