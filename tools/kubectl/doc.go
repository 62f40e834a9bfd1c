// Command kubectl is upstream kubectl built from the k8s.io/kubectl module at the version in this
// directory's go.mod, with nothing of tether's in it. The end-to-end tests build it (once per test
// run, see internal/e2e) to run a current kubectl generation against tether's APIs beside
// Debian's 1.20; it lives in its own module so that tether's go.mod does not carry kubectl's
// dependency tree.
//
// Concurrency: none of its own; main hands the process to kubectl's command.
//
// Caveat: the first build downloads and compiles kubectl's whole dependency tree, so a test run
// on a cold module and build cache is slower; later builds come from the cache.
package main
