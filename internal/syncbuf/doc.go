// Package syncbuf is a bytes.Buffer that many goroutines may write to while another reads it:
// the log sink tests give to the code under test (or a child process's output) and read from
// as it runs.
package syncbuf
