package broker

import (
	"errors"
	"slices"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// hook is the broker's only mochi hook. mochi calls each method on the goroutine of the client
// concerned (its connection goroutine) unless noted.
type hook struct {
	mqtt.HookBase
	b *Broker
}

func (h *hook) ID() string { return "tether-broker" }

func (h *hook) Provides(e byte) bool {
	switch e {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnConnect, mqtt.OnSubscribe,
		mqtt.OnPacketEncode, mqtt.OnPacketSent, mqtt.OnPublish, mqtt.OnWillSent, mqtt.OnClientExpired,
		mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnSessionEstablish, mqtt.OnSessionEstablished,
		mqtt.OnDisconnect, mqtt.OnRetainedExpired, mqtt.OnQosPublish, mqtt.OnWill:
		return true
	}
	return false
}

// OnConnectAuthenticate admits every client: the broker serves local mappers on loopback
// (SPEC §2), as a local mosquitto would. mochi refuses every client unless a hook says yes.
func (h *hook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// OnACLCheck allows every topic, for the same reason.
func (h *hook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// OnConnect runs once a CONNECT is parsed and within limits. It refuses mochi's reserved inline
// client id, which a client could otherwise use to take over the broker's own identity, and
// records the client on its connection for the panic clean-up and the shutdown.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if cl.ID == mqtt.InlineClientId {
		_ = h.b.srv.SendConnack(cl, packets.ErrClientIdentifierNotValid, false, nil)
		return packets.ErrClientIdentifierNotValid
	}
	if pk.Connect.WillFlag && tooDeep(pk.Connect.WillTopic) {
		code := packets.ErrTopicNameInvalid
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.ErrServerUnavailable // 3.1.1 has no code for it
		}
		h.b.m.rejected.WithLabelValues(reasonTopicLevels).Inc() // counted before the client can read the answer
		_ = h.b.srv.SendConnack(cl, code, false, nil)
		return code
	}
	if _, resumes := h.b.srv.Clients.Get(cl.ID); !resumes && h.b.srv.Clients.Len() >= h.b.cfg.MaxSessions+1 { // +1: mochi's inline client
		code := packets.ErrServerBusy
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.ErrServerUnavailable
		}
		h.b.m.rejected.WithLabelValues(reasonSessionLimit).Inc() // counted before the client can read the answer
		_ = h.b.srv.SendConnack(cl, code, false, nil)
		return code
	}
	if c := connOf(cl); c != nil {
		c.client.Store(cl)
	}
	return nil
}

// OnSubscribe enforces MaxSubscriptionsPerClient. mochi has no such limit and no way for a hook
// to refuse one filter, so a filter past the limit is replaced by an empty one: mochi's own
// validation then refuses it in SUBACK (0x8F, or 0x80 for 3.1.1) without subscribing, and
// OnPacketEncode turns 0x8F into the accurate 0x97 "quota exceeded" for MQTT 5.
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	h.b.subs.changed()
	c := connOf(cl)
	if c == nil {
		return pk
	}
	limit := h.b.cfg.MaxSubscriptionsPerClient
	have := cl.State.Subscriptions.Len()
	var refused []int
	var filters packets.Subscriptions
	deep := 0
	seen := make(map[string]struct{}, len(pk.Filters))
	for i, sub := range pk.Filters {
		if tooDeep(sub.Filter) {
			// Blanked, as past the quota: mochi refuses it in SUBACK as an invalid filter
			// (0x8F; 0x80 for 3.1.1), which it is here.
			if filters == nil {
				filters = slices.Clone(pk.Filters)
			}
			filters[i].Filter = ""
			deep++
			continue
		}
		if !mqtt.IsValidFilter(sub.Filter, false) || (sub.NoLocal && mqtt.IsSharedFilter(sub.Filter)) {
			continue // mochi refuses it itself (processSubscribe)
		}
		if _, ok := cl.State.Subscriptions.Get(sub.Filter); ok {
			continue // replacing an existing subscription adds nothing
		}
		if _, ok := seen[sub.Filter]; ok {
			continue
		}
		if have < limit {
			have++
			seen[sub.Filter] = struct{}{}
			continue
		}
		if filters == nil {
			filters = slices.Clone(pk.Filters)
		}
		filters[i].Filter = ""
		refused = append(refused, i)
	}
	if deep > 0 {
		h.b.m.rejected.WithLabelValues(reasonTopicLevels).Add(float64(deep))
		h.b.sampled.Warn().Str("reason", reasonTopicLevels).Str("remote", c.remote).Str("client", cl.ID).
			Int("refused", deep).Int("max_levels", maxTopicLevels).Msg("mqtt: topic filters refused")
	}
	if filters != nil {
		pk.Filters = filters
	}
	if len(refused) == 0 {
		return pk
	}
	c.noteRefused(pk.PacketID, refused)
	h.b.m.rejected.WithLabelValues(reasonSubscriptionLimit).Add(float64(len(refused)))
	h.b.sampled.Warn().Str("reason", reasonSubscriptionLimit).Str("remote", c.remote).Str("client", cl.ID).
		Int("refused", len(refused)).Int("limit", limit).Msg("mqtt: subscriptions refused")
	return pk
}

// OnSubscribed, OnUnsubscribed, OnSessionEstablish, OnSessionEstablished and OnDisconnect move
// Subscribed's epoch: mochi calls OnSubscribed after the filters are in its index and before it
// writes the SUBACK, and a session being established may inherit subscriptions (see subscribed).
func (h *hook) OnSubscribed(*mqtt.Client, packets.Packet, []byte) { h.b.subs.changed() }
func (h *hook) OnUnsubscribed(*mqtt.Client, packets.Packet)       { h.b.subs.changed() }
func (h *hook) OnSessionEstablish(*mqtt.Client, packets.Packet)   { h.b.subs.changed() }
func (h *hook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	h.b.subs.changed()
	if expire {
		h.b.offline.forget(cl.ID) // the session goes with the connection: it holds nothing
	}
}
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.b.subs.changed()
	h.b.offline.forget(cl.ID) // back online: mochi sends what its session held
}

// OnQosPublish keeps what disconnected sessions hold within MaxOfflineSessionBytes and
// MaxOfflineBytes (see offlineHeld). mochi calls it for every QoS 1/2 message it stores for a
// client, and for the acknowledgement it stores for each QoS 1/2 PUBLISH it receives; resends
// > 0 are retries to a connected client. Only a PUBLISH to a disconnected client is counted.
func (h *hook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, resends int) {
	// A session that ends with its connection (MQTT 3.1.1 clean session, MQTT 5 expiry 0) is
	// about to be deleted with what it holds, and no later hook would forget its count.
	if resends == 0 && pk.FixedHeader.Type == packets.Publish && cl.Closed() && !endsAtDisconnect(cl) {
		h.b.offline.store(h.b.srv, cl, pk, h.b.cfg.MaxOfflineSessionBytes, h.b.cfg.MaxOfflineBytes)
	}
}

// endsAtDisconnect says whether cl's session is deleted when its connection ends (mochi's own
// rule, in its client clean-up).
func endsAtDisconnect(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval == 0
	}
	return cl.Properties.Clean
}

// OnPacketEncode adjusts two packets mochi builds: the SUBACK of a SUBSCRIBE that OnSubscribe
// trimmed, and a successful CONNACK, which mochi sends without the Maximum Packet Size and Topic
// Alias Maximum properties, so MQTT 5 clients would otherwise not know either limit.
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Suback:
		c := connOf(cl)
		if c == nil {
			return pk
		}
		idx := c.takeRefused(pk.PacketID)
		if idx == nil || cl.Properties.ProtocolVersion != 5 {
			return pk
		}
		codes := slices.Clone(pk.ReasonCodes)
		for _, i := range idx {
			if i < len(codes) && codes[i] == packets.ErrTopicFilterInvalid.Code {
				codes[i] = packets.ErrQuotaExceeded.Code
			}
		}
		pk.ReasonCodes = codes
	case packets.Connack:
		if pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			pk.Properties.MaximumPacketSize = h.b.cfg.MaxPacketSize
			pk.Properties.TopicAliasMaximum = h.b.cfg.TopicAliasMaximum
		}
	}
	return pk
}

// OnPacketSent sees every packet after it was written. After a DISCONNECT from the broker the
// connection must end (mochi leaves it open, see newServer): an MQTT 3.1.1 client expects no
// DISCONNECT from a server, so its connection is closed at once; an MQTT 5 client gets
// disconnectLinger to read the reason and close first. May run on the client's writer goroutine
// or, at shutdown, on the stopping goroutine.
func (h *hook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Disconnect {
		return
	}
	c := connOf(cl)
	if c == nil {
		return
	}
	if pk.ReasonCode == packets.ErrReceiveMaximum.Code {
		h.b.reject(reasonReceiveMaximum, c, cl, packets.ErrReceiveMaximum)
	}
	if cl.Properties.ProtocolVersion == 5 {
		c.pin(time.Now().Add(disconnectLinger))
		return
	}
	_ = c.Conn.Close()
}

// OnPublish passes each client PUBLISH to the Handle consumers. mochi calls it before it writes
// the PUBACK/PUBREC and before it forwards the message to subscribers, on the publisher's
// connection goroutine. That placement is why consumers are matched here rather than through
// mochi's inline subscriptions (which run after the PUBACK): a device gets its PUBACK only once
// every consumer has returned, so a consumer that persists before returning gives the device
// at-least-once delivery, and a consumer that blocks holds back only that publisher. A panicking
// consumer is contained like any panic on the connection: the client is dropped without a PUBACK
// and will resend.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the broker's own Publish: consumers never see what the agent sends
	}
	if tooDeep(pk.TopicName) {
		h.b.m.rejected.WithLabelValues(reasonTopicLevels).Inc()
		if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
			return pk, packets.ErrTopicNameInvalid
		}
		if c := connOf(cl); c != nil {
			_ = c.Conn.Close() // 3.1.1 and QoS 0 have no answer for it
		}
		return pk, packets.ErrRejectPacket
	}
	matched, err := h.b.dispatch(client{cl}, pk.TopicName, pk.Payload)
	if err != nil {
		// Not taken (the consumer is stopping, or has no room): no PUBACK, so the client keeps
		// the message and sends it again after it reconnects, instead of believing it
		// delivered. For lack of room the client is told: MQTT 5 QoS 1 with PUBACK 0x97;
		// otherwise the connection is closed (else a 3.1.1 client would wait for ever).
		h.b.m.notTaken.Inc()
		if errors.Is(err, ErrRefused) {
			// Never to be taken: a resend would be refused again, so the client is answered
			// (MQTT 5 QoS 1: PUBACK 0x83; otherwise an ordinary PUBACK) and the message is
			// not routed.
			if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos == 1 {
				return pk, packets.ErrImplementationSpecificError
			}
			return pk, packets.CodeSuccessIgnore
		}
		if errors.Is(err, ErrNoRoom) {
			if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos == 1 {
				return pk, packets.ErrQuotaExceeded
			}
			if c := connOf(cl); c != nil {
				_ = c.Conn.Close()
			}
		}
		return pk, packets.ErrRejectPacket
	}
	// A retained message takes its slot only once it is taken: one a consumer refused is not
	// kept by mochi either.
	if pk.FixedHeader.Retain && !h.b.keepRetained(pk.TopicName, len(pk.Payload) > 0) {
		pk.FixedHeader.Retain = false // delivered, not kept
		h.b.m.rejected.WithLabelValues(reasonRetainedLimit).Inc()
	}
	if !matched {
		return pk, nil
	}
	if !pk.FixedHeader.Retain && !h.b.subscribed(pk.TopicName) {
		// A consumer's topic nobody subscribed to (a device's twin/update, as a rule): mochi
		// still acknowledges it but skips the walk of its index for subscribers. Only for
		// consumers' topics, which repeat; any other topic could fill Subscribed's memory.
		return pk, packets.CodeSuccessIgnore
	}
	return pk, nil
}

// OnRetainedExpired forgets a retained message mochi dropped at its expiry, as a clear would.
func (h *hook) OnRetainedExpired(topic string) { h.b.keepRetained(topic, false) }

// OnWill keeps a retained will within MaxRetained, as OnPublish does a retained PUBLISH: mochi
// retains a will before OnWillSent, and would otherwise keep any number of them.
func (h *hook) OnWill(_ *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if will.Retain && !h.b.keepRetained(will.TopicName, len(will.Payload) > 0) {
		will.Retain = false
		h.b.m.rejected.WithLabelValues(reasonRetainedLimit).Inc()
	}
	return will, nil
}

// maxTopicLevels bounds the levels of a topic name, a topic filter and a will topic. mochi's
// topic index walks a topic in time that grows with the square of its levels, holding one lock
// for the whole broker: a retained PUBLISH on a topic of 60,000 levels (60 KB) held every other
// client's SUBSCRIBE for 12.9 s in a review. KubeEdge's device topics have 7 to 9 levels.
const maxTopicLevels = 64

// tooDeep says whether topic has more than maxTopicLevels levels.
func tooDeep(topic string) bool {
	return len(topic) >= maxTopicLevels && strings.Count(topic, "/") >= maxTopicLevels
}

// OnWillSent passes a will message to the Handle consumers (a mapper's will is often its
// "offline" state report). mochi sends delayed wills from its event loop, where a panic would not
// be contained, so consumers are called under recover here.
func (h *hook) OnWillSent(_ *mqtt.Client, pk packets.Packet) {
	if pk.Connect.WillProperties.WillDelayInterval == 0 {
		// On the leaving client's goroutine, before anything it does once it is back.
		h.b.dispatchContained(pk.TopicName, pk.Payload)
		return
	}
	// A delayed will, on a goroutine of its own: mochi sends it from its event loop, which also
	// expires sessions, inflight and retained messages and sends the other delayed wills, and a
	// consumer may take its time (the upload handler waits for room in a full outbox). There is
	// at most one per session.
	go h.b.dispatchContained(pk.TopicName, pk.Payload)
}

// OnClientExpired fixes a leak in mochi: when a disconnected session expires it deletes the
// client but leaves its subscriptions in the topic index and its inflight messages counted.
// Called from mochi's event loop.
func (h *hook) OnClientExpired(cl *mqtt.Client) {
	h.b.offline.forget(cl.ID)
	h.b.contained("expire session", func() {
		cl.ClearInflights()
		h.b.srv.UnsubscribeClient(cl)
	})
}
