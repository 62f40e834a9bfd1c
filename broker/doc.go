// Package broker is the MQTT broker embedded in tether-edge: the local endpoint (SPEC §2,
// 127.0.0.1:1883 by default) that device mappers speak MQTT 3.1.1 and 5 to, using KubeEdge's
// device topics (SPEC §6). It is mochi-mqtt v2 (github.com/mochi-mqtt/server/v2) wrapped so that
// a misbehaving client can only ever hurt itself (SPEC §10).
//
// # What it owns
//
// The TCP listener, every client connection and session, the subscription index, and the
// broker's limits and metrics (prefix tether_edge_mqtt_). It does not own device semantics: the
// twin engine and the outbox register consumers with Handle (for
// $hw/events/device/+/+/twin/update, .../state/update, $hw/events/upload/#,
// SYS/dis/upload_records) and answer devices with Publish. Sessions, retained messages and
// queued messages live in memory only; an agent restart ends every session.
//
// # Concurrency model
//
// Run owns the listener; it returns after ctx is done and every connection goroutine has ended.
// Each accepted connection gets one goroutine (ours, see listener.serve) on which mochi does all
// of that client's reading, decoding and processing: CONNECT, the session, then the read loop,
// synchronously, packet by packet. mochi adds a writer goroutine per client that drains that
// client's bounded queue (MaxPendingWrites). Delivery to subscribers never blocks: a message for
// a client whose queue or QoS window is full is dropped for that client and counted.
//
// A Handle callback runs on the goroutine of the client that published the message, inside its
// read loop, before the broker acknowledges the message (PUBACK/PUBREC) and before it forwards
// it to subscribers. Callbacks matching one message run one after the other, in registration
// order; messages from one client reach a callback in the order that client sent them, messages
// from different clients concurrently. Consequences:
//
//   - Blocking in a callback is backpressure on that one publisher, and that is by design: the
//     broker reads nothing more from it, the device gets no PUBACK until the callback returns
//     (so a consumer that makes a report durable before returning gives the device
//     at-least-once delivery), and once the device's own window fills it stops sending. Other
//     clients are not affected. A callback must still return eventually: Run waits for it on
//     stop.
//   - A QoS 1 message may be delivered again (the device resends it when no PUBACK came), so
//     consumers must tolerate duplicates. A callback that waits long (for room, say) should be
//     registered with HandleFrom and give up once its Publisher is Closed: the device has
//     reconnected and sent the message again, and taking the old copy later would put it
//     after what the device sent since.
//   - A callback may call Publish and Handle. It must not keep payload beyond the call unless
//     it copies it, and must not modify it (subscribers are sent the same bytes).
//   - Will messages reach callbacks too: on the goroutine of the connection that ended, or for a
//     delayed will on a goroutine of its own, started from mochi's event loop.
//   - A callback that panics is treated like any panic while serving the publisher: the
//     publisher's connection is closed without a PUBACK, its session dropped, the panic counted.
//     On mochi's event loop (delayed wills) the panic is recovered and counted.
//
// Publish and Handle are safe for concurrent use from any goroutine, before, during and after Run.
// Publish never blocks on a client. Consumers never see the broker's own Publish.
//
// # Topics the agent publishes on often
//
// A Topic (Broker.Topic) is a topic name checked once, that remembers whether a client
// subscribed to it, so a consumer can skip building messages nobody would receive: asking mochi's
// topic index costs a walk and four maps per question. The answer is kept against an epoch that
// moves whenever subscriptions may have been added (see subscribed); a client holding its SUBACK
// is always seen. A client message on a consumer's topic nobody subscribed to is acknowledged as
// usual but not handed to mochi's forwarding, which would walk the index only to find nobody.
//
// # Containing panics
//
// mochi has no recover in its serving code, and at least one malformed packet (an MQTT 5
// SUBSCRIBE whose options byte is missing, mochi-mqtt/server#501) panics it, which would end the
// whole agent. Our listener runs each connection's EstablishFn under recover. On a panic it logs
// (with the client's remote address and id), counts (tether_edge_mqtt_panics_total and
// rejected_total{reason="panic"}), closes the connection, and finishes what the panic skipped:
// mochi's deferred code has already stopped the client (closing the socket and ending its writer
// goroutine) and decremented its client count, but its non-deferred clean-up has not run, so the
// broker publishes the client's will and drops its session (inflight messages, subscriptions in
// the topic index, the Server.Clients entry) itself. The client's session is dropped even if it
// asked for a persistent one.
//
// # mochi internals relied on
//
// Checked against v2.7.9; re-check them when upgrading mochi.
//
//   - attachClient defers the client's Stop, the ClientsWg.Done and the decrement of
//     Info.ClientsConnected, and does the session clean-up (UnsubscribeClient, ClearInflights,
//     Clients.Delete) after its read loop without defer; containPanic does that part.
//   - The client's net.Conn is the one our listener passed to EstablishFn (Client.Net.Conn), so
//     hooks find our per-connection state by type assertion, and mochi applies its keepalive
//     through SetDeadline before each read.
//   - ReadFixedHeader compares MaximumPacketSize with the remaining length plus one before the
//     body is allocated (mochi-mqtt/server#502); mochiPacketLimit adjusts for the length bytes.
//   - Hooks are called: OnSubscribe before the filters are validated and subscribed (an empty
//     filter is refused in SUBACK), OnSubscribed after they are in the index and before the
//     SUBACK is written, OnSessionEstablish and OnSessionEstablished around the inheritance of
//     a session's subscriptions, OnPacketEncode before every write, OnPublish before the
//     PUBACK, OnClientExpired before an expired session is deleted (mochi leaves its
//     subscriptions in the index; the hook removes them).
//   - OnPublish returning packets.CodeSuccessIgnore makes mochi acknowledge the message (and
//     retain it if asked) without forwarding it to subscribers.
//   - With PassiveClientDisconnect, DisconnectClient writes DISCONNECT but does not close;
//     OnPacketSent closes (MQTT 3.1.1) or closes after disconnectLinger (MQTT 5). mochi writes
//     the DISCONNECT to 3.1.1 clients too, which that version does not allow (libmosquitto
//     clients exit on it); conn.Write leaves it off the wire.
//   - "inline" is mochi's own client id for Publish; clients may not use it.
//   - Clients.GetByListener (used by mochi's own shutdown callback) read-locks twice and can
//     deadlock against a concurrent Add/Delete; the stop lists clients with Clients.GetAll.
//
// # Caveats
//
//   - No authentication or authorisation: the broker is meant to listen on loopback, as a local
//     mosquitto does. Bind it elsewhere only behind something that authenticates.
//   - Only panics on a connection's goroutine are contained. mochi's event loop (session expiry,
//     retained and inflight expiry, $SYS topics) runs without recover.
//   - An oversize packet ends the connection without an MQTT 5 DISCONNECT 0x95: mochi closes
//     before any hook can write one. MQTT 5 clients are told the limit in CONNACK.
//   - A will delay is not honoured for a client whose connection panicked: its will goes at once.
//   - MaxClients is checked by mochi before the new client is counted, so clients connecting at
//     the same instant can exceed it by a few; MaxPendingConnections bounds sockets in any case.
//   - Clients with keepalive 0 are never timed out for silence; writes to every client are still
//     bounded by WriteTimeout.
package broker
