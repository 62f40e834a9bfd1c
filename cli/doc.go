// Package cli is the plumbing every tether program shares at its edges: configuration from a
// YAML file whose keys are the flag names (flags given on the command line win), the effective
// configuration printed back, the zerolog logger the flags ask for, and the operational HTTP
// endpoints (/healthz, /readyz, /metrics).
//
// Bad configuration is a *UsageError: main prints its one line and exits 2 before starting
// anything.
package cli
