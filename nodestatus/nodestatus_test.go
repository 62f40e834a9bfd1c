package nodestatus_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/nodestatus"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// TestFullOutboxDoesNotStopTheAgent: an edge offline long enough to fill its outbox, and the
// reserve for status reports (one host report per start: a crash loop does it), must still
// start. Before, the refused host report ended the reporter with an error, and with it
// tether-edge. Now the reporter keeps running and queues the host report once there is room.
func TestFullOutboxDoesNotStopTheAgent(t *testing.T) {
	cfg := edgestore.DefaultConfig(filepath.Join(t.TempDir(), "edge.db"))
	cfg.OutboxLimit = 1
	st, err := edgestore.Open(cfg, resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A device report fills the outbox; status reports fill the reserve until it refuses one.
	if err := st.Enqueue(ctx, protocol.Report{Kind: protocol.ReportTwin, Subject: "ns/d", Payload: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	for st.Enqueue(ctx, protocol.Report{Kind: protocol.ReportNodeStatus, Subject: "node", Payload: []byte("{}")}) == nil {
	}
	full, _ := st.OutboxDepth()

	ran := make(chan error, 1)
	go func() { ran <- nodestatus.New(st, "test", 20*time.Millisecond, zerolog.Nop()).Run(ctx) }()
	select {
	case err := <-ran:
		t.Fatalf("the reporter ended on a full outbox (which ends tether-edge): %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	// The cloud is back and takes everything: the host report follows.
	es, err := st.ReadOutbox(0, full, 1<<20)
	if err != nil || len(es) != full {
		t.Fatalf("read %d of %d: %v", len(es), full, err)
	}
	if err := st.AckOutbox(ctx, es[len(es)-1].Seq); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		es, _ := st.ReadOutbox(0, 10, 1<<20)
		for _, e := range es {
			var rep nodestatus.Report
			if json.Unmarshal(e.Payload, &rep) == nil && rep.NodeInfo["kubeletVersion"] == "tether-test" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no host report after the outbox drained; outbox holds %d entries", len(es))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
