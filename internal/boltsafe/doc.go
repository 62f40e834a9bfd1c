// Package boltsafe opens bbolt files that may be damaged. bbolt panics, instead of returning an
// error, on some damage it finds while opening a file (a freelist page of an unknown type, for
// one); a store that cannot be read must stop the process with one clear line, not a goroutine
// dump.
package boltsafe
