package engine

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/tetherhub/tether/twin"
)

// deviceSpec is what the engine reads of a Device (KubeEdge v1beta1); everything else in the
// object is left to the mappers that read it from the metaserver.
type deviceSpec struct {
	Namespace, Name string
	UID             string // metadata.uid: a Device deleted and made again under its name has a new one
	Description     string // annotation description, for membership messages
	Model           string // namespace/name of its DeviceModel
	Rev             uint64 // the cloud revision that wrote this form of the Device
	Desired         map[string]desiredProp
}

type desiredProp struct {
	Value     string
	Timestamp int64 // desired.metadata.timestamp (Unix ms), 0 if absent
}

// descriptionAnnotation carries a Device's description into membership messages; v1beta1
// Devices have no description field.
const descriptionAnnotation = "devices.kubeedge.io/description"

func parseDevice(raw []byte, rev uint64) (deviceSpec, error) {
	var obj struct {
		Metadata struct {
			Name        string            `json:"name"`
			Namespace   string            `json:"namespace"`
			UID         string            `json:"uid"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec twin.DeviceSpec `json:"spec"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return deviceSpec{}, fmt.Errorf("device: %w", err)
	}
	d := deviceSpec{
		Namespace:   obj.Metadata.Namespace,
		Name:        obj.Metadata.Name,
		UID:         obj.Metadata.UID,
		Description: obj.Metadata.Annotations[descriptionAnnotation],
		Rev:         rev,
		Desired:     map[string]desiredProp{},
	}
	if ref := obj.Spec.DeviceModelRef; ref != nil && ref.Name != "" {
		d.Model = d.Namespace + "/" + ref.Name
	}
	for _, p := range obj.Spec.Properties {
		if p.Desired == nil || p.Name == "" {
			continue
		}
		ts, _ := strconv.ParseInt(p.Desired.Metadata[twin.MetaTimestamp], 10, 64)
		d.Desired[p.Name] = desiredProp{Value: p.Desired.Value, Timestamp: max(ts, 0)}
	}
	return d, nil
}

// desired builds the twin rules' view of a Device's desired state, typed by its model.
func (s deviceSpec) desired(types map[string]string) twin.Desired {
	d := twin.Desired{Version: twin.Version{Cloud: s.Rev}, Props: make(map[string]twin.DesiredValue, len(s.Desired))}
	for name, p := range s.Desired {
		d.Props[name] = twin.DesiredValue{Value: p.Value, Type: types[name], Timestamp: p.Timestamp}
	}
	return d
}
