package edgestore

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	commitSeconds prometheus.Histogram
	diskSeconds   prometheus.Histogram
	batchSize     prometheus.Histogram
	stale         prometheus.Counter
	rejected      *prometheus.CounterVec
	outboxFull    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Store) *metrics {
	m := &metrics{
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tether_edge_store_commit_seconds", Help: "Time to commit one batch to the edge store, fsync included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		diskSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tether_edge_store_commit_disk_seconds", Help: "Part of a commit of the edge store spent writing its pages and syncing them to disk (two fdatasyncs).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tether_edge_store_commit_batch_size", Help: "Operations carried by one commit of the edge store.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_edge_store_stale_total", Help: "Messages from the cloud ignored because the stored version was newer.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_edge_store_rejected_total", Help: "Messages from the cloud that could not be applied, and damaged outbox entries skipped, by reason.",
		}, []string{"reason"}),
		outboxFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_edge_outbox_full_total", Help: "Reports refused because the outbox was full.",
		}),
	}
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_edge_outbox_depth", Help: "Reports waiting in the outbox.",
	}, func() float64 { n, _ := s.OutboxDepth(); return float64(n) })
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_edge_outbox_oldest_age_seconds", Help: "Age of the oldest report waiting in the outbox (0 if empty).",
	}, func() float64 {
		_, t := s.OutboxDepth()
		if t.IsZero() {
			return 0
		}
		return time.Since(t).Seconds()
	})
	cursor := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_edge_sync_cursor", Help: "Cloud revision through which the stored view is complete.",
	}, func() float64 { _, c := s.Cursor(); return float64(c) })
	if reg != nil {
		reg.MustRegister(m.commitSeconds, m.diskSeconds, m.batchSize, m.stale, m.rejected, m.outboxFull, depth, age, cursor)
	}
	return m
}
