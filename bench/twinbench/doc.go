// Package twinbench measures tether's device twin path on a real tether-edge joined to a real
// tether-cloud: durable twin/update throughput and publish → result latency from many device
// clients beside bare mochi-mqtt QoS 1 ingest measured with the same clients in the same run,
// cloud desired change → delta at the device, and the agent's resident memory idle and under
// load. Run(ctx, size, w) prints one table; make bench calls it.
//
// The device clients are a minimal MQTT 3.1.1 client of this package, the same for tether and
// the baseline, so the difference between the two rows is the server: a paho client per
// device would spend more CPU than the broker it measures on a 2-core machine.
//
// Two baselines run on bare mochi: plain QoS 1 ingest, and mochi answering each publish on its
// result topic from its own hook (internal/mochiserver's echo), which exchanges exactly the
// packets of a twin update (PUBLISH in, result PUBLISH out, PUBACK) with none of the agent's
// work: the most a twin path built on mochi can reach on the machine. A third baseline is bare
// bbolt (package boltbase): as many writers as devices, each waiting until its twin-sized value
// is durable, closed loop and at the first offered rate: what a durable write costs through
// bbolt's own group commit on this machine (mostly CPU and scheduling here, as an fdatasync of
// a page takes about 0.1 ms on its disk). Every load row also gives
// the server's CPU time per message, and the CPU the rest of the machine (not the server, not
// these clients) took during the window: on a shared machine, rates move with it, CPU per
// message much less.
//
// Knobs for investigating: $TWINBENCH_PPROF names a directory for the edge's CPU profile (over
// each load's window), heap and goroutine profiles and metrics after each load;
// $TWINBENCH_EDGE_ARGS adds flags to tether-edge's command line and $TWINBENCH_EDGE_ENV variables
// to its environment.
//
// Durable throughput is measured twice: open loop at an offered rate above capacity (devices
// report on their own clock, as real ones do, so several of a device's updates are in flight,
// at most satWindow: a device skips a tick while that many are unanswered, so the overload
// leaves no backlog behind; it runs last) and closed loop (each device waits for its result
// before the next update).
//
// Binaries come from $TETHER_BIN, ./bin (make build), or a fresh go build. While the edge is
// loaded the cloud process is paused (SIGSTOP): in a deployment it runs on another machine,
// and here it would take the CPU the agent is measured on; the edge's reports wait, coalesced,
// in its outbox, and are drained before the desired → delta measurement, which needs the cloud.
package twinbench
