package cli

import (
	"io"
	"time"

	"github.com/rs/zerolog"
)

// NewLogger returns the logger the --log-format and --log-level flags ask for: JSON lines by
// default, "console" for people.
func NewLogger(w io.Writer, format, level, program string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), Usagef("--log-level: %q is not one of trace, debug, info, warn, error", level)
	}
	switch format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	default:
		return zerolog.Nop(), Usagef("--log-format: %q is not json or console", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("program", program).Logger(), nil
}
