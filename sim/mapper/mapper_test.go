package mapper

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/broker"
)

// TestDeltasOfOtherDevicesIgnored: a mapper serving more devices than its per-device
// subscriptions allow subscribes with wildcards; it follows the deltas of its own devices and
// leaves other devices' alone (before, it reported their expected values as their actual ones).
func TestDeltasOfOtherDevicesIgnored(t *testing.T) {
	cfg := broker.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	b, err := broker.New(cfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	<-b.Ready()
	var mu sync.Mutex
	var updates []string
	if err := b.Handle("$hw/events/device/+/+/twin/update", func(topic string, _ []byte) error {
		mu.Lock()
		updates = append(updates, strings.TrimSuffix(strings.TrimPrefix(topic, "$hw/events/device/"), "/twin/update"))
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var devices []string
	for i := range 30 { // past the subscription budget: wildcards
		devices = append(devices, fmt.Sprintf("ns/d%d", i))
	}
	mc := DefaultConfig("tcp://"+b.Addr().String(), devices...)
	mc.FollowDesired, mc.Timeout = true, time.Second
	m, err := Connect(ctx, mc)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	delta := `{"event_id":"e","timestamp":1,"twin":{},"delta":{"temp":"25"}}`
	for _, id := range []string{"other/x", "ns/d7"} {
		if err := b.Publish("$hw/events/device/"+id+"/twin/update/delta", []byte(delta), 1); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := fmt.Sprint(updates)
		mu.Unlock()
		if strings.Contains(got, "ns/d7") {
			time.Sleep(200 * time.Millisecond) // room for a report of the other one, were it sent
			mu.Lock()
			got = fmt.Sprint(updates)
			mu.Unlock()
			if strings.Contains(got, "other/x") {
				t.Fatalf("the mapper answered another device's delta: %s", got)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no report for its own device's delta: %s", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
