package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tetherhub/tether/cli"
	"github.com/tetherhub/tether/sim/mapper"
)

// mapperCmd runs one simulated KubeEdge-style mapper against an edge's broker: it reports a
// property of a device every interval and, like a real mapper, applies the desired values the
// cloud sets (twin/update/delta) and reports them back.
func mapperCmd(args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("tether-sim mapper", stdout)
	broker := fs.String("mqtt", "127.0.0.1:1883", "the edge's MQTT broker")
	device := fs.String("device", "", "device id namespace/name (required)")
	property := fs.String("property", "temperature", "the property to report")
	start := fs.Int("start", 20, "first value reported")
	every := fs.Duration("every", 5*time.Second, "how often to report")
	fs.String("config", "", "YAML file whose keys are these flags' names")
	if err := cli.Load(fs, args); err != nil {
		return err
	}
	if *device == "" {
		return cli.Usagef("--device: required (namespace/name)")
	}
	if err := cli.Positive(*every); err != nil {
		return cli.FlagError("every", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	say := func(format string, a ...any) {
		fmt.Fprintf(stdout, "%s mapper %s: %s\n", time.Now().Format(time.TimeOnly), *device, fmt.Sprintf(format, a...))
	}
	cfg := mapper.DefaultConfig("tcp://"+*broker, *device)
	cfg.FollowDesired = true
	var wanted atomic.Pointer[string] // the value of --property the cloud last asked for
	cfg.OnDelta = func(d mapper.Delta) {
		say("delta from the edge: the cloud wants %v; writing it to the device and reporting it back", d.Values)
		if v, ok := d.Values[*property]; ok {
			wanted.Store(&v)
		}
	}
	var m *mapper.Mapper
	for {
		var err error
		if m, err = mapper.Connect(ctx, cfg); err == nil {
			break
		}
		say("cannot connect to %s yet: %v", *broker, err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	defer m.Close()
	say("connected to %s", *broker)
	if _, err := m.SetState(ctx, *device, "online"); err != nil {
		say("state update refused: %v", err)
	}
	value := *start
	failures := 0
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for {
		// Once the cloud has asked for a value, keep it (as a thermostat would); until then
		// drift. (The mapper's own actual values are what it last reported, so they cannot
		// tell.)
		var v string
		if p := wanted.Load(); p != nil {
			v = *p
		} else {
			v = strconv.Itoa(value)
			value += rand.IntN(3) - 1
		}
		if res, err := m.Report(ctx, *device, map[string]string{*property: v}); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			say("report %s=%s: %v", *property, v, err)
			// A mapper does not reconnect by itself; several failures in a row mean the
			// broker is gone, and the caller (a script, a supervisor) starts it again.
			if failures++; failures == 3 {
				return fmt.Errorf("lost the broker: %w", err)
			}
		} else if res != nil {
			failures = 0
			say("reported %s=%s; the edge stored it (twin/update/result)", *property, v)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
