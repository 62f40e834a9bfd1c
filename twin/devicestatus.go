package twin

import "encoding/json"

// The cloud writes reports into Device.status, and the edge writes its own twins into its copy
// of the Device; both go through these two functions, so the two copies agree on what a report
// means. status is the Device's decoded status object (a JSON object as encoding/json decodes
// it); each function changes it in place and reports whether it changed anything.

// PutTwins merges snapshot, a whole twin in the form of status.twins (Reported, or a decoded
// TwinReport), into status.twins with MergeSnapshot.
func PutTwins(status map[string]any, snapshot []StatusTwin) bool {
	stored := statusTwins(status["twins"])
	merged := MergeSnapshot(stored, snapshot)
	if _, had := status["twins"]; had && StatusEqual(stored, merged) {
		return false
	}
	status["twins"] = merged
	return true
}

// PutState sets status.state and status.lastOnlineTime from s; an empty field of s leaves its
// counterpart as it is.
func PutState(status map[string]any, s DeviceState) bool {
	changed := false
	if s.State != "" && status["state"] != s.State {
		status["state"], changed = s.State, true
	}
	if s.LastOnline != "" && status["lastOnlineTime"] != s.LastOnline {
		status["lastOnlineTime"], changed = s.LastOnline, true
	}
	return changed
}

// statusTwins reads status.twins as stored. Entries that do not parse are dropped: the next
// snapshot rewrites the list whole.
func statusTwins(v any) []StatusTwin {
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var out []StatusTwin
	if json.Unmarshal(b, &out) != nil {
		return nil
	}
	return out
}
