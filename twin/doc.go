// Package twin owns the device-twin rules and the MQTT payload codecs of
// SPEC §6: what a device may write, how versions order writes, what the edge
// answers, and what the cloud stores in Device.status.twins. It is pure: no
// I/O, no MQTT, no storage, no clock, no randomness. Times (Unix ms) and event
// ids come in as arguments; the topic handlers, durability and the outbox are
// built on top of it elsewhere.
//
// # What it owns
//
//   - Decoders for everything a device sends (DecodeUpdate, DecodeGet,
//     DecodeStateUpdate, DecodeMembershipGet). Each is a network input: bounded
//     by Limits, never panics, and fails with an *Error carrying the result code
//     (400) and a one-line reason fit for the reason field. DecodeUpdate, run on
//     every report, first tries a reader of the plain shape mappers send
//     (decodefast.go), which gives up on anything else; encoding/json decodes
//     the rest and produces every error (fuzzed against each other).
//   - The twin state (Twin, Property, Value, Version) and its rules:
//     ApplyReport (device → edge), ApplyDesired (cloud spec → edge), Delta,
//     ApplyState, and on the cloud side Reported and MergeStatus.
//   - Encoders for everything the edge sends, producing KubeEdge's JSON shapes
//     so existing mappers work unchanged, and NewEventID. The ones sent on every
//     update (result, document, the report) are hand-written appenders that
//     produce encoding/json's exact bytes (append.go, checked against it), and
//     write straight from the state types, building no wire values
//     (appendtwin.go, checked against the wire types).
//   - The payloads of device reports going up (report.go): TwinReport and
//     StateReport are snapshots of a device, so the latest one alone says what
//     the cloud should hold; MergeSnapshot applies one to Device.status.twins.
//
// # How a handler uses it
//
//	upd, err := twin.DecodeUpdate(payload, lim)
//	if err != nil { publish(result, twin.EncodeError(upd.EventID, twin.CodeOf(err), err.Error(), now)) }
//	next, changed, err := twin.ApplyReport(cur, upd, modelTypes, now)
//	// on error: the same error result; cur is untouched
//	// store next (and twin.Reported(next) in the outbox) durably, then:
//	publish(result, twin.EncodeResult(upd, next, now))
//	if len(changed) > 0 { publish(document, twin.EncodeDocument(upd.EventID, changed, now)) }
//	if b, ok := twin.EncodeDelta(newID(), next, now); ok { publish(delta, b) }
//
// # Concurrency
//
// There is no shared state: every function works only on its arguments and
// may be called from any number of goroutines. Apply* never modify the Twin
// they are given; they return a new one, which may share *Value pointers with
// the old, so Values must be treated as immutable. Serialising updates of one
// device (read, apply, store) is the caller's job.
//
// # Decisions where KubeEdge and the SPEC are silent
//
//   - expected sent by a device is ignored (the cloud alone writes it), not
//     rejected, so a mapper echoing a stale expected does not lose its actual.
//   - A device may not report a property outside the DeviceModel unless it is
//     already in the twin (KubeEdge would add it): status.twins must name model
//     properties, and the twin of a device stays bounded.
//   - A report equal to the stored actual is no change (no version bump, no
//     write, nothing upstream). KubeEdge rewrites and resends it every poll.
//   - null deletes the actual of an optional property; deleting an absent
//     property succeeds (redelivery); a cloud-declared property is not optional.
//   - Value checks: INT is a base-10 int64; FLOAT and DOUBLE anything
//     strconv.ParseFloat accepts at 64 bits; BOOLEAN exactly "true" or
//     "false"; STRING, STREAM and BYTES anything (mappers send bytes as an
//     opaque string, not necessarily base64). See CheckValue.
//   - Values are limited in characters (Unicode code points), not bytes, and
//     any character is allowed. KubeEdge also restricted values to the key's
//     character set; the SPEC does not.
//   - The edge stamps values with its own time, not the device's, and a
//     property's actual timestamp never goes backwards, so MergeStatus in the
//     cloud, which keeps the newer timestamp, cannot drop a newer report.
//   - ApplyDesired takes the whole spec with one version and is all or nothing;
//     an older spec is refused whole (ErrStale, 409). An empty desired value
//     means "no desired", because v1beta1 sends "" for an unset desired.
//   - The state result names the time lastOnlineTime (SPEC §6); KubeEdge's edge
//     wrote last_online there. Membership items keep KubeEdge's last_online.
//
// # Caveats
//
//   - JSON field names are matched case-insensitively (encoding/json), so
//     "Twin" is read as "twin". Unknown fields are ignored, as KubeEdge does:
//     mappers send fields nobody reads (attributes: null in state updates).
//   - Device.status.twins metadata values are strings (the CRD says so), so
//     the timestamp is a decimal string there and a number in MQTT payloads.
//   - MergeStatus cannot remove a reported value the device deleted; see it.
package twin
