package edgehub

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhub/tether/protocol"
)

type metrics struct {
	connects     prometheus.Counter
	disconnects  prometheus.Counter
	bytesIn      prometheus.Counter
	bytesOut     prometheus.Counter
	received     *prometheus.CounterVec
	receivedData map[protocol.Type]prometheus.Counter // received's children for the data types, resolved once
	rejected     prometheus.Counter
	reportsSent  prometheus.Counter
	reportsAcked prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, c *Client) *metrics {
	m := &metrics{
		connects:     prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_edge_hub_connects_total", Help: "Sessions opened with the cloud."}),
		disconnects:  prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_edge_hub_disconnects_total", Help: "Sessions with the cloud that ended or failed to open."}),
		bytesIn:      prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_edge_hub_received_bytes_total", Help: "Bytes of websocket messages from the cloud."}),
		bytesOut:     prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_edge_hub_sent_bytes_total", Help: "Bytes of websocket messages to the cloud."}),
		received:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_edge_hub_received_messages_total", Help: "Data messages from the cloud, by type."}, []string{"type"}),
		rejected:     prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_edge_hub_rejected_frames_total", Help: "Frames from the cloud that could not be decoded."}),
		reportsSent:  prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_edge_hub_reports_sent_total", Help: "Reports sent to the cloud (resends included)."}),
		reportsAcked: prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_edge_hub_report_acks_total", Help: "Report acknowledgements from the cloud."}),
	}
	// The data types' series exist from the start (at 0), and counting one costs no label lookup.
	m.receivedData = map[protocol.Type]prometheus.Counter{}
	for _, t := range []protocol.Type{protocol.TypeUpsert, protocol.TypeDelete, protocol.TypeProgress, protocol.TypeResetBegin, protocol.TypeResetEnd} {
		m.receivedData[t] = m.received.WithLabelValues(t.String())
	}
	state := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_edge_hub_connected", Help: "1 while a session with the cloud is up.",
	}, func() float64 {
		if s, _, _ := c.State(); s == Connected {
			return 1
		}
		return 0
	})
	if reg != nil {
		reg.MustRegister(m.connects, m.disconnects, m.bytesIn, m.bytesOut, m.received, m.rejected, m.reportsSent, m.reportsAcked, state)
	}
	return m
}

// countReceived counts one data message of type t.
func (m *metrics) countReceived(t protocol.Type) {
	if c, ok := m.receivedData[t]; ok {
		c.Inc()
		return
	}
	m.received.WithLabelValues(t.String()).Inc()
}
