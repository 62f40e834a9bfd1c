package cloudhub

import (
	"log"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

type metrics struct {
	connects        prometheus.Counter
	rejected        *prometheus.CounterVec
	resets          *prometheus.CounterVec
	slowCutoffs     prometheus.Counter
	bytesIn         prometheus.Counter
	bytesOut        prometheus.Counter
	frames          prometheus.Counter
	messages        *prometheus.CounterVec
	reports         *prometheus.CounterVec
	catchupMessages prometheus.Counter
	catchupBytes    prometheus.Counter
	forwarded       *prometheus.CounterVec
	statusFailed    prometheus.Counter

	// messages' and reports' children, resolved once: they are counted per message.
	sentUpsert, sentDelete, sentProgress, sentResetBegin, sentResetEnd prometheus.Counter
	reportsApplied, reportsBad, reportsFailed                          prometheus.Counter
	panics                                                             prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, h *Hub) *metrics {
	m := &metrics{
		connects:        prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_cloud_hub_connections_total", Help: "Websocket connections accepted (before the Hello is checked)."}),
		rejected:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_cloud_hub_rejected_total", Help: "Connections or messages refused, by reason."}, []string{"reason"}),
		resets:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_cloud_hub_resets_total", Help: "Nodes sent their whole view instead of changes, by reason."}, []string{"reason"}),
		slowCutoffs:     prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_cloud_hub_slow_disconnects_total", Help: "Nodes disconnected for not acknowledging within the slow timeout."}),
		bytesIn:         prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_cloud_hub_received_bytes_total", Help: "Bytes of websocket messages received from edges."}),
		bytesOut:        prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_cloud_hub_sent_bytes_total", Help: "Bytes of websocket messages sent to edges."}),
		frames:          prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_cloud_hub_sent_frames_total", Help: "Websocket messages sent to edges."}),
		messages:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_cloud_hub_sent_messages_total", Help: "Protocol data messages sent, by type."}, []string{"type"}),
		reports:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_cloud_hub_reports_total", Help: "Reports from edges, by outcome."}, []string{"outcome"}),
		catchupMessages: prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_cloud_hub_catchup_messages_total", Help: "Upserts and deletes sent as a node's catch-up after it connects."}),
		catchupBytes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_cloud_hub_catchup_bytes_total", Help: "Encoded bytes of catch-up upserts and deletes."}),
		statusFailed:    prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_cloud_hub_status_write_failures_total", Help: "Node Ready-condition writes (heartbeats, and NotReady past the grace period) the store did not take in time; each is tried again seconds later."}),
		panics:          prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_cloud_hub_panics_total", Help: "Panics contained while applying an edge's report or serving its forwarded request."}),
		forwarded:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_cloud_hub_forwarded_requests_total", Help: "API requests relayed by edges, by HTTP status."}, []string{"code"}),
	}
	m.sentUpsert, m.sentDelete = m.messages.WithLabelValues("upsert"), m.messages.WithLabelValues("delete")
	m.sentProgress = m.messages.WithLabelValues("progress")
	m.sentResetBegin, m.sentResetEnd = m.messages.WithLabelValues("reset-begin"), m.messages.WithLabelValues("reset-end")
	m.reportsApplied, m.reportsBad = m.reports.WithLabelValues("applied"), m.reports.WithLabelValues("bad")
	m.reportsFailed = m.reports.WithLabelValues("failed")
	if reg != nil {
		reg.MustRegister(m.connects, m.rejected, m.resets, m.slowCutoffs, m.bytesIn, m.bytesOut, m.frames, m.messages, m.reports, m.catchupMessages, m.catchupBytes, m.forwarded, m.statusFailed, m.panics, &sessionCollector{h: h})
	}
	return m
}

// sessionCollector reports per-session figures at scrape time. Per-node series are emitted only
// for nodes with something queued or in flight, so an idle fleet of thousands adds nothing.
type sessionCollector struct{ h *Hub }

var (
	descConnected = prometheus.NewDesc("tether_cloud_hub_connected_nodes", "Nodes with a session on this hub.", nil, nil)
	descPending   = prometheus.NewDesc("tether_cloud_hub_pending_keys", "Keys waiting to be sent, over all nodes.", nil, nil)
	descInflight  = prometheus.NewDesc("tether_cloud_hub_inflight_messages", "Data messages sent and not yet acknowledged, over all nodes.", nil, nil)
	descReportsQ  = prometheus.NewDesc("tether_cloud_hub_queued_reports", "Reports from edges waiting for the store, over all nodes.", nil, nil)
	descNodeQueue = prometheus.NewDesc("tether_cloud_hub_node_queue_depth", "Keys waiting to be sent to one node (only nodes with a non-empty queue).", []string{"node"}, nil)
	descNodeIn    = prometheus.NewDesc("tether_cloud_hub_node_inflight", "Unacknowledged data messages of one node (only nodes with some in flight).", []string{"node"}, nil)
	descProcessed = prometheus.NewDesc("tether_cloud_hub_processed_revision", "Store revision up to which the hub has routed every change.", nil, nil)
	descRouted    = prometheus.NewDesc("tether_cloud_hub_routed_revision", "Revision of the last change any node could see. A node whose sync cursor (tether_edge_sync_cursor) is at or past it is up to date.", nil, nil)
)

func (c *sessionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnected, descPending, descInflight, descReportsQ, descNodeQueue, descNodeIn, descProcessed, descRouted} {
		ch <- d
	}
}

func (c *sessionCollector) Collect(ch chan<- prometheus.Metric) {
	sessions := c.h.snapshotSessions()
	var pending, inflight, reports float64
	for _, s := range sessions {
		s.mu.Lock()
		q := len(s.pending) + int(s.batchLeft.Load())
		in := float64(s.sent.Load() - s.acked)
		r := len(s.reports)
		s.mu.Unlock()
		pending += float64(q)
		inflight += in
		reports += float64(r)
		if q > 0 {
			ch <- prometheus.MustNewConstMetric(descNodeQueue, prometheus.GaugeValue, float64(q), s.node)
		}
		if in > 0 {
			ch <- prometheus.MustNewConstMetric(descNodeIn, prometheus.GaugeValue, in, s.node)
		}
	}
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, float64(len(sessions)))
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, pending)
	ch <- prometheus.MustNewConstMetric(descInflight, prometheus.GaugeValue, inflight)
	ch <- prometheus.MustNewConstMetric(descReportsQ, prometheus.GaugeValue, reports)
	ch <- prometheus.MustNewConstMetric(descProcessed, prometheus.GaugeValue, float64(c.h.processed.Load()))
	ch <- prometheus.MustNewConstMetric(descRouted, prometheus.GaugeValue, float64(c.h.routed.Load()))
}

// newErrorLog routes net/http's own messages (TLS handshake failures: a certificate from
// another CA, plain HTTP on the TLS port) to the structured log.
func newErrorLog(l zerolog.Logger) *log.Logger {
	return log.New(errorWriter{l}, "", 0)
}

type errorWriter struct{ l zerolog.Logger }

func (w errorWriter) Write(p []byte) (int, error) {
	w.l.Warn().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
