// Command bench runs tether's benchmarks, each beside a baseline measured in the same run, and
// prints a table (make bench; make bench-full for the largest sizes).
package main
