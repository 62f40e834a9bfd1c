// Package sim simulates many edge nodes against a real tether-cloud: each simulated edge joins
// with its own key and certificate, runs the real edge hub client (edgehub) and keeps its view in
// a MemStore that follows the edge store's rules in memory, so thousands fit in one process.
//
// Concurrency: every edge's hub client runs on its own goroutines (edgehub's model); MemStore is
// safe for concurrent use and calls the function given to SetOnApply on the reader goroutine of its edge's session.
package sim
