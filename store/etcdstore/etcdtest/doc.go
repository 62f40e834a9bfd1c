// Package etcdtest runs a real etcd for tests: one member in its own temp data dir, on free
// loopback ports, stopped when the test ends. A test that asks for one is skipped when the etcd
// binary is not installed (Debian package etcd-server; .ci/run installs it).
package etcdtest
