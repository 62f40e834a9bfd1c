package broker

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesFieldAndReason(t *testing.T) {
	cases := []struct {
		field  string
		reason string
		mutate func(*Config)
	}{
		{"Listen", "empty", func(c *Config) { c.Listen = "" }},
		{"Listen", "host:port", func(c *Config) { c.Listen = "localhost" }},
		{"Listen", "numeric port", func(c *Config) { c.Listen = "127.0.0.1:99999" }},
		{"MaxPacketSize", "between", func(c *Config) { c.MaxPacketSize = 10 }},
		{"MaxPacketSize", "between", func(c *Config) { c.MaxPacketSize = 1 << 30 }},
		{"MaxClients", "at least 1", func(c *Config) { c.MaxClients = 0 }},
		{"MaxPendingConnections", "at least 1", func(c *Config) { c.MaxPendingConnections = 0 }},
		{"ConnectTimeout", "positive", func(c *Config) { c.ConnectTimeout = 0 }},
		{"WriteTimeout", "positive", func(c *Config) { c.WriteTimeout = -time.Second }},
		{"MaxInflight", "at least 1", func(c *Config) { c.MaxInflight = 0 }},
		{"MaxSubscriptionsPerClient", "at least 1", func(c *Config) { c.MaxSubscriptionsPerClient = 0 }},
		{"SessionExpiry", "between", func(c *Config) { c.SessionExpiry = -time.Second }},
		{"SessionExpiry", "whole seconds", func(c *Config) { c.SessionExpiry = 1500 * time.Millisecond }},
		{"MaxPendingWrites", "between", func(c *Config) { c.MaxPendingWrites = 0 }},
		{"MaxMessageExpiry", "at least 1s", func(c *Config) { c.MaxMessageExpiry = 0 }},
		{"SysTopicInterval", "at least 1s", func(c *Config) { c.SysTopicInterval = time.Millisecond }},
		{"ShutdownTimeout", "positive", func(c *Config) { c.ShutdownTimeout = 0 }},
	}
	for _, tc := range cases {
		c := DefaultConfig()
		tc.mutate(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: no error", tc.field)
			continue
		}
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field+":") || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: error %q does not name the field and %q", tc.field, err, tc.reason)
		}
		if _, err := New(c, zerolog.Nop(), nil); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: New accepted an invalid config: %v", tc.field, err)
		}
	}
	c := DefaultConfig()
	c.SessionExpiry = 0 // sessions end at disconnect: allowed
	if err := c.Validate(); err != nil {
		t.Errorf("SessionExpiry 0: %v", err)
	}
}

func TestMochiPacketLimit(t *testing.T) {
	for _, max := range []uint32{128, 129, 130, 131, 16385, 16386, 16387, 256 << 10, 2097154, 2097155, MaxMQTTPacket} {
		lim := mochiPacketLimit(max)
		rem := lim - 1 // the largest remaining length mochi accepts
		if total := 1 + varintLen(rem) + rem; total > max {
			t.Errorf("max %d: mochi would accept a %d-byte packet", max, total)
		}
		if next := rem + 1; 1+varintLen(next)+next <= max {
			t.Errorf("max %d: mochi would refuse a packet of %d bytes that fits", max, 1+varintLen(next)+next)
		}
	}
}

func TestRunTwiceAndListenError(t *testing.T) {
	b := startBroker(t, nil)
	if err := b.Run(context.Background()); !errors.Is(err, ErrAlreadyRun) {
		t.Errorf("second Run: %v, want ErrAlreadyRun", err)
	}

	cfg := DefaultConfig()
	cfg.Listen = b.addr // taken
	other, err := New(cfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = other.Run(context.Background())
	var opErr *net.OpError
	if err == nil || !errors.As(err, &opErr) || !strings.Contains(err.Error(), b.addr) {
		t.Errorf("Run on a taken address: %v", err)
	}
	if other.Addr() != nil {
		t.Errorf("Addr before ready = %v, want nil", other.Addr())
	}
}

func TestMetricsRegistered(t *testing.T) {
	b := startBroker(t, nil)
	c := dialPaho3(t, b.addr, "metrics")
	publish3(t, c, "m/t", 0, "x")

	for _, name := range []string{
		"tether_edge_mqtt_clients_connected", "tether_edge_mqtt_sessions", "tether_edge_mqtt_subscriptions",
		"tether_edge_mqtt_inflight_messages", "tether_edge_mqtt_retained_messages",
		"tether_edge_mqtt_messages_received_total", "tether_edge_mqtt_messages_sent_total",
		"tether_edge_mqtt_packets_received_total", "tether_edge_mqtt_packets_sent_total",
		"tether_edge_mqtt_received_bytes_total", "tether_edge_mqtt_sent_bytes_total",
		"tether_edge_mqtt_panics_total", "tether_edge_mqtt_connections_open",
	} {
		if metric(t, b.reg, name) < 0 {
			t.Errorf("metric %s missing", name)
		}
	}
	for _, r := range rejectReasons {
		if v := rejected(t, b, r); v != 0 {
			t.Errorf("rejected{%s} = %v, want 0", r, v)
		}
	}
	for _, r := range []string{"queue_full", "inflight_full"} {
		if metric(t, b.reg, "tether_edge_mqtt_messages_dropped_total", "reason", r) < 0 {
			t.Errorf("messages_dropped_total{reason=%q} missing", r)
		}
	}
	waitFor(t, "message counted", func() bool { return metric(t, b.reg, "tether_edge_mqtt_messages_received_total") >= 1 })
	if v := metric(t, b.reg, "tether_edge_mqtt_clients_connected"); v != 1 {
		t.Errorf("clients_connected = %v, want 1", v)
	}
	if v := metric(t, b.reg, "tether_edge_mqtt_received_bytes_total"); v <= 0 {
		t.Errorf("received_bytes_total = %v", v)
	}

	// A second broker on the same registry is refused rather than silently sharing series.
	if _, err := New(DefaultConfig(), zerolog.Nop(), b.reg); err == nil {
		t.Error("New registered twice on one registry")
	}
}
