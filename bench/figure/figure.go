package figure

import (
	"fmt"
	"sort"
	"time"
)

// Result is one measured figure beside its baseline.
type Result struct {
	Name     string
	Unit     string
	Value    float64
	Baseline float64 // 0 when there is none
	Goal     string
	Note     string
}

// Format renders a result as one line.
func Format(r Result) string {
	s := fmt.Sprintf("%-58s %10.3f %-6s", r.Name, r.Value, r.Unit)
	if r.Baseline > 0 {
		s += fmt.Sprintf(" baseline %10.3f %-6s ratio %5.2f", r.Baseline, r.Unit, r.Value/r.Baseline)
	}
	if r.Goal != "" {
		s += "  goal " + r.Goal
	}
	if r.Note != "" {
		s += "  (" + r.Note + ")"
	}
	return s
}

// Percentile returns the p-quantile (0..1) of xs by nearest rank, or 0 for none.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[int(float64(len(s)-1)*p)]
}

// Ms is d in milliseconds.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
