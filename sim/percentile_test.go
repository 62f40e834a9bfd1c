package sim

import "testing"

// TestPercentileNearestRank: p99 of 50 trials is the worst of them, p99 of 100 the 99th, p50
// of 10 the 5th; the median of one value is that value.
func TestPercentileNearestRank(t *testing.T) {
	seq := func(n int) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = float64(n - i) // unsorted on purpose
		}
		return xs
	}
	for _, c := range []struct {
		n    int
		p    float64
		want float64
	}{
		{50, 0.99, 50}, {100, 0.99, 99}, {10, 0.99, 10}, {10, 0.5, 5}, {1, 0.5, 1}, {1000, 0.99, 990}, {7, 1, 7},
	} {
		if got := percentile(seq(c.n), c.p); got != c.want {
			t.Errorf("p%.0f of 1..%d: %v, want %v", c.p*100, c.n, got, c.want)
		}
	}
	if got := percentile(nil, 0.99); got != 0 {
		t.Errorf("of nothing: %v", got)
	}
}
