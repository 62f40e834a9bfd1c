package sim

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"time"
)

// Report is what a simulation measured.
type Report struct {
	Scenario       string               `json:"scenario"`
	Started        time.Time            `json:"started"`
	Seconds        float64              `json:"seconds"`
	CloudVersion   string               `json:"cloudVersion"`
	Nodes          int                  `json:"nodes"`
	DevicesPerNode int                  `json:"devicesPerNode"`
	Converged      bool                 `json:"converged"`
	Errors         int                  `json:"errors"`
	Figures        []Figure             `json:"figures"`
	Latency        map[string][]float64 `json:"latencyMs"`
	Series         []Sample             `json:"series"`

	mu sync.Mutex
}

// Names of the figures other programs look for in a report.
const (
	FigureFanoutP50 = "fan-out to all nodes p50"
	FigureFanoutP99 = "fan-out to all nodes p99"
)

// Figure is one measured number.
type Figure struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Goal  string  `json:"goal,omitempty"`
}

// Sample is the state once a second.
type Sample struct {
	T            float64 `json:"t"`
	Connected    int     `json:"connected"`
	HubConnected float64 `json:"hubConnected"`
	CloudRSS     float64 `json:"cloudRSS"`
	CloudHeap    float64 `json:"cloudHeap"`
	CloudCPU     float64 `json:"cloudCPU"`
	Goroutines   float64 `json:"goroutines"`
	// CloudScraped says the cloud's metrics were read for this sample (the cloud fields are 0
	// otherwise, not measured); CloudCPUKnown that CloudCPU was, which takes two reads in a row.
	CloudScraped  bool `json:"cloudScraped"`
	CloudCPUKnown bool `json:"cloudCPUKnown"`
}

func (r *Report) figure(name string, v float64, unit, goal string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Figures = append(r.Figures, Figure{Name: name, Value: v, Unit: unit, Goal: goal})
}

func (r *Report) add(s Sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Series = append(r.Series, s)
}

// WriteTable prints the figures as a readable table.
func (r *Report) WriteTable(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(w, "\nscenario %s: %d nodes, %d devices per node, %.1f s, converged %v, %d errors\n",
		r.Scenario, r.Nodes, r.DevicesPerNode, r.Seconds, r.Converged, r.Errors)
	width := 10
	for _, f := range r.Figures {
		width = max(width, len(f.Name))
	}
	for _, f := range r.Figures {
		line := fmt.Sprintf("  %-*s %12.2f %s", width, f.Name, f.Value, f.Unit)
		if f.Goal != "" {
			line += "   (goal " + f.Goal + ")"
		}
		fmt.Fprintln(w, line)
	}
}

// WriteJSON writes the report as JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteHTML writes a page with the figures and plots: latency histograms, connected nodes and
// the cloud's memory over time. Plain SVG, no scripts.
func (r *Report) WriteHTML(w io.Writer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	type plot struct {
		Title string
		SVG   template.HTML
	}
	var plots []plot
	names := make([]string, 0, len(r.Latency))
	for n := range r.Latency {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		plots = append(plots, plot{"Latency: " + n, template.HTML(histogram(r.Latency[n], "ms"))})
	}
	// Samples whose cloud figures were not measured are left out of their plots, not drawn as 0.
	var t, conn, rssT, rss, cpuT, cpu []float64
	for _, s := range r.Series {
		t = append(t, s.T)
		conn = append(conn, float64(s.Connected))
		if s.CloudScraped {
			rssT, rss = append(rssT, s.T), append(rss, s.CloudRSS/1e6)
		}
		if s.CloudCPUKnown {
			cpuT, cpu = append(cpuT, s.T), append(cpu, s.CloudCPU)
		}
	}
	plots = append(plots,
		plot{"Connected nodes over time", template.HTML(line(t, conn, "s", "nodes"))},
		plot{"Cloud resident memory over time", template.HTML(line(rssT, rss, "s", "MB"))},
		plot{"Cloud CPU over time (share of all cores)", template.HTML(line(cpuT, cpu, "s", "%"))})
	return pageTmpl.Execute(w, map[string]any{"R": r, "Plots": plots})
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>tether-sim {{.R.Scenario}}</title>
<style>body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}svg{background:#fafafa;border:1px solid #eee}</style></head>
<body><h1>tether-sim: {{.R.Scenario}}</h1>
<p>{{.R.Nodes}} nodes, {{.R.DevicesPerNode}} devices per node, started {{.R.Started.Format "2006-01-02 15:04:05"}} UTC,
{{printf "%.1f" .R.Seconds}} s; converged: <b>{{.R.Converged}}</b>; errors: <b>{{.R.Errors}}</b>; cloud {{.R.CloudVersion}}.</p>
<table><tr><th>figure</th><th>value</th><th>unit</th><th>goal</th></tr>
{{range .R.Figures}}<tr><td>{{.Name}}</td><td class="n">{{printf "%.2f" .Value}}</td><td>{{.Unit}}</td><td>{{.Goal}}</td></tr>
{{end}}</table>
{{range .Plots}}<h2>{{.Title}}</h2>{{.SVG}}{{end}}
</body></html>
`))

const plotW, plotH, pad = 820.0, 260.0, 48.0

// line draws y over x.
func line(x, y []float64, xUnit, yUnit string) string {
	if len(x) == 0 {
		return "<p>no samples</p>"
	}
	maxX, maxY := x[len(x)-1], 0.0
	for _, v := range y {
		maxY = max(maxY, v)
	}
	maxX, maxY = max(maxX, 1), niceCeil(maxY)
	var b strings.Builder
	frame(&b, maxX, maxY, xUnit, yUnit)
	b.WriteString(`<polyline fill="none" stroke="#2a6fdb" stroke-width="2" points="`)
	for i := range x {
		fmt.Fprintf(&b, "%.1f,%.1f ", pad+x[i]/maxX*(plotW-2*pad), plotH-pad-y[i]/maxY*(plotH-2*pad))
	}
	b.WriteString(`"/></svg>`)
	return b.String()
}

// histogram draws the distribution of xs in 40 bins, with p50 and p99 marked.
func histogram(xs []float64, unit string) string {
	if len(xs) == 0 {
		return "<p>no samples</p>"
	}
	hi := percentile(xs, 1)
	hi = max(niceCeil(hi), 1e-9)
	const bins = 40
	counts := make([]float64, bins)
	for _, v := range xs {
		i := min(int(v/hi*bins), bins-1)
		counts[max(i, 0)]++
	}
	top := 0.0
	for _, c := range counts {
		top = max(top, c)
	}
	top = niceCeil(top)
	var b strings.Builder
	frame(&b, hi, top, unit, "count")
	bw := (plotW - 2*pad) / bins
	for i, c := range counts {
		h := c / top * (plotH - 2*pad)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#2a6fdb"/>`, pad+float64(i)*bw+1, plotH-pad-h, bw-2, h)
	}
	for _, p := range []struct {
		q     float64
		label string
	}{{0.5, "p50"}, {0.99, "p99"}} {
		v := percentile(xs, p.q)
		x := pad + v/hi*(plotW-2*pad)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#d33" stroke-dasharray="4 3"/>`, x, x, pad, plotH-pad)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" fill="#d33">%s %.1f %s</text>`, x+3, pad+12, p.label, v, unit)
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func frame(b *strings.Builder, maxX, maxY float64, xUnit, yUnit string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif">`, plotW, plotH)
	fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#888"/>`, pad, plotH-pad, plotW-pad, plotH-pad)
	fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#888"/>`, pad, pad, pad, plotH-pad)
	for i := 0; i <= 4; i++ {
		y := plotH - pad - float64(i)/4*(plotH-2*pad)
		fmt.Fprintf(b, `<text x="%.0f" y="%.1f" font-size="10" text-anchor="end">%s</text>`, pad-4, y+3, short(maxY*float64(i)/4))
		x := pad + float64(i)/4*(plotW-2*pad)
		fmt.Fprintf(b, `<text x="%.1f" y="%.0f" font-size="10" text-anchor="middle">%s</text>`, x, plotH-pad+14, short(maxX*float64(i)/4))
	}
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" font-size="11" text-anchor="end">%s</text>`, plotW-pad, plotH-8, xUnit)
	fmt.Fprintf(b, `<text x="4" y="%.0f" font-size="11">%s</text>`, pad-10, yUnit)
}

func short(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
