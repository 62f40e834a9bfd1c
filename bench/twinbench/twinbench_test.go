package twinbench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRun runs the benchmark at size $TWINBENCH_SIZE (quick by default) and checks that every
// row was measured.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tether-cloud and tether-edge")
	}
	size := os.Getenv("TWINBENCH_SIZE")
	if size == "" {
		size = "quick"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := Run(ctx, size, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	p, _ := sizeParams(size)
	saturated := fmt.Sprintf("twin/update durable with success result, %.0f/s offered", p.saturate)
	for _, row := range []string{"bare mochi QoS 1 ingest", "bare bbolt durable writes", "twin/update durable with success result, closed loop", saturated, "publish → result p99", "RSS idle", "RSS under load", "desired change → delta"} {
		if !strings.Contains(out.String(), row) {
			t.Errorf("no %q row", row)
		}
	}
}

func TestEventNumber(t *testing.T) {
	n, isErr, ok := eventNumber([]byte(`{"event_id":"42","timestamp":1,"twin":{}}`))
	if !ok || isErr || n != 42 {
		t.Fatal(n, isErr, ok)
	}
	if _, isErr, ok := eventNumber([]byte(`{"event_id":"7","timestamp":1,"code":400,"reason":"x"}`)); !ok || !isErr {
		t.Fatal("error result not seen")
	}
	if _, _, ok := eventNumber([]byte(`{"event_id":"","timestamp":1}`)); ok {
		t.Fatal("empty id parsed")
	}
}
