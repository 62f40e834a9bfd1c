package boltbase

import (
	"context"
	"testing"
	"time"
)

// TestRun: a closed loop and a paced run both commit writes and time each one; a paced run
// offers about its rate.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	closed, err := Run(context.Background(), dir, Load{Writers: 8, Keys: 20, ValueSize: 100, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if closed.Rate <= 0 || len(closed.Latency) == 0 || closed.P(0.99) <= 0 {
		t.Fatalf("closed loop: %+v", closed.Rate)
	}
	paced, err := Run(context.Background(), dir, Load{Writers: 8, Keys: 20, ValueSize: 100, Duration: time.Second, Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(paced.Latency); n < 150 || n > 250 {
		t.Fatalf("paced at 200/s for 1 s: %d writes", n)
	}
	if _, err := Run(context.Background(), dir, Load{}); err == nil {
		t.Fatal("a load without writers ran")
	}
}
