package engine

import "strings"

// The topics of SPEC §6. {id} is {namespace}/{name}: two levels.
const (
	filterTwinUpdate     = "$hw/events/device/+/+/twin/update"
	filterTwinGet        = "$hw/events/device/+/+/twin/get"
	filterStateUpdate    = "$hw/events/device/+/+/state/update"
	filterMembershipGet  = "$hw/events/node/+/membership/get"
	filterUpload         = "$hw/events/upload/#"
	topicUploadRecords   = "SYS/dis/upload_records"
	devicePrefix         = "$hw/events/device/"
	nodePrefix           = "$hw/events/node/"
	suffixResult         = "/result"
	suffixDelta          = "/twin/update/delta"
	suffixDocument       = "/twin/update/document"
	suffixMembershipUpd  = "/membership/updated"
	suffixMembershipGet  = "/membership/get"
	maxNamespaceOrDevice = 253 // a Kubernetes name; longer cannot be a device of ours
)

// deviceOf returns the device id of a device topic ($hw/events/device/{ns}/{name}/...).
func deviceOf(topic string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(topic, devicePrefix)
	if !ok {
		return "", false
	}
	ns, rest, ok1 := strings.Cut(rest, "/")
	name, _, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || ns == "" || name == "" || len(ns) > maxNamespaceOrDevice || len(name) > maxNamespaceOrDevice {
		return "", false
	}
	return ns + "/" + name, true
}

// nodeOf returns the node of $hw/events/node/{node}/membership/get.
func nodeOf(topic string) string {
	rest, _ := strings.CutPrefix(topic, nodePrefix)
	node, _, _ := strings.Cut(rest, "/")
	return node
}

func deviceTopic(id, suffix string) string { return devicePrefix + id + suffix }

func membershipUpdatedTopic(node string) string { return nodePrefix + node + suffixMembershipUpd }
