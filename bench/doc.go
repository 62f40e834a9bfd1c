// Command bench runs tether's benchmarks, each beside a baseline measured in the same run, and
// prints one line per figure (make bench; make bench-full for the largest sizes).
//
// Suites, in order (-only runs one): hub (fan-out against a bare gorilla broadcast, memory per
// idle node against a bare gorilla connection, cloud restart), api (metaserver lists and watches,
// cloud API writes), twin (MQTT twin updates against bare mochi), groups (node-group traffic
// closure), sim (tether-sim's scenarios against a real cloud; its fan-out beside the hub
// suite's baseline) and failover (two replicas on etcd, the one holding the nodes killed).
package main
