package engine

import (
	"strings"

	"github.com/tetherhub/tether/broker"
)

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
	suffixUpdateResult   = "/twin/update/result"
	suffixDelta          = "/twin/update/delta"
	suffixDocument       = "/twin/update/document"
	suffixMembershipUpd  = "/membership/updated"
	suffixMembershipGet  = "/membership/get"
	maxNamespaceOrDevice = 253 // a Kubernetes name; longer cannot be a device of ours
)

// deviceOf returns the device id of a device topic ($hw/events/device/{ns}/{name}/...): a
// substring of topic, so finding the device costs no allocation.
func deviceOf(topic string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(topic, devicePrefix)
	if !ok {
		return "", false
	}
	ns, after, ok1 := strings.Cut(rest, "/")
	name, _, ok2 := strings.Cut(after, "/")
	if !ok1 || !ok2 || ns == "" || name == "" || len(ns) > maxNamespaceOrDevice || len(name) > maxNamespaceOrDevice {
		return "", false
	}
	return rest[:len(ns)+1+len(name)], true
}

// deviceTopics are the topics the engine publishes a device's messages on for every change, made
// once per device: each remembers whether a client subscribed to it (broker.Topic).
type deviceTopics struct {
	updateResult, document, delta *broker.Topic
}

func (e *Engine) topicsOf(id string) (deviceTopics, error) {
	var t deviceTopics
	for _, x := range []struct {
		t      **broker.Topic
		suffix string
	}{
		{&t.updateResult, suffixUpdateResult}, {&t.document, suffixDocument}, {&t.delta, suffixDelta},
	} {
		var err error
		if *x.t, err = e.broker.Topic(devicePrefix + id + x.suffix); err != nil {
			return deviceTopics{}, err
		}
	}
	return t, nil
}

// nodeOf returns the node of $hw/events/node/{node}/membership/get.
func nodeOf(topic string) string {
	rest, _ := strings.CutPrefix(topic, nodePrefix)
	node, _, _ := strings.Cut(rest, "/")
	return node
}
