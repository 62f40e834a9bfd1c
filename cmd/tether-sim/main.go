package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tetherhub/tether/cli"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = runScenario(args, stdout, stderr)
	case "mapper":
		err = mapperCmd(args, stdout)
	case "version":
		if len(args) > 0 {
			err = cli.Usagef("unexpected argument %q: version takes none", args[0])
			break
		}
		fmt.Fprintln(stdout, "tether-sim", version)
	default:
		err = cli.Usagef("unknown command %q (run, mapper, version)", cmd)
	}
	return cli.Exit("tether-sim", err, stderr)
}
