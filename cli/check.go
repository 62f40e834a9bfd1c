package cli

import (
	"cmp"
	"fmt"
	"net"
	"strconv"
	"time"
)

// FlagCheck pairs a flag with what is wrong with its value: Err is nil when the value is usable.
type FlagCheck struct {
	Name string
	Err  error
}

// Flag returns the FlagCheck of flag name; err is the reason its value is unusable, or nil.
func Flag(name string, err error) FlagCheck { return FlagCheck{Name: name, Err: err} }

// CheckFlags returns the first failed check as a UsageError naming its flag ("--name: reason"),
// or nil if every check passed. Commands check each flag's value here, before they build their
// packages' configurations, so that a bad value is reported as the flag the user wrote rather
// than as the field of some package's Config it ends up in.
func CheckFlags(checks ...FlagCheck) error {
	for _, c := range checks {
		if c.Err != nil {
			return FlagError(c.Name, c.Err)
		}
	}
	return nil
}

// FlagError is the UsageError for flag name whose value is unusable for reason.
func FlagError(name string, reason error) error { return Usagef("--%s: %v", name, reason) }

// Positive is nil if d is positive.
func Positive(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("must be positive, got %s", d)
	}
	return nil
}

// AtLeast is nil if v is at least lo.
func AtLeast[T cmp.Ordered](v, lo T) error {
	if v < lo {
		return fmt.Errorf("must be at least %v, got %v", lo, v)
	}
	return nil
}

// Between is nil if v is in [lo, hi].
func Between[T cmp.Ordered](v, lo, hi T) error {
	if v < lo || v > hi {
		return fmt.Errorf("must be between %v and %v, got %v", lo, hi, v)
	}
	return nil
}

// NotEmpty is nil if s is not empty.
func NotEmpty(s string) error {
	if s == "" {
		return fmt.Errorf("must not be empty")
	}
	return nil
}

// HostPort is nil if addr is HOST:PORT with a numeric port (the host may be empty: all
// addresses).
func HostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT: %v", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q is not HOST:PORT: the port must be a number from 0 to 65535", addr)
	}
	return nil
}
