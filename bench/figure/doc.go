// Package figure is how the benchmark suites report: one measured number beside the baseline
// measured in the same run, its ratio and the goal it is held to, one line each.
package figure
