package broker

import (
	"context"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"
)

// mochiLog carries mochi's slog output into our zerolog logger. mochi logs per-client events
// (a refused packet, a short keepalive, a dropped delivery) that this package already turns into
// counters and its own sampled log lines, so everything mochi says is demoted: Error becomes Warn
// and the rest Debug. That keeps one line per event at the default level (STYLE: log once where
// handled) while a debug run still shows mochi's view.
type mochiLog struct {
	log    zerolog.Logger
	attrs  []slog.Attr
	prefix string // dotted group path for the attributes added after WithGroup
}

func newMochiLogger(log zerolog.Logger) *slog.Logger {
	return slog.New(&mochiLog{log: log})
}

func mochiLevel(l slog.Level) zerolog.Level {
	if l >= slog.LevelError {
		return zerolog.WarnLevel
	}
	return zerolog.DebugLevel
}

func (h *mochiLog) Enabled(_ context.Context, l slog.Level) bool {
	zl := mochiLevel(l)
	return zl >= h.log.GetLevel() && zl >= zerolog.GlobalLevel()
}

func (h *mochiLog) Handle(_ context.Context, r slog.Record) error {
	ev := h.log.WithLevel(mochiLevel(r.Level))
	if ev == nil {
		return nil
	}
	ev.Str("source", "mochi")
	for _, a := range h.attrs {
		addAttr(ev, "", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		addAttr(ev, h.prefix, a)
		return true
	})
	ev.Msg(r.Message)
	return nil
}

func (h *mochiLog) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = make([]slog.Attr, 0, len(h.attrs)+len(as))
	n.attrs = append(n.attrs, h.attrs...)
	for _, a := range as {
		if h.prefix != "" {
			a.Key = h.prefix + a.Key
		}
		n.attrs = append(n.attrs, a)
	}
	return &n
}

func (h *mochiLog) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.prefix = h.prefix + name + "."
	return &n
}

// addAttr writes one attribute. Packets and wills are reduced to their type and topic: their
// payloads are device data and may carry secrets, which never go to logs.
func addAttr(ev *zerolog.Event, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	key := prefix + a.Key
	switch v.Kind() {
	case slog.KindGroup:
		for _, ga := range v.Group() {
			addAttr(ev, key+".", ga)
		}
		return
	case slog.KindString:
		ev.Str(key, v.String())
		return
	case slog.KindInt64:
		ev.Int64(key, v.Int64())
		return
	case slog.KindUint64:
		ev.Uint64(key, v.Uint64())
		return
	case slog.KindBool:
		ev.Bool(key, v.Bool())
		return
	case slog.KindDuration:
		ev.Dur(key, v.Duration())
		return
	}
	switch x := v.Any().(type) {
	case error:
		ev.AnErr(key, x)
	case packets.Packet:
		ev.Dict(key, zerolog.Dict().Uint8("type", x.FixedHeader.Type).Str("topic", x.TopicName).Uint16("id", x.PacketID))
	case *packets.Packet:
		if x != nil {
			ev.Dict(key, zerolog.Dict().Uint8("type", x.FixedHeader.Type).Str("topic", x.TopicName).Uint16("id", x.PacketID))
		}
	case mqtt.Will:
		ev.Str(key+".topic", x.TopicName)
	case []byte:
		ev.Int(key+".len", len(x))
	default:
		ev.Interface(key, x)
	}
}
