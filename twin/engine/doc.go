// Package engine is the edge's device twin engine: it serves the KubeEdge device topics of SPEC §6
// on the embedded MQTT broker, keeps every device's twin (package twin's rules) durable in the
// edge store, and sends twin and state reports and uploads up through the store's outbox.
//
// It is a package of its own, not part of twin, so that twin stays pure (the cloud imports it
// for MergeStatus and the report codecs) and this one may depend on the edge store and the
// broker's interfaces.
//
// # Flow
//
// Device → edge: the broker runs the handlers on the publisher's connection goroutine, before
// the PUBACK. A twin/update is decoded and checked (twin.DecodeUpdate), applied to the device's
// twin (twin.ApplyReport, typed by its DeviceModel), and, if it changed anything, the new twin
// and a report of it are written in one store transaction (edgestore.WriteTwin, which the
// store's single writer commits together with everything else queued, many devices per fsync).
// Only then is the success result published, followed by the document and, if some expected
// value still differs from its actual, the delta (each only if a client subscribed to its topic). Any error is answered on the result topic with
// its code (400 bad input or a twin too large for the cloud, 404 unknown device, 500 storage or
// device limit) and changes nothing.
// state/update follows the same path. twin/get and membership/get are answered from memory,
// which mirrors the store (it changes only after a commit).
//
// Cloud → edge: the engine subscribes to the store's commits and notes which Devices and
// DeviceModels changed (a set of keys, so a burst costs one pass per key). Its Run goroutine
// reads each key's current form from the store and applies the Device's desired values
// (twin.ApplyDesired with the Device's cloud revision as version), stores the twin with a report
// (the cloud sees observedDesired), and publishes document and delta. A Device that appears or
// disappears publishes membership/updated. At start, Run reconciles every stored Device with its
// stored twin, so a crash between the hub's commit and the engine's write loses nothing.
//
// The edge's copy of each Device shows its twins and state (status.go): the cloud does not send
// that status back down, so after each stored change, and after the cloud's version of the Device
// replaces the edge's copy, the engine writes them into the stored Device with the cloud's merge
// rules, at most one commit per Config.StatusEvery and Config.StatusRate devices a second, the
// longest waiting first (edgestore.SetStatus). The
// metaserver serves it, so kubectl on the edge host reads what the devices last reported, online
// or offline. The engine ignores these writes when it follows the store's changes.
//
// Reports are snapshots (twin.TwinReport: the whole twin; twin.StateReport), so the store may
// replace a device's unsent report with the newer one in place (counted in
// tether_edge_twin_outbox_coalesced_total): the latest value of every property wins, and one
// device costs the outbox at most one unsent entry of each kind. Uploads are never replaced: each
// is appended and sent in order.
//
// # Concurrency
//
// The broker calls the handlers on many connection goroutines, and each handles its message
// there: decoding, the twin rules, the store write and the encoding of the answers. A waiting
// connection goroutine holds a 32 KiB stack whatever the handler does, because mochi's own frames
// down to the handler take about 19 KiB; that work fits in what is left of those 32 KiB
// (TestHandlerStack), so it costs no stack of its own, and as many changes as there are waiting
// devices share each commit. Publishing an answer through mochi would not fit: it is queued to
// one of a few publisher goroutines, the same one for every message of a device, so a device's
// messages keep their order (a full queue holds the handler). Run is one goroutine. Engine.mu
// guards the device and model maps; each device has its own mu, held while one change of it is
// applied, stored and answered, so one device's changes are ordered and different devices'
// proceed in parallel (and share commits). Lock order: Engine.mu before device.mu, and Engine.mu
// is never held while waiting for a device's mu or the store.
//
// A message for a topic no client subscribed to (broker.Subscribed: often the document, which
// few mappers read) is neither encoded nor published, and is counted in
// tether_edge_twin_unsubscribed_total.
//
// A handler blocks its publisher (no PUBACK) until the store has committed: that is the
// backpressure MQTT offers, and it is what makes a success result, or for uploads the PUBACK,
// mean "durable". Until Run has loaded the stored devices, handlers wait.
//
// # Decisions where the SPEC is silent
//
//   - Results, deltas, documents and membership messages are published at QoS 1 (Config.QoS).
//     A result is published after the commit and may reach the device before or after the
//     PUBACK of the update it answers (MQTT orders neither against the other).
//   - A device beyond Config.MaxDevices is not served: its messages are answered 500 with a
//     reason, and it is served once a device leaves and it changes again.
//   - membership/get for another node's name is not answered (this broker serves one node).
//   - A Device's description for membership messages is its annotation
//     devices.kubeedge.io/description (v1beta1 Devices have no description field).
//   - An upload refused by a full outbox is retried, holding the publisher, for up to
//     Config.UploadHold (30 s); then it is refused without a PUBACK (MQTT 5: reason 0x97; 3.1.1:
//     the connection is closed) and the device sends it again. It is never dropped silently.
//   - A desired state older than the twin's (possible only when the cloud's store was replaced)
//     is taken as it is: the edge store, which orders versions itself, holds the cloud's word.
package engine
