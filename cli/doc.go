// Package cli is the plumbing every tether program shares at its edges: configuration from a
// YAML file whose keys are the flag names (flags given on the command line win), the effective
// configuration printed back, the zerolog logger the flags ask for, and the operational HTTP
// endpoints (/healthz, /readyz, /metrics).
//
// Bad configuration is a *UsageError: main prints its one line and exits 2 before starting or
// creating anything. A bad value names its flag ("--node-window: must be between 1 and 16384,
// got 0"): commands check their flags with CheckFlags before building their packages'
// configurations, whose own Validate errors name Config fields instead. No command takes
// positional arguments, so Load refuses them; --help prints the usage on stdout and exits 0.
package cli
