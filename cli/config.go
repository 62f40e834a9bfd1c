package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// UsageError is bad configuration: a flag or config key with an unusable value. main prints
// it and exits with code 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef builds a UsageError.
func Usagef(format string, args ...any) error { return &UsageError{Msg: fmt.Sprintf(format, args...)} }

// IsUsage reports whether err is a UsageError.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}

// SecretAnnotation marks a flag whose value --print-config hides.
const SecretAnnotation = "tether/secret"

// MarkSecret hides a flag's value from --print-config.
func MarkSecret(fs *pflag.FlagSet, name string) {
	fs.SetAnnotation(name, SecretAnnotation, []string{"true"})
}

// NewFlagSet returns an empty flag set for a command that reports its parse errors to Load's
// caller (ContinueOnError) and prints its usage, for --help, on stdout.
func NewFlagSet(name string, stdout io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stdout)
	return fs
}

// Load parses args into fs, then applies the YAML file named by the "config" flag (if any) to
// every flag not given on the command line. Keys are flag names; lists may be YAML sequences;
// maps (labels) may be YAML mappings. An unknown key or a bad value is a UsageError naming it, and
// so is a positional argument: no command takes one, and ignoring it would run something the
// caller did not ask for. For --help (or -h) Load returns pflag.ErrHelp once the flag set has
// printed its usage; Exit makes that exit 0.
func Load(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return &UsageError{Msg: err.Error()}
	}
	if rest := fs.Args(); len(rest) > 0 {
		return Usagef("unexpected argument %q: %s takes flags only", rest[0], fs.Name())
	}
	f := fs.Lookup("config")
	if f == nil || f.Value.String() == "" {
		return nil
	}
	path := f.Value.String()
	raw, err := os.ReadFile(path)
	if err != nil {
		return Usagef("config: %v", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return Usagef("config %s: not valid YAML: %v", path, err)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fl := fs.Lookup(k)
		if fl == nil || k == "config" || k == "print-config" {
			return Usagef("config %s: unknown key %q", path, k)
		}
		if fl.Changed {
			continue // the command line wins
		}
		v, err := scalar(doc[k], true)
		if err != nil {
			return Usagef("config %s: key %q: %v", path, k, err)
		}
		if v == "" && isContainer(doc[k]) {
			continue // an empty list or map: leave the default
		}
		if err := fl.Value.Set(v); err != nil {
			return Usagef("config %s: key %q: %v", path, k, err)
		}
	}
	return nil
}

func isContainer(v any) bool {
	switch v.(type) {
	case []any, map[string]any:
		return true
	}
	return false
}

// scalar renders a YAML value the way the flag would be written on the command line. Lists and
// maps (labels) are allowed at the top level only, holding scalars.
func scalar(v any, top bool) (string, error) {
	if !top && isContainer(v) {
		return "", fmt.Errorf("nested lists and maps are not supported")
	}
	switch v := v.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case bool, float64, int64, int:
		return fmt.Sprint(v), nil
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			s, err := scalar(e, false)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			s, err := scalar(v[k], false)
			if err != nil {
				return "", err
			}
			parts[i] = k + "=" + s
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("unsupported value of type %T", v)
}

// Print writes the effective configuration as YAML, in the form Load reads.
func Print(fs *pflag.FlagSet, w io.Writer) error {
	out := map[string]any{}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "config" || f.Name == "print-config" || f.Name == "help" {
			return
		}
		var v any = f.Value.String()
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			v = sv.GetSlice()
		}
		if f.Value.Type() == "stringToString" {
			m := map[string]string{}
			for _, kv := range strings.Split(strings.Trim(f.Value.String(), "[]"), ",") {
				if k, val, ok := strings.Cut(kv, "="); ok {
					m[k] = val
				}
			}
			v = m
		}
		if a := f.Annotations[SecretAnnotation]; len(a) > 0 && f.Value.String() != "" {
			v = "<redacted>"
		}
		out[f.Name] = v
	})
	b, err := yaml.Marshal(out)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Exit maps the error a program's command returned to its exit code, printing it as one line
// prefixed with the program's name: 0 for success or --help, 2 for a UsageError (bad flags or
// configuration: nothing was started), 1 for anything else.
func Exit(prog string, err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, pflag.ErrHelp):
		return 0
	case IsUsage(err):
		fmt.Fprintln(stderr, prog+":", err)
		return 2
	default:
		fmt.Fprintln(stderr, prog+":", err)
		return 1
	}
}
