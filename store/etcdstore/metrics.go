package etcdstore

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	all         []prometheus.Collector
	seconds     *prometheus.HistogramVec
	errors      *prometheus.CounterVec
	compactions prometheus.Counter
	watchers    prometheus.Gauge
	restarts    *prometheus.CounterVec
}

func newMetrics(s *Store) *metrics {
	m := &metrics{
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tether_cloud_store_etcd_request_seconds",
			Help:    "Time of one request to etcd, by operation (get, list, create, update, delete, rev, compact, compacted).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_cloud_store_etcd_errors_total",
			Help: "Requests to etcd that failed (timeouts, unreachable or leaderless etcd), by operation. Refused writes (exists, conflict, not found) are answers, not errors.",
		}, []string{"op"}),
		compactions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_cloud_store_etcd_compactions_total",
			Help: "Compactions of etcd this replica made.",
		}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_cloud_store_etcd_watchers",
			Help: "Open watches of the store.",
		}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_cloud_store_etcd_watch_restarts_total",
			Help: "etcd watches opened again without ending the store watch: interrupted (no leader, member unreachable), compacted (a compaction that removed nothing the watcher needed) or paced (history waited for a slow consumer).",
		}, []string{"reason"}),
	}
	rev := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_cloud_store_revision",
		Help: "Newest revision of the cloud store this replica has seen.",
	}, func() float64 { return float64(s.seen.Load()) })
	compacted := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_cloud_store_compacted_revision",
		Help: "Revisions at or below this one have left the change history.",
	}, func() float64 { return float64(s.historyAt.Load()) })
	m.all = []prometheus.Collector{m.seconds, m.errors, m.compactions, m.watchers, m.restarts, rev, compacted}
	return m
}

// register is called once the store is open, so that a failed Open can be tried again with the
// same registry.
func (m *metrics) register(reg prometheus.Registerer) {
	if reg != nil {
		reg.MustRegister(m.all...)
	}
}

func (m *metrics) observe(op string, d time.Duration, err error) {
	m.seconds.WithLabelValues(op).Observe(d.Seconds())
	if err != nil && !errors.Is(err, context.Canceled) && !isCompacted(err) {
		m.errors.WithLabelValues(op).Inc()
	}
}
