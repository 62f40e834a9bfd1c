package broker

import (
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"
)

const metricPrefix = "tether_edge_mqtt_"

// Reasons for tether_edge_mqtt_rejected_total. Each names the bound or rule that refused the input.
const (
	reasonOversize          = "oversize"           // packet larger than MaxPacketSize, refused before its body was read
	reasonPanic             = "panic"              // serving the client panicked; the panic was contained to its connection
	reasonClientLimit       = "client_limit"       // CONNECT beyond MaxClients, answered with a CONNACK refusal
	reasonConnectionLimit   = "connection_limit"   // TCP connection beyond MaxClients+MaxPendingConnections, closed unanswered
	reasonSubscriptionLimit = "subscription_limit" // topic filter beyond MaxSubscriptionsPerClient, refused in SUBACK
	reasonReceiveMaximum    = "receive_maximum"    // client exceeded the Receive Maximum (MaxInflight), disconnected
	reasonConnectTimeout    = "connect_timeout"    // no CONNECT within ConnectTimeout
	reasonClientID          = "client_id"          // CONNECT with a client id the broker reserves
	reasonProtocol          = "protocol"           // malformed packet or protocol violation, connection closed
	reasonSessionLimit      = "session_limit"      // CONNECT that would keep one session more than MaxSessions, refused in CONNACK
	reasonRetainedLimit     = "retained_limit"     // retained PUBLISH on a new topic beyond MaxRetained, delivered but not retained
	reasonTopicLevels       = "topic_levels"       // topic name or filter of more than MaxTopicLevels levels, refused
)

var rejectReasons = []string{
	reasonOversize, reasonPanic, reasonClientLimit, reasonConnectionLimit, reasonSubscriptionLimit,
	reasonReceiveMaximum, reasonConnectTimeout, reasonClientID, reasonProtocol, reasonSessionLimit, reasonRetainedLimit,
	reasonTopicLevels,
}

// metrics are the counters this package keeps itself. Everything mochi already counts (clients,
// messages, bytes) is read from its system.Info at scrape time by infoCollector instead of being
// counted twice.
type metrics struct {
	rejected    *prometheus.CounterVec
	panics      prometheus.Counter
	notTaken    prometheus.Counter
	connections prometheus.Gauge // open TCP connections, including those still before CONNECT
}

func newMetrics() *metrics {
	m := &metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "rejected_total",
			Help: "Inputs refused by the MQTT broker, by reason (oversize, panic, client_limit, connection_limit, subscription_limit, receive_maximum, connect_timeout, client_id, protocol, session_limit, retained_limit).",
		}, []string{"reason"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPrefix + "panics_total",
			Help: "Panics while serving one MQTT client that were contained to that client's connection.",
		}),
		notTaken: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPrefix + "publishes_not_taken_total",
			Help: "PUBLISH packets left unacknowledged because their consumer could not take them (stopping); the client resends them.",
		}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "connections_open",
			Help: "Open TCP connections to the MQTT broker, including those that have not sent CONNECT yet.",
		}),
	}
	for _, r := range rejectReasons {
		m.rejected.WithLabelValues(r) // export every reason at zero so rate() works from the start
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer, srv *mqtt.Server, off *offlineHeld) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.rejected, m.panics, m.notTaken, m.connections, newInfoCollector(srv, off)} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// infoCollector exports mochi's own atomic counters (system.Info) at scrape time.
type infoCollector struct {
	srv *mqtt.Server
	off *offlineHeld

	clients, sessions, subscriptions, inflight, retained *prometheus.Desc
	msgsIn, msgsOut, dropped, pktsIn, pktsOut, bytesIn   *prometheus.Desc
	bytesOut, offlineBytes                               *prometheus.Desc
}

func newInfoCollector(srv *mqtt.Server, off *offlineHeld) *infoCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(metricPrefix+name, help, labels, nil)
	}
	return &infoCollector{
		srv:           srv,
		off:           off,
		clients:       d("clients_connected", "MQTT clients currently connected."),
		sessions:      d("sessions", "MQTT sessions held, connected or awaiting expiry."),
		subscriptions: d("subscriptions", "Client topic-filter subscriptions held."),
		inflight:      d("inflight_messages", "QoS 1/2 messages awaiting acknowledgement, all clients."),
		retained:      d("retained_messages", "Retained messages held."),
		msgsIn:        d("messages_received_total", "PUBLISH packets received (from clients and from the edge agent itself)."),
		msgsOut:       d("messages_sent_total", "PUBLISH packets written to clients."),
		dropped:       d("messages_dropped_total", "Messages to a client that were dropped, by reason: queue_full (MaxPendingWrites), inflight_full (MaxInflight), offline_bytes (MaxOfflineSessionBytes, MaxOfflineBytes).", "reason"),
		pktsIn:        d("packets_received_total", "MQTT packets received."),
		pktsOut:       d("packets_sent_total", "MQTT packets written."),
		bytesIn:       d("received_bytes_total", "Bytes of MQTT packets received."),
		bytesOut:      d("sent_bytes_total", "Bytes of MQTT packets written."),
		offlineBytes:  d("offline_held_bytes", "Payload bytes of QoS 1/2 messages held for disconnected sessions."),
	}
}

func (c *infoCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.clients, c.sessions, c.subscriptions, c.inflight, c.retained,
		c.msgsIn, c.msgsOut, c.dropped, c.pktsIn, c.pktsOut, c.bytesIn, c.bytesOut, c.offlineBytes} {
		ch <- d
	}
}

func (c *infoCollector) Collect(ch chan<- prometheus.Metric) {
	in := c.srv.Info
	load := func(p *int64) float64 { return float64(atomic.LoadInt64(p)) }
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
	}
	gauge(c.clients, load(&in.ClientsConnected))
	gauge(c.sessions, float64(sessionCount(c.srv)))
	gauge(c.subscriptions, load(&in.Subscriptions))
	gauge(c.inflight, load(&in.Inflight))
	gauge(c.retained, load(&in.Retained))
	counter(c.msgsIn, load(&in.MessagesReceived))
	counter(c.msgsOut, load(&in.MessagesSent))
	counter(c.dropped, load(&in.MessagesDropped), "queue_full")
	counter(c.dropped, load(&in.InflightDropped), "inflight_full")
	counter(c.dropped, float64(c.off.dropped.Load()), "offline_bytes")
	gauge(c.offlineBytes, float64(c.off.bytes()))
	counter(c.pktsIn, load(&in.PacketsReceived))
	counter(c.pktsOut, load(&in.PacketsSent))
	counter(c.bytesIn, load(&in.BytesReceived))
	counter(c.bytesOut, load(&in.BytesSent))
}

// sessionCount is the number of client sessions mochi holds, not counting its inline client (the
// broker's own identity for Publish).
func sessionCount(srv *mqtt.Server) int {
	n := srv.Clients.Len()
	if _, ok := srv.Clients.Get(mqtt.InlineClientId); ok {
		n--
	}
	return n
}
