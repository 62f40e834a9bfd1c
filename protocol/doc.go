// Package protocol is tether's wire contract between tether-cloud and tether-edge.
//
// A websocket binary message is a frame; a frame holds one or more messages. Each message is a
// type byte, a uvarint body length and the body, so a frame can be walked without knowing every
// type and a reader never trusts a length it has not bounded by the frame it holds. Bodies are
// uvarints, length-prefixed strings and byte slices, in a fixed order per type (see messages.go).
// Objects travel as their Kubernetes JSON, unchanged, so the cloud can encode an object once and
// share the bytes across every node it goes to.
//
// The conversation (Version 1):
//
//	edge  → cloud  Hello{cursor}                     first message, within the handshake deadline
//	cloud → edge   Welcome{head, mode}               mode says whether catch-up is incremental or a reset
//	cloud → edge   Upsert / Delete / Progress ...    the node's view, in revision order, each with a seq
//	edge  → cloud  Ack{seq}                          cumulative, sent after the edge store commit
//	edge  → cloud  Report{seq, kind, payload}        from the durable outbox, in order
//	cloud → edge   ReportAck{seq}                    cumulative, after the cloud store commit
//	edge  → cloud  Request{id, method, path, body}  an API write made on the edge metaserver
//	cloud → edge   Response{id, code, body}          the cloud's answer
//	edge  → cloud  Renew{csr}; cloud → edge Renewed  certificate rotation
//	either         Error{code, message}              then the sender closes
//
// A cursor is the cloud revision up to which the edge's stored view is complete. Only Progress
// and ResetEnd move it: Upsert and Delete carry the revision their content is valid at (for the
// edge's per-object version check) but never advance the cursor, so an edge that dies in the
// middle of a catch-up resumes it instead of skipping the rest.
//
// The package imports nothing of tether's and holds no state; Decode is safe for concurrent use
// and never panics on any input (see FuzzDecode).
package protocol
