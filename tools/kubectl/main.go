// Command kubectl is upstream kubectl built from the k8s.io/kubectl module at the version in this
// directory's go.mod. The end-to-end tests build it to run a current kubectl generation against
// tether's APIs; it lives in its own module so that tether's go.mod does not carry kubectl's
// dependency tree.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() {
	os.Exit(cli.Run(cmd.NewDefaultKubectlCommand()))
}
