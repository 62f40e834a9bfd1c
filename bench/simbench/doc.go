// Package simbench runs tether-sim's scenarios as a benchmark suite: each scenario is the real
// tether-sim binary against a tether-cloud it starts itself, and each figure of its JSON report
// is printed in the suite's one-line form. The fan-out figures are put beside the bare gorilla
// broadcast that the hub suite measured in the same run at the same node count, when it did.
//
// Sizes: "default" runs 1,000 nodes (idle steady state, fan-out, cloud restart, two minutes of
// churn) in about five minutes; "full" runs 10,000 nodes with ten minutes of churn.
package simbench
