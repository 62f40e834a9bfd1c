package cloudapi

import (
	"encoding/base64"
	"maps"
	"slices"

	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/resource"
)

// mergeStringData folds a Secret's stringData into its data, as the Kubernetes API server
// does on every write: each entry is base64-encoded into data under the same key (replacing
// what data held there), and stringData is dropped, so it is never stored nor sent to an edge.
// Other kinds are left alone.
func mergeStringData(info resource.Info, obj object) error {
	if info.GroupResource() != resource.Secrets {
		return nil
	}
	raw, ok := obj["stringData"]
	if !ok {
		return nil
	}
	delete(obj, "stringData")
	if raw == nil {
		return nil
	}
	sd, ok := raw.(map[string]any)
	if !ok {
		return kubeapi.BadRequest("the object is not a valid Secret: stringData: must be an object")
	}
	if len(sd) == 0 {
		return nil
	}
	data, ok := obj["data"].(map[string]any)
	if !ok {
		if obj["data"] != nil {
			return kubeapi.BadRequest("the object is not a valid Secret: data: must be an object")
		}
		data = make(map[string]any, len(sd))
		obj["data"] = data
	}
	for _, k := range slices.Sorted(maps.Keys(sd)) {
		v, ok := sd[k].(string)
		if !ok {
			return kubeapi.BadRequest("the object is not a valid Secret: stringData.%s: must be a string", k)
		}
		data[k] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	return nil
}
