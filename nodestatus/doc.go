// Package nodestatus keeps the edge-owned part of the Node's status current: what the host is
// (node info, addresses, capacity), reported once at start, and the conditions only the edge can
// see — today OutboxFull, raised when the durable outbox refuses reports and cleared when it
// drains. Reports go up through the outbox like everything else; node status has a reserve beyond
// the outbox's limit, so a full outbox can still say it is full.
//
// Concurrency: Run is one goroutine; the Outbox is the edge store (safe for concurrent use).
package nodestatus
