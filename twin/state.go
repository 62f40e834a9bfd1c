package twin

import "time"

// DeviceState is a device's reported state as the edge keeps it; it becomes
// Device.status.state and status.lastOnlineTime in the cloud.
type DeviceState struct {
	State      string `json:"state,omitempty"`          // one of the State constants; "" until first reported
	LastOnline string `json:"lastOnlineTime,omitempty"` // RFC 3339 UTC of the last online or ok report
}

// ApplyState applies a decoded state update. LastOnline moves to now only for
// online and ok: offline, unknown and unhealthy say nothing about when the
// device was last reachable, so the previous time is kept. The time has second
// precision (RFC 3339), so repeated reports within a second are no change.
func ApplyState(cur DeviceState, u StateUpdate, now int64) DeviceState {
	next := cur
	next.State = u.State
	if u.State == StateOnline || u.State == StateOK {
		next.LastOnline = FormatTime(now)
	}
	return next
}

// FormatTime formats a Unix-ms time as lastOnlineTime is written: RFC 3339, UTC.
func FormatTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}
