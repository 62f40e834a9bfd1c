package kubeapi

import (
	"encoding/json"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/tetherhub/tether/resource"
)

// Field selectors come in two sorts. metadata.name, metadata.namespace and spec.nodeName are in
// the Meta every Storage computes for its objects, so a Storage filters by them while it lists.
// The object fields (a Pod's status.phase, a Secret's type) are read from the object itself,
// here: a Storage's Meta need not carry them (the edge's does not), so ListOptions.Matches lets
// through what it cannot judge, and the Handler (for lists) and the Cache (for watches) finish
// the selection on the objects.

// SelectableFields lists the field selector keys a kind supports: those of Kubernetes that
// matter to tether.
func SelectableFields(info resource.Info) map[string]bool {
	f := map[string]bool{"metadata.name": true, "metadata.namespace": true}
	switch info.GroupResource() {
	case resource.Pods:
		f["spec.nodeName"] = true
		f["status.phase"] = true
	case resource.Devices:
		f["spec.nodeName"] = true
	case resource.Secrets:
		f["type"] = true
	}
	return f
}

// objectField is the one object field of a kind, or "" for kinds that have none.
func objectField(groupResource string) string {
	switch groupResource {
	case resource.Pods:
		return "status.phase"
	case resource.Secrets:
		return "type"
	}
	return ""
}

// selectable is what the object fields and a continue token are read from.
type selectable struct {
	Metadata struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"metadata"`
	Type   string `json:"type"`
	Status struct {
		Phase string `json:"phase"`
	} `json:"status"`
}

func readSelectable(obj []byte) selectable {
	var s selectable
	json.Unmarshal(obj, &s) // a field of another type reads as empty, as a missing one does
	return s
}

// value is the object field of groupResource, with the defaults Kubernetes stores: a Pod
// without a phase is Pending (it has not started; kubectl shows it so) and a Secret without a
// type is Opaque.
func (s selectable) value(groupResource string) string {
	switch groupResource {
	case resource.Pods:
		if s.Status.Phase == "" {
			return "Pending"
		}
		return s.Status.Phase
	case resource.Secrets:
		if s.Type == "" {
			return "Opaque"
		}
		return s.Type
	}
	return ""
}

// ObjectFields returns the object fields of an object of groupResource (nil for kinds that have
// none). A Storage that can afford to read them puts them in Meta.Fields, in Event.Prev too;
// one that does not leaves the Handler and the Cache to read them.
func ObjectFields(groupResource string, obj []byte) map[string]string {
	f := objectField(groupResource)
	if f == "" {
		return nil
	}
	return map[string]string{f: readSelectable(obj).value(groupResource)}
}

// selectsObject reports whether the field selector of o names the object field of
// groupResource, which only the object itself can answer.
func (o ListOptions) selectsObject(groupResource string) bool {
	f := objectField(groupResource)
	if f == "" || o.Fields == nil || o.Fields.Empty() {
		return false
	}
	for _, r := range o.Fields.Requirements() {
		if r.Field == f {
			return true
		}
	}
	return false
}

// field returns a selectable field of m; known is false for an object field m does not carry.
func (m Meta) field(name string) (v string, known bool) {
	switch name {
	case "metadata.name":
		return m.Name, true
	case "metadata.namespace":
		return m.Namespace, true
	}
	v, ok := m.Fields[name]
	if !ok && isObjectField(name) {
		return "", false
	}
	return v, true
}

func isObjectField(name string) bool {
	return name == "status.phase" || name == "type"
}

// withFields returns m with fields added to a copy of its Fields.
func (m Meta) withFields(fields map[string]string) Meta {
	out := make(map[string]string, len(m.Fields)+len(fields))
	for k, v := range m.Fields {
		out[k] = v
	}
	for k, v := range fields {
		out[k] = v
	}
	m.Fields = out
	return m
}

// hasObjectField reports whether m carries the object field of groupResource (or the kind has
// none).
func (m Meta) hasObjectField(groupResource string) bool {
	f := objectField(groupResource)
	if f == "" {
		return true
	}
	_, ok := m.Fields[f]
	return ok
}

// matchFields checks the requirements of sel that m can answer; the others pass.
func matchFields(sel fields.Selector, m Meta) bool {
	for _, r := range sel.Requirements() {
		if v, known := m.field(r.Field); known && !matchRequirement(r, v) {
			return false
		}
	}
	return true
}

// matchObject checks the requirements of sel on the object field of groupResource against the
// object; the others pass (the storage checked them).
func matchObject(sel fields.Selector, groupResource string, s selectable) bool {
	f := objectField(groupResource)
	for _, r := range sel.Requirements() {
		if r.Field == f && !matchRequirement(r, s.value(groupResource)) {
			return false
		}
	}
	return true
}

func matchRequirement(r fields.Requirement, v string) bool {
	switch r.Operator {
	case selection.Equals, selection.DoubleEquals:
		return v == r.Value
	case selection.NotEquals:
		return v != r.Value
	}
	return false // the parser makes no other operators
}
