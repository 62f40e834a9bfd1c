package edgestore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/resource"
)

// BenchmarkWriteTwin is the store's share of a loaded edge: writers devices, each writing its
// twin state and report again as soon as the last write was committed, as the twin engine does
// for devices reporting in a closed loop. It reports the process's CPU time per write (the
// figure that matters on a 2-core edge), beside the wall time.
func BenchmarkWriteTwin(b *testing.B) {
	for _, writers := range []int{64, 1000} {
		b.Run(fmt.Sprint(writers), func(b *testing.B) {
			s, err := Open(DefaultConfig(filepath.Join(b.TempDir(), "edge.db")), resource.New(), zerolog.Nop(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			state := make([]byte, 250)
			report := make([]byte, 120)
			ctx := context.Background()
			for i := range writers { // every device has its twin and its unsent report
				id := fmt.Sprintf("bench/dev-%05d", i)
				if _, err := s.WriteTwin(ctx, id, state, twinReport(id, string(report))); err != nil {
					b.Fatal(err)
				}
			}
			var wg sync.WaitGroup
			next := make(chan struct{}, b.N)
			for range b.N {
				next <- struct{}{}
			}
			close(next)
			b.ResetTimer()
			cpu0 := cpuTime()
			start := time.Now()
			for i := range writers {
				id := fmt.Sprintf("bench/dev-%05d", i)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range next {
						if _, err := s.WriteTwin(ctx, id, state, twinReport(id, string(report))); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
