package cli

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness check. Informational checks are shown by /readyz?verbose but never
// make the program unready (the edge's cloud link: the edge must keep serving offline).
type Check struct {
	Name          string
	Informational bool
	Run           func(context.Context) error
}

// OpsHandlers mounts /healthz, /readyz and /metrics on mux.
func OpsHandlers(mux *http.ServeMux, gatherer prometheus.Gatherer, checks ...Check) {
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		ready := true
		for _, c := range checks {
			err := c.Run(r.Context())
			switch {
			case err == nil:
				fmt.Fprintf(&b, "[+]%s ok\n", c.Name)
			case c.Informational:
				fmt.Fprintf(&b, "[~]%s %v (informational)\n", c.Name, err)
			default:
				ready = false
				fmt.Fprintf(&b, "[-]%s failed: %v\n", c.Name, err)
			}
		}
		w.Header().Set("Content-Type", "text/plain")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		if _, verbose := r.URL.Query()["verbose"]; verbose || !ready {
			fmt.Fprint(w, b.String())
		}
		if ready {
			fmt.Fprintln(w, "ok")
		} else {
			fmt.Fprintln(w, "not ready")
		}
	})
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
}
