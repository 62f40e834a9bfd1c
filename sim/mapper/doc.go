// Package mapper is a simulated KubeEdge-style device mapper: an MQTT client (paho, MQTT 3.1.1)
// that speaks the device topics of SPEC §6 to tether-edge's broker the way a real mapper does,
// for the demo, tether-sim, the benchmarks and the end-to-end tests.
//
//	m, err := mapper.Connect(ctx, mapper.DefaultConfig("tcp://127.0.0.1:1883", "default/thermo-1"))
//	res, err := m.Report(ctx, "default/thermo-1", map[string]string{"temperature": "21"})
//	// res is the success twin/update/result: the edge stored the value. An error result is a
//	// *mapper.ResultError with the edge's code (400, 404, 409, 500) and reason.
//
// With Config.FollowDesired the mapper acts on every twin/update/delta as a real mapper does
// after writing the device: it reports the expected values as its new actual values. OnDelta
// observes deltas (for latency measurements); OnMembership observes membership/updated.
//
// Requests (Report, Delete, Get, SetState, Membership) publish and wait for the answer that
// carries their event_id, so many may be in flight at once. Upload returns when the broker's
// PUBACK arrives, which tether-edge sends only once the upload is in its durable outbox.
//
// Concurrency: methods are safe for concurrent use. Answers are routed on paho's goroutine;
// deltas are handled on one goroutine of the mapper's, newest per device first (a mapper that
// falls behind acts on the latest desired values, not on every intermediate one). OnDelta and
// OnMembership must not block for long: OnMembership runs on paho's goroutine and holds up
// every answer behind it.
//
// A mapper does not reconnect: a lost connection fails the requests waiting for an answer with
// ErrConnectionLost (at once, not at their timeout), and the caller decides whether to Connect
// again, as tests of outages want.
package mapper
