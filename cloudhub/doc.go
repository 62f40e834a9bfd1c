// Package cloudhub accepts edge nodes over TLS websockets and keeps each node's stored view in
// step with the cloud.
//
// Identity: the TLS handshake requires a client certificate from the cloud CA; the node name is
// taken from it (CN "node:<name>") and nowhere else. A Hello naming another node is refused; a
// node whose Node object is gone (deleted: revoked), is not the object its join recorded
// (created again), or whose certificate a later join retired, is refused (AnnotationJoinedUID);
// a second connection of a node replaces the first.
//
// Sync (see ../docs/architecture.md): the hub subscribes to the index. For each change, in
// revision order, it asks the view rules which (node, key) pairs the change may alter, and marks
// those keys pending in each affected, connected node's session; once all are marked and the
// revision is recorded as processed, it wakes those sessions' writers. A session's writer sends
// the current form of every pending key (an Upsert of the bytes view.Visible gives for that node,
// shared with every node that holds the same form, or a Delete if the key left the view) and
// then a Progress saying the view is complete through the revision that was processed when the
// keys were taken. The edge's cursor moves only on Progress, so it never claims more than it has.
// Catch-up after a reconnect is the same mechanism: the hub remembers the last History changes,
// and marks the keys the changes after the node's cursor may have altered. A node whose cursor
// is older than that, from another cluster, or ahead of the cloud gets a reset: its whole view,
// then a ResetEnd, and the edge drops what the reset did not name. (A cursor ahead of a replica
// whose watch of a shared store is behind is waited for briefly first, and sent to reconnect
// if the store has it and the replica still has not; see session.handshake.)
//
// Queues and slow nodes: a session's pending work is a set of keys, not a queue of messages, so
// it never holds more than one entry per key — a key that changes ten times while a node is slow
// is sent once, in its latest form. Past MaxPending keys the session stops tracking keys and
// resets the node instead. At most Window data messages are unacknowledged per node; a node that
// keeps its window full for SlowTimeout is disconnected and catches up from its cursor when it
// reconnects, which costs what it missed. A slow node never delays another: marking is a map
// insert, and each session writes on its own goroutine.
//
// Concurrency: onUpdate runs on the index goroutine and takes Hub.mu, then each affected
// session's mu (lock order: Hub.mu before session.mu). Each session has a reader goroutine for
// its lifetime; a writer goroutine runs only while there is something to send, and a reporter
// goroutine only while reports wait for the store, so an idle node costs one goroutine (and no
// frame buffer: writers take theirs from a pool). Every write has a deadline; the read deadline
// is two heartbeats (at least one and the write timeout: wsframe.SilenceLimit), renewed by every
// frame and ping.
//
// Reports from the edge are applied in order by the Reports collaborator and acknowledged after
// they are stored. Node readiness is written through the Status collaborator: Ready on connect,
// NotReady only after GracePeriod without a session (so a cloud restart does not flap nodes),
// heartbeat times at most every StatusInterval (5 minutes by default), and Ready again at once
// when a change of the Node of a connected node says otherwise (another replica took this one
// for dead). With several replicas, the Ready condition names the one holding the session, and
// a replica leaves alone (ErrHeldElsewhere, looked at again after another GracePeriod) a node
// another replica holds while that one runs (the Status collaborator asks etcd) and keeps its
// heartbeat fresh; once that one has stopped, the node gets a grace period from when it was
// first seen stopped (HolderStoppedError), as its edge is redialling. Every replica times every
// Node it has no session for, including those that joined through another replica after it
// started; told that a replica stopped (RecheckElsewhere), it looks at them all again within a
// quarter of GracePeriod rather than at the end of the current one. A change only to a Node's heartbeat times or to a Device's status (what the edge
// reported) is not routed back down (view.Routed).
package cloudhub
