package boltbase

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tetherhub/tether/bench/figure"
)

// Load is one run's shape.
type Load struct {
	Writers   int           // concurrent writers, each with one write in flight
	Keys      int           // distinct keys, spread over the writers (an update rewrites one)
	ValueSize int           // bytes per value
	Duration  time.Duration // of the measurement
	Rate      float64       // writes/s offered over all writers; 0 is a closed loop
}

// Figures are what a run measured.
type Figures struct {
	Rate    float64   // durable writes per second
	Latency []float64 // per write, in ms, from the call to its commit (from its due time when paced)
}

// P is the q-quantile of the latencies in ms.
func (f Figures) P(q float64) float64 { return figure.Percentile(f.Latency, q) }

// Run measures bare bbolt writes under l, in a fresh file in dir that it removes after.
func Run(ctx context.Context, dir string, l Load) (Figures, error) {
	var out Figures
	if l.Writers <= 0 || l.Keys <= 0 {
		return out, fmt.Errorf("boltbase: %d writers, %d keys", l.Writers, l.Keys)
	}
	f, err := os.CreateTemp(dir, "boltbase-*.db")
	if err != nil {
		return out, err
	}
	path := f.Name()
	f.Close()
	defer os.Remove(path)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return out, err
	}
	defer db.Close()
	bucket := []byte("b")
	value := make([]byte, l.ValueSize)
	for i := range value {
		value[i] = 'v'
	}
	// Every key exists first, so the measured writes are updates of a store of that size.
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucket)
		if err != nil {
			return err
		}
		for i := range l.Keys {
			if err := b.Put(key(i), value); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return out, err
	}
	start := time.Now()
	end := start.Add(l.Duration)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	for w := range l.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []float64
			defer func() { mu.Lock(); out.Latency = append(out.Latency, lat...); mu.Unlock() }()
			var interval time.Duration
			next := time.Now()
			if l.Rate > 0 {
				interval = time.Duration(float64(l.Writers) / l.Rate * float64(time.Second))
				next = next.Add(time.Duration(rand.Int64N(int64(interval))))
			}
			for n := 0; ctx.Err() == nil; n++ {
				if l.Rate > 0 {
					time.Sleep(time.Until(next))
				} else {
					next = time.Now()
				}
				if next.After(end) {
					return
				}
				k := key((w + n*l.Writers) % l.Keys)
				// DB.Batch as bbolt ships it: a batch commits after 10 ms or at 1,000 calls. With
				// MaxBatchDelay 0 instead, one run with 1,000 writers did 4,033 writes/s, against
				// 390–520 k/s with the defaults.
				err := db.Batch(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(k, value) })
				if err != nil {
					select {
					case errc <- err:
					default:
					}
					return
				}
				lat = append(lat, figure.Ms(time.Since(next)))
				next = next.Add(interval)
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return out, err
	default:
	}
	out.Rate = float64(len(out.Latency)) / time.Since(start).Seconds()
	return out, ctx.Err()
}

func key(i int) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, uint64(i))
	return k
}
