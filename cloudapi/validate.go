package cloudapi

import (
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
	"github.com/tetherhub/tether/twin"
)

// kubeEdgeShape checks the fields of the KubeEdge kinds that tether reads, so that a wrong type
// is refused at the door instead of confusing routing or twins later.
type kubeEdgeShape struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     *struct {
		NodeName       string `json:"nodeName"`
		DeviceModelRef *struct {
			Name string `json:"name"`
		} `json:"deviceModelRef"`
		Properties []struct {
			Name    string `json:"name"`
			Desired *struct {
				Value    string            `json:"value"`
				Metadata map[string]string `json:"metadata"`
			} `json:"desired"`
			Type string `json:"type"`
		} `json:"properties"`
		Nodes       []string          `json:"nodes"`
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"spec"`
}

// maxObjectBytes bounds a stored object, however it was made.
const maxObjectBytes = 3 << 20

// refusedInput reports whether a write failed on what it was given (400, 422 or 413), not on
// the store: for an edge's report, one that sending again cannot mend.
func refusedInput(err error) bool {
	return apierrors.IsBadRequest(err) || apierrors.IsInvalid(err) || apierrors.IsRequestEntityTooLargeError(err)
}

// validate checks an object about to be stored and returns its JSON. Decoding errors (a field
// of the wrong type) are 400s; rule violations (a bad name or label) are 422s, as in Kubernetes;
// an object over maxObjectBytes is a 413.
func validate(reg *resource.Registry, info resource.Info, ns, name string, obj object) ([]byte, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, kubeapi.BadRequest("the object cannot be encoded: %v", err)
	}
	if len(raw) > maxObjectBytes {
		// Whatever made it (a body, a patch, an edge's reports), it must still fit the frame an
		// edge reads and a body the API accepts.
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the %s would be %d bytes, over the limit of %d", info.Kind, len(raw), maxObjectBytes))
	}
	// Whatever made it (a body, a patch, a report), a shape that would cost the typed decodes
	// below gigabytes is refused first; it is never stored, so no stored object is too
	// complex to decode again.
	if err := kubeapi.CheckJSONShape(raw); err != nil {
		return nil, err
	}
	if err := kubeapi.CheckQuantities(info.Kind, obj); err != nil {
		return nil, kubeapi.BadRequest("the object is not a valid %s: %v", info.Kind, err)
	}
	var meta metav1.ObjectMeta
	if typed, ok := kubeapi.BuiltinType(info); ok {
		if err := json.Unmarshal(raw, typed); err != nil {
			return nil, kubeapi.BadRequest("the object is not a valid %s: %s", info.Kind, kubeapi.DecodeProblem(err))
		}
		meta = *objectMeta(typed)
	} else {
		var shape kubeEdgeShape
		if err := json.Unmarshal(raw, &shape); err != nil {
			return nil, kubeapi.BadRequest("the object is not a valid %s: %s", info.Kind, kubeapi.DecodeProblem(err))
		}
		meta = shape.Metadata
		if info.Kind == "Device" && (shape.Spec == nil || shape.Spec.DeviceModelRef == nil || shape.Spec.DeviceModelRef.Name == "") {
			return nil, kubeapi.Invalid(info.Kind, name, "spec.deviceModelRef.name: Required value")
		}
	}
	errs := apivalidation.ValidateObjectMeta(&meta, info.Namespaced, nameRule(info), field.NewPath("metadata"))
	if info.Kind == "Pod" || info.Kind == "Device" {
		var spec struct {
			Spec struct {
				NodeName string `json:"nodeName"`
			} `json:"spec"`
		}
		json.Unmarshal(raw, &spec)
		if n := spec.Spec.NodeName; n != "" {
			for _, msg := range apivalidation.NameIsDNSSubdomain(n, false) {
				errs = append(errs, field.Invalid(field.NewPath("spec", "nodeName"), n, msg))
			}
		}
	}
	if len(errs) > 0 {
		return nil, kubeapi.Invalid(info.Kind, name, "%s", errs.ToAggregate().Error())
	}
	// The index must be able to route what is stored; refusing here keeps a damaged object out.
	if _, err := index.Decode(reg, store.KV{Key: storeKey(info, ns, name), Value: raw}); err != nil {
		return nil, kubeapi.BadRequest("the object cannot be routed: %v", err)
	}
	return raw, nil
}

func nameRule(info resource.Info) apivalidation.ValidateNameFunc {
	switch info.Kind {
	case "Service":
		return apivalidation.NameIsDNS1035Label
	case "Namespace":
		return apivalidation.ValidateNamespaceName
	}
	return apivalidation.NameIsDNSSubdomain
}

// objectMeta returns the metadata of one of the typedSchema kinds.
func objectMeta(typed any) *metav1.ObjectMeta {
	return typed.(metav1.ObjectMetaAccessor).GetObjectMeta().(*metav1.ObjectMeta)
}

// checkDesired refuses a Device (raw, as validated) that its edge would refuse to apply: the
// edge refuses a Device's whole desired state for one property whose name is not a twin key or
// whose desired value is not of the type its DeviceModel gives it (twin.ApplyDesired), and a
// write the API accepted would fail there unseen. The model is read from snap; while it does
// not exist the Device is accepted, as the edge waits for it. Values are checked with the
// edge's own rule (twin.CheckValue): a property the model does not name is a STRING, and an
// empty value sets nothing.
func checkDesired(snap index.Snapshot, ns, name string, raw []byte) error {
	var dev struct {
		Spec twin.DeviceSpec `json:"spec"`
	}
	if err := json.Unmarshal(raw, &dev); err != nil {
		return kubeapi.BadRequest("the object is not a valid Device: %s", kubeapi.DecodeProblem(err))
	}
	ref := dev.Spec.DeviceModelRef
	if ref == nil || ref.Name == "" {
		return nil
	}
	stored := snap.Get(resource.StoreKey(resource.Key{Resource: resource.DeviceModels, Namespace: ns, Name: ref.Name}))
	if stored == nil {
		return nil
	}
	types, err := twin.ModelTypes(stored.Raw)
	if err != nil {
		return nil // a model the API took before these checks; the edge will say what is wrong
	}
	var errs field.ErrorList
	props := field.NewPath("spec", "properties")
	for i, p := range dev.Spec.Properties {
		if !twin.ValidKey(p.Name) {
			errs = append(errs, field.Invalid(props.Index(i).Child("name"), p.Name, "a twin property name must be 1-128 characters from a-z A-Z 0-9 - _ . , : / @ #"))
			continue
		}
		if p.Desired == nil || p.Desired.Value == "" {
			continue
		}
		if err := twin.CheckValue(types[p.Name], p.Desired.Value); err != nil {
			errs = append(errs, field.Invalid(props.Index(i).Child("desired", "value"), p.Desired.Value,
				fmt.Sprintf("property %q of DeviceModel %q: %v", p.Name, ref.Name, err)))
		}
	}
	if len(errs) > 0 {
		// With the causes, which kubectl prints (it shows only "is invalid" without them).
		return apierrors.NewInvalid(schema.GroupKind{Group: resource.GroupDevices, Kind: "Device"}, name, errs)
	}
	return nil
}
