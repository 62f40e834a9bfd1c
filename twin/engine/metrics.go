package engine

import "github.com/prometheus/client_golang/prometheus"

type results struct{ *prometheus.CounterVec }

// pubKind is a kind of message the engine publishes to devices: an index into the per-kind
// counters, which are looked up once instead of by label on every message.
type pubKind int

const (
	pubResult pubKind = iota
	pubDocument
	pubDelta
	pubGetResult
	pubStateResult
	pubMembershipResult
	pubMembershipUpdated
	nPubKinds
)

var pubKindNames = [nPubKinds]string{"result", "document", "delta", "get_result", "state_result", "membership_result", "membership_updated"}

func (r results) inc(result string) { r.WithLabelValues(result).Inc() }

type metrics struct {
	updates        results // by result: ok, unchanged, or the error code
	gets           results
	states         results
	membershipGets results
	updateSeconds  prometheus.Histogram
	desired        *prometheus.CounterVec
	rejected       *prometheus.CounterVec
	published      [nPubKinds]prometheus.Counter
	unsubscribed   [nPubKinds]prometheus.Counter
	publishErrors  prometheus.Counter
	coalesced      prometheus.Counter
	statusWrites   prometheus.Counter
	uploads        *prometheus.CounterVec
	uploadBytes    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, e *Engine) *metrics {
	byResult := func(name, help string) results {
		return results{prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"result"})}
	}
	m := &metrics{
		updates: byResult("tether_edge_twin_updates_total",
			"twin/update messages from devices, by result: ok (stored), unchanged (equal to the stored twin), or the error code answered."),
		gets:           byResult("tether_edge_twin_gets_total", "twin/get messages from devices, by result."),
		states:         byResult("tether_edge_twin_state_updates_total", "state/update messages from devices, by result."),
		membershipGets: byResult("tether_edge_twin_membership_gets_total", "membership/get messages, by result."),
		updateSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tether_edge_twin_update_seconds", Help: "From a twin/update's arrival to its stored success result.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		desired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_edge_twin_desired_total", Help: "Desired states from the cloud applied to twins, by result.",
		}, []string{"result"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_edge_twin_rejected_total", Help: "Device messages refused, by reason.",
		}, []string{"reason"}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_edge_twin_publish_errors_total", Help: "Messages to devices the broker refused.",
		}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_edge_twin_outbox_coalesced_total", Help: "Twin and state reports that replaced an unsent report of the same device in the outbox.",
		}),
		statusWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_edge_twin_status_writes_total", Help: "Devices whose twins and state the edge wrote into its copy of the Device.",
		}),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_edge_twin_uploads_total", Help: "Upload messages from devices, by result (queued, or why a try failed).",
		}, []string{"result"}),
		uploadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_edge_twin_upload_bytes_total", Help: "Payload bytes of uploads queued.",
		}),
	}
	published := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_edge_twin_published_total", Help: "Messages published to devices, by kind.",
	}, []string{"kind"})
	unsubscribed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_edge_twin_unsubscribed_total",
		Help: "Messages to devices not built nor published because no client subscribed to their topic, by kind.",
	}, []string{"kind"})
	for k, name := range pubKindNames {
		m.published[k] = published.WithLabelValues(name)
		m.unsubscribed[k] = unsubscribed.WithLabelValues(name)
	}
	devices := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_edge_twin_devices", Help: "Devices whose twins the edge serves.",
	}, func() float64 { return float64(e.deviceCount()) })
	if reg != nil {
		reg.MustRegister(m.updates, m.gets, m.states, m.membershipGets, m.updateSeconds, m.desired, m.rejected,
			published, unsubscribed, m.publishErrors, m.coalesced, m.statusWrites, m.uploads, m.uploadBytes, devices)
	}
	return m
}
