package groupbench

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestRun runs the benchmark when GROUPBENCH_BIN names a directory holding tether-cloud
// (GROUPBENCH_SIZE: small, the default here, default or full). make bench runs it through
// bench/main.go instead; this is for working on the benchmark itself.
func TestRun(t *testing.T) {
	bin := os.Getenv("GROUPBENCH_BIN")
	if bin == "" {
		t.Skip("GROUPBENCH_BIN is not set")
	}
	size := os.Getenv("GROUPBENCH_SIZE")
	if size == "" {
		size = "small"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := Run(ctx, bin, size, os.Stdout); err != nil {
		t.Fatal(err)
	}
}
