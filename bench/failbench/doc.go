// Package failbench measures a failover of tether-cloud replicas on etcd: two replicas on one
// real etcd, simulated edges (tether-sim's fleet) told both, and the replica holding them
// killed with SIGKILL. It reports the seconds until the surviving replica shows every node
// Ready and holding its session, beside the seconds the same edges took to connect in the first
// place (the baseline: a failover is that connect again, plus noticing the loss and the Ready
// writes), and how many nodes the surviving replica showed not Ready meanwhile (the goal is
// none: the edges redial within a grace period). Run(ctx, o, w) prints the figures; make bench
// calls it.
package failbench
