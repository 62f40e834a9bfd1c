package twin

import (
	"encoding/json"
	"fmt"
)

// DeviceSpec is the part of a KubeEdge v1beta1 Device's spec that the twin rules read: its
// model and its properties' desired values. The edge's twin engine applies it; the cloud API
// checks it against the model with the same rules (CheckValue, ValidKey).
type DeviceSpec struct {
	DeviceModelRef *struct {
		Name string `json:"name"`
	} `json:"deviceModelRef"`
	Properties []DeviceProperty `json:"properties"`
}

// DeviceProperty is one entry of DeviceSpec.Properties.
type DeviceProperty struct {
	Name    string `json:"name"`
	Desired *struct {
		Value    string            `json:"value"`
		Metadata map[string]string `json:"metadata"`
	} `json:"desired"`
}

// ModelTypes returns a DeviceModel's property types by property name; raw is the DeviceModel's
// JSON. Properties without a name are left out.
func ModelTypes(raw []byte) (map[string]string, error) {
	var obj struct {
		Spec struct {
			Properties []struct {
				Name string `json:"name"`
				Type string `json:"type"`
			} `json:"properties"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("device model: %w", err)
	}
	types := make(map[string]string, len(obj.Spec.Properties))
	for _, p := range obj.Spec.Properties {
		if p.Name != "" {
			types[p.Name] = p.Type
		}
	}
	return types, nil
}
