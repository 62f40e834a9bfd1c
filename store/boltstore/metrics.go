package boltstore

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	commitSeconds prometheus.Histogram
	batchSize     prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, s *Store) *metrics {
	m := &metrics{
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tether_cloud_store_commit_seconds",
			Help:    "Time to commit one batch of writes to the embedded store, fsync included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tether_cloud_store_commit_batch_size",
			Help:    "Writes carried by one commit of the embedded store.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
	}
	rev := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_cloud_store_revision",
		Help: "Current revision of the cloud store.",
	}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(s.rev)
	})
	compacted := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_cloud_store_compacted_revision",
		Help: "Revisions at or below this one have left the change history.",
	}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(s.compacted)
	})
	if reg != nil {
		reg.MustRegister(m.commitSeconds, m.batchSize, rev, compacted)
	}
	return m
}
