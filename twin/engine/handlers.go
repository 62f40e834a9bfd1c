package engine

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhub/tether/broker"
	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/twin"
)

// Sentinel errors of the engine, carried in the reason of an error result.
var (
	// ErrUnknownDevice: a device topic names a device this node does not have. Code 404.
	ErrUnknownDevice = errors.New("twin: no such device on this node")
	// ErrDeviceLimit: the device exists but is beyond Config.MaxDevices. Code 500.
	ErrDeviceLimit = errors.New("twin: device not served, the node's device limit is reached")
	// ErrStore: the change could not be made durable (outbox full, storage failure, stopping).
	// Code 500; nothing the device sent was accepted.
	ErrStore = errors.New("twin: the edge could not store the change")
)

func (e *Engine) unknown(id string) error {
	return &twin.Error{Code: twin.CodeNotFound, Err: ErrUnknownDevice,
		Reason: fmt.Sprintf("device %q is not on node %q", cut(id), e.cfg.Node)}
}

func (e *Engine) limited(id string) error {
	return &twin.Error{Code: twin.CodeInternal, Err: ErrDeviceLimit,
		Reason: fmt.Sprintf("device %q is not served: node %q serves its limit of %d devices", cut(id), e.cfg.Node, e.cfg.MaxDevices)}
}

func storeError(err error) error {
	reason := "the edge could not store the change; nothing was accepted, send it again"
	switch {
	case errors.Is(err, edgestore.ErrOutboxFull):
		reason = "the edge's outbox is full; nothing was accepted, send it again later"
	case errors.Is(err, protocol.ErrReportTooLarge):
		// The device's whole twin, reported as one snapshot, would be beyond what the cloud
		// accepts: sent again, it fails again.
		return &twin.Error{Code: twin.CodeBadRequest, Err: ErrStore, Reason: "the device's twin would be larger than the cloud accepts; nothing was accepted"}
	}
	return &twin.Error{Code: twin.CodeInternal, Err: ErrStore, Reason: reason}
}

// cut bounds a device-chosen string quoted back in a reason.
func cut(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// wait blocks a device's message until the engine has loaded its devices; false if the engine
// stopped. The publisher gets no PUBACK meanwhile.
func (e *Engine) wait() bool {
	select {
	case <-e.ready:
	case <-e.done:
		return false
	}
	// Once stopped, both are closed and the select above picks either: look at done alone.
	select {
	case <-e.done:
		return false
	default:
		return true
	}
}

// onDevice wraps a device-message handler for the broker: it runs on the publisher's connection
// goroutine, inside mochi's read path, before the PUBACK.
//
// That goroutine's stack is already at 32 KiB there and cannot shrink while the handler waits for
// the commit: mochi's frames down to the hook pass 800-byte packets by value and use about 19 KiB.
// The handler's own work (decoding, the twin rules, encoding) fits in the rest of those 32 KiB
// (TestHandlerStack checks it) and costs no stack of its own; a pool of workers would add their
// stacks, two goroutine switches per message, and a bound on how many changes one commit can
// carry. Only the publishes, which go through mochi again, are left to the publishers.
//
// A handler returns errStopped when the engine stopped before the message was durable (its
// store write was cut short): the broker then sends no PUBACK either.
func (e *Engine) onDevice(h func(topic string, payload []byte, arrived time.Time) error) func(string, []byte) error {
	return func(topic string, payload []byte) error {
		arrived := time.Now()
		if !e.wait() {
			return errStopped // no PUBACK: the device sends it again to the next agent
		}
		return h(topic, payload, arrived)
	}
}

// errStopped tells the broker that a device's message was not taken because the engine stopped;
// errUploadHeld, that an upload found no room in the outbox for UploadHold (the broker then
// tells the device, see broker.ErrNoRoom).
var (
	errStopped       = errors.New("twin: the engine has stopped")
	errPublisherGone = errors.New("twin: the device's connection ended while its upload waited for room")
	errUploadHeld    = fmt.Errorf("twin: no room in the outbox for the upload; the device keeps it: %w", broker.ErrNoRoom)
)

// resultTopic returns the result topic of a topic a client published on, made for the one
// message: twin/get and state/update are rare beside twin/update, whose result topic each
// device keeps. A topic a client published on is a valid name, and so is its result topic; nil
// never happens but is not published to.
func (e *Engine) resultTopic(in string) *broker.Topic {
	t, err := e.broker.Topic(in + suffixResult)
	if err != nil {
		return nil
	}
	return t
}

// answerError publishes an error result on topic, or if it is nil on the result topic of the
// device topic in, and counts it.
func (e *Engine) answerError(topic *broker.Topic, in string, what pubKind, eventID string, err error, counter interface{ inc(string) }) {
	code := twin.CodeOf(err)
	e.m.rejected.WithLabelValues(reasonOf(err)).Inc()
	counter.inc(strconv.Itoa(code))
	e.sampled.Debug().Str("topic", in).Int("code", code).Err(err).Msg("refused a device's message")
	if topic == nil {
		if topic = e.resultTopic(in); topic == nil {
			return
		}
	}
	key, ok := deviceOf(in)
	if !ok {
		key = e.cfg.Node
	}
	if e.subscribed(topic, what) {
		e.publish(key, topic, what, twin.EncodeError(eventID, code, err.Error(), e.nowMs()))
	}
}

// resolve finds the served device of a device topic, or the error to answer with.
func (e *Engine) resolve(topic string) (*device, error) {
	id, ok := deviceOf(topic)
	if !ok {
		return nil, e.unknown(topic)
	}
	d, served := e.lookup(id)
	switch {
	case d == nil:
		return nil, e.unknown(id)
	case !served:
		return nil, e.limited(id)
	}
	return d, nil
}

// onTwinUpdate handles $hw/events/device/{id}/twin/update. It runs on the publisher's
// connection goroutine before the PUBACK: the success result is published only once the change
// and its report are durable.
func (e *Engine) onTwinUpdate(topic string, payload []byte, arrived time.Time) error {
	upd, err := twin.DecodeUpdate(payload, e.cfg.Limits)
	if err != nil {
		e.answerError(nil, topic, pubResult, upd.EventID, err, e.m.updates)
		return nil
	}
	d, err := e.resolve(topic)
	if err != nil {
		e.answerError(nil, topic, pubResult, upd.EventID, err, e.m.updates)
		return nil
	}
	res := d.topics.updateResult
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gone {
		e.answerError(res, topic, pubResult, upd.EventID, e.unknown(d.id), e.m.updates)
		return nil
	}
	now := e.nowMs()
	next, changed, err := twin.ApplyReport(d.tw, upd, d.types, now)
	if err != nil {
		e.answerError(res, topic, pubResult, upd.EventID, err, e.m.updates)
		return nil
	}
	if len(changed) > 0 {
		if err := e.write(e.ctx, d, next, d.state, []edgestore.Entry{twinReport(d, next)}); err != nil {
			if e.ctx.Err() != nil {
				return errStopped // stopping: whether it was stored is unknown, so no answer and no PUBACK
			}
			e.log.Warn().Err(err).Str("device", d.id).Msg("cannot store a twin update; the device is answered 500")
			e.answerError(res, topic, pubResult, upd.EventID, storeError(err), e.m.updates)
			return nil
		}
		d.tw = next
	}
	if e.subscribed(res, pubResult) {
		e.publish(d.id, res, pubResult, twin.EncodeResult(upd, next, now))
	}
	if len(changed) == 0 {
		e.m.updates.inc("unchanged")
	} else {
		e.m.updates.inc("ok")
		if e.subscribed(d.topics.document, pubDocument) {
			e.publish(d.id, d.topics.document, pubDocument, twin.EncodeDocument(upd.EventID, changed, now))
		}
		e.publishDelta(d, next, now)
	}
	e.m.updateSeconds.Observe(time.Since(arrived).Seconds())
	return nil
}

// onTwinGet handles $hw/events/device/{id}/twin/get.
func (e *Engine) onTwinGet(topic string, payload []byte, _ time.Time) error {
	g, err := twin.DecodeGet(payload, e.cfg.Limits)
	if err != nil {
		e.answerError(nil, topic, pubGetResult, g.EventID, err, e.m.gets)
		return nil
	}
	d, err := e.resolve(topic)
	if err != nil {
		e.answerError(nil, topic, pubGetResult, g.EventID, err, e.m.gets)
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gone {
		e.answerError(nil, topic, pubGetResult, g.EventID, e.unknown(d.id), e.m.gets)
		return nil
	}
	e.m.gets.inc("ok")
	if res := e.resultTopic(topic); res != nil && e.subscribed(res, pubGetResult) {
		e.publish(d.id, res, pubGetResult, twin.EncodeGetResult(g.EventID, d.tw, e.nowMs()))
	}
	return nil
}

// onStateUpdate handles $hw/events/device/{id}/state/update. A changed state is durable (with
// its report) before the result is published, as for twins.
func (e *Engine) onStateUpdate(topic string, payload []byte, _ time.Time) error {
	su, err := twin.DecodeStateUpdate(payload, e.cfg.Limits)
	if err != nil {
		e.answerError(nil, topic, pubStateResult, su.EventID, err, e.m.states)
		return nil
	}
	d, err := e.resolve(topic)
	if err != nil {
		e.answerError(nil, topic, pubStateResult, su.EventID, err, e.m.states)
		return nil
	}
	res := e.resultTopic(topic)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gone {
		e.answerError(res, topic, pubStateResult, su.EventID, e.unknown(d.id), e.m.states)
		return nil
	}
	now := e.nowMs()
	next := twin.ApplyState(d.state, su, now)
	if next != d.state {
		if err := e.write(e.ctx, d, d.tw, next, []edgestore.Entry{stateReport(d, next)}); err != nil {
			if e.ctx.Err() != nil {
				return errStopped
			}
			e.log.Warn().Err(err).Str("device", d.id).Msg("cannot store a device state; the device is answered 500")
			e.answerError(res, topic, pubStateResult, su.EventID, storeError(err), e.m.states)
			return nil
		}
		d.state = next
		e.m.states.inc("ok")
	} else {
		e.m.states.inc("unchanged")
	}
	if res != nil && e.subscribed(res, pubStateResult) {
		e.publish(d.id, res, pubStateResult, twin.EncodeStateResult(su.EventID, d.name, next, now))
	}
	return nil
}

// onMembershipGet handles $hw/events/node/{node}/membership/get: the node's served devices,
// sorted by id, as the engine holds them from the edge store.
func (e *Engine) onMembershipGet(topic string, payload []byte, _ time.Time) error {
	if nodeOf(topic) != e.cfg.Node {
		// Another node's devices are not here; answering would claim they are none.
		e.m.membershipGets.inc("other_node")
		return nil
	}
	res := e.membershipResult
	g, err := twin.DecodeMembershipGet(payload, e.cfg.Limits)
	if err != nil {
		e.answerError(res, topic, pubMembershipResult, g.EventID, err, e.m.membershipGets)
		return nil
	}
	e.mu.RLock()
	devs := make([]*device, 0, len(e.devices))
	for _, d := range e.devices {
		if !d.refused {
			devs = append(devs, d)
		}
	}
	e.mu.RUnlock()
	slices.SortFunc(devs, func(a, b *device) int { return strings.Compare(a.id, b.id) })
	members := make([]twin.Member, 0, len(devs))
	for _, d := range devs {
		d.mu.Lock()
		if !d.gone {
			members = append(members, d.member())
		}
		d.mu.Unlock()
	}
	e.m.membershipGets.inc("ok")
	if e.subscribed(res, pubMembershipResult) {
		e.publish(e.cfg.Node, res, pubMembershipResult, twin.EncodeMembershipGetResult(g.EventID, members, e.nowMs()))
	}
	return nil
}

// onUpload handles $hw/events/upload/# and SYS/dis/upload_records: the payload goes into the
// outbox as it is, and the callback returns (the device gets its PUBACK) only once it is
// durable. A full outbox or a failing store is retried, not dropped: the publisher waits, up to
// UploadHold; then the upload is refused (MQTT 5: PUBACK 0x97; 3.1.1: the connection closes)
// and the device keeps it and sends it again. If the engine stops first, or the device's
// connection ends (it reconnected: it sends the upload again there, and this copy would land
// after what it sent since), the upload is not acknowledged either, and the device sends it again. An upload the cloud would never accept
// (protocol.CheckReport: a topic over 512 bytes, a payload over 1 MiB) is refused for good
// (broker.ErrRefused): never queued, where it would hold back every report after it.
func (e *Engine) onUpload(from broker.Publisher, topic string, payload []byte) error {
	if !e.wait() {
		return errStopped
	}
	if err := protocol.CheckReport(topic, len(payload)); err != nil {
		// The cloud could never take it, and it would hold back every report queued after it.
		e.m.uploads.WithLabelValues("refused").Inc()
		e.sampled.Warn().Err(err).Str("topic_start", cut(topic)).Int("topic_bytes", len(topic)).Int("bytes", len(payload)).
			Msg("refused an upload beyond what the cloud accepts; not queued")
		return fmt.Errorf("%w: %w", broker.ErrRefused, err)
	}
	entry := edgestore.Entry{Kind: protocol.ReportUpload, Subject: topic, Payload: bytes.Clone(payload)}
	backoff := 10 * time.Millisecond
	giveUp := time.Now().Add(e.cfg.UploadHold)
	for {
		err := e.store.Enqueue(e.ctx, entry)
		if err == nil {
			e.m.uploads.WithLabelValues("queued").Inc()
			e.m.uploadBytes.Add(float64(len(payload)))
			return nil
		}
		if e.ctx.Err() != nil {
			e.m.uploads.WithLabelValues("stopped").Inc()
			return errStopped
		}
		reason := "store"
		if errors.Is(err, edgestore.ErrOutboxFull) {
			reason = "outbox_full"
		}
		e.m.uploads.WithLabelValues(reason).Inc()
		e.sampled.Warn().Err(err).Str("topic", topic).Dur("retry_in", backoff).
			Msg("cannot queue an upload; the device is held without a PUBACK until it is stored")
		if time.Now().After(giveUp) {
			e.m.uploads.WithLabelValues("given_up").Inc()
			return errUploadHeld
		}
		select {
		case <-time.After(backoff):
		case <-e.done:
			e.m.uploads.WithLabelValues("stopped").Inc()
			return errStopped
		}
		if from.Closed() {
			// The device reconnected (or left): it sends the upload again on its new connection,
			// and queued from here it would come after what the device sent there since.
			e.m.uploads.WithLabelValues("publisher_gone").Inc()
			return errPublisherGone
		}
		backoff = min(2*backoff, e.cfg.UploadRetry)
	}
}

// reasonOf names an error's sentinel for the rejected-inputs counter.
func reasonOf(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{twin.ErrTooLarge, "too_large"},
		{twin.ErrMalformed, "malformed"},
		{twin.ErrKey, "key"},
		{twin.ErrValueTooLong, "value_too_long"},
		{twin.ErrTooMany, "too_many"},
		{twin.ErrType, "type"},
		{twin.ErrModelType, "model_type"},
		{twin.ErrUnknownProperty, "unknown_property"},
		{twin.ErrNotOptional, "not_optional"},
		{twin.ErrState, "state"},
		{twin.ErrStale, "stale"},
		{ErrUnknownDevice, "unknown_device"},
		{ErrDeviceLimit, "device_limit"},
		{ErrStore, "store"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}
