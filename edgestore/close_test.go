package edgestore

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// TestCallsAfterCloseAreAnswered: a call that reaches the store after Close gets ErrClosed at
// once. Before, the queue (which has room after Close too) could take it after the writer's
// last look, and nobody answered it: a caller without a deadline waited for good, and a
// WriteTwin left the twin flusher stuck, so no later WriteTwin was ever answered either.
func TestCallsAfterCloseAreAnswered(t *testing.T) {
	s, err := Open(DefaultConfig(filepath.Join(t.TempDir(), "edge.db")), resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := s.Enqueue(ctx, Entry{Kind: protocol.ReportNodeStatus, Subject: "n", Payload: []byte("x")})
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Enqueue #%d after Close: %v, want ErrClosed", i, err)
		}
		_, err = s.WriteTwin(ctx, "ns/dev", []byte("{}"))
		cancel()
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("WriteTwin #%d after Close: %v, want ErrClosed", i, err)
		}
	}
}

// TestCloseRacingCallers: callers that race Close all get an answer, whichever side of the
// writer's exit their operation was queued on.
func TestCloseRacingCallers(t *testing.T) {
	for round := 0; round < 20; round++ {
		s, err := Open(DefaultConfig(filepath.Join(t.TempDir(), "edge.db")), resource.New(), zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		const callers = 16
		answered := make(chan error, callers)
		for i := 0; i < callers; i++ {
			go func() {
				answered <- s.Enqueue(context.Background(), Entry{Kind: protocol.ReportNodeStatus, Subject: "n", Payload: []byte("x")})
			}()
		}
		s.Close()
		for i := 0; i < callers; i++ {
			select {
			case err := <-answered:
				if err != nil && !errors.Is(err, ErrClosed) {
					t.Fatalf("round %d: %v", round, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: a call racing Close was never answered", round)
			}
		}
	}
}
