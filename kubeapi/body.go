package kubeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/tetherhub/tether/internal/jsonkind"
	"github.com/tetherhub/tether/resource"
)

// DecodeBody turns a create or update body into the JSON of one object. JSON is taken as it
// is (after a check that it is one object); YAML, which the Kubernetes API server also accepts
// (`curl --data-binary @pod.yaml -H 'Content-Type: application/yaml'`), is converted. contentType
// "" means JSON. Every refusal is a 400 or 415 Status.
func DecodeBody(contentType string, body []byte) ([]byte, error) {
	mt := "application/json"
	if contentType != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(contentType); err != nil {
			return nil, unsupportedMedia(contentType)
		}
	}
	switch mt {
	case "application/json", "*/*":
	case "application/yaml", "application/x-yaml", "text/yaml":
		if err := checkYAMLShape(body); err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSON(body)
		if err != nil {
			return nil, BadRequest("the request body is not valid YAML: %v", err)
		}
		body = j
	default:
		return nil, unsupportedMedia(contentType)
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, BadRequest("the request body must be one object (got %s)", describe(trimmed))
	}
	d := json.NewDecoder(bytes.NewReader(trimmed))
	var raw json.RawMessage
	if err := d.Decode(&raw); err != nil {
		return nil, BadRequest("the request body is not valid JSON: %v", err)
	}
	if d.More() {
		return nil, BadRequest("the request body holds more than one object")
	}
	return trimmed, nil
}

func describe(b []byte) string {
	switch {
	case len(b) == 0:
		return "nothing"
	case bytes.Equal(b, []byte("null")):
		return "null"
	case b[0] == '[':
		return "an array"
	}
	return "something else"
}

// Head is the part of a body that says what it is.
type Head struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// checkKind refuses a body whose apiVersion or kind is not the URL's.
func checkKind(info resource.Info, body []byte) error {
	var head Head
	if err := json.Unmarshal(body, &head); err != nil {
		return BadRequest("the request body is not a Kubernetes object: %s", DecodeProblem(err))
	}
	if head.Kind != "" && head.Kind != info.Kind {
		return BadRequest("the body is a %s but the URL is for %s (%s)", head.Kind, info.Resource, info.Kind)
	}
	if head.APIVersion != "" && head.APIVersion != info.APIVersion() {
		return BadRequest("the body has apiVersion %q but the URL is for %s", head.APIVersion, info.APIVersion())
	}
	return nil
}

// BuiltinType returns a new value of the Go type of a built-in kind: decoding into it checks
// field types, and strategic merge patch reads its merge keys. The KubeEdge kinds have none,
// as custom resources in Kubernetes have none.
func BuiltinType(info resource.Info) (any, bool) {
	switch info.GroupResource() {
	case resource.Pods:
		return &corev1.Pod{}, true
	case resource.Nodes:
		return &corev1.Node{}, true
	case resource.ConfigMaps:
		return &corev1.ConfigMap{}, true
	case resource.Secrets:
		return &corev1.Secret{}, true
	case resource.Services:
		return &corev1.Service{}, true
	case resource.Namespaces:
		return &corev1.Namespace{}, true
	case resource.EndpointSlices:
		return &discoveryv1.EndpointSlice{}, true
	}
	return nil, false
}

// customShape is what the server knows of a KubeEdge kind's fields: the top level and the
// metadata; spec and status are the kind's own.
type customShape struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       json.RawMessage   `json:"spec"`
	Status     json.RawMessage   `json:"status"`
}

// fieldProblems lists the unknown and duplicated fields of obj, as Kubernetes' strict decoding
// names them. A body that does not decode at all is left to the storage to refuse.
func fieldProblems(info resource.Info, body []byte) []string {
	target, ok := BuiltinType(info)
	if !ok {
		target = &customShape{}
	}
	if (info.Kind == "Node" || info.Kind == "Pod") && mayHoldHugeQuantity(body) {
		// A quantity beyond reason would take the typed decode minutes (CheckQuantities);
		// the storage refuses it.
		d := json.NewDecoder(bytes.NewReader(body))
		d.UseNumber()
		var obj map[string]any
		if d.Decode(&obj) != nil || CheckQuantities(info.Kind, obj) != nil {
			return nil
		}
	}
	return strictProblems(body, target, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
}

// strictProblems decodes body into target with opts and lists what the strict decoding found;
// nothing for a body that does not decode at all (the storage refuses it).
func strictProblems(body []byte, target any, opts ...sigsjson.StrictOption) []string {
	strict, err := sigsjson.UnmarshalStrict(body, target, opts...)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(strict))
	for _, e := range strict {
		out = append(out, e.Error())
	}
	return out
}

// FieldValidation is the fieldValidation query parameter of a write.
type FieldValidation string

const (
	FieldIgnore FieldValidation = "Ignore"
	FieldWarn   FieldValidation = "Warn"
	FieldStrict FieldValidation = "Strict"
)

func parseFieldValidation(q map[string][]string) (FieldValidation, error) {
	v := ""
	if l := q["fieldValidation"]; len(l) > 0 {
		v = l[0]
	}
	switch FieldValidation(v) {
	case "":
		return FieldWarn, nil
	case FieldIgnore, FieldWarn, FieldStrict:
		return FieldValidation(v), nil
	}
	return "", BadRequest("fieldValidation must be Ignore, Warn or Strict, not %q", v)
}

// fieldCheck carries the fieldValidation of a PATCH to the storage, which alone sees the object
// the patch makes, and the warnings to answer with.
type fieldCheck struct {
	fv       FieldValidation
	warnings []string
}

type fieldCheckKey struct{}

// CheckPatched applies the fieldValidation of the PATCH whose context ctx is to patched, the
// object its patch made of cur: with Strict, an unknown field the patch brought is a 400; with
// Warn, each is a warning on the answer. A field cur already held (stored by a write that was
// not Strict) is not the patch's doing and is let be, or every Strict patch of that object (all
// of kubectl's) would be refused for it. A storage calls it on every object a patch makes
// before storing it (again if it patches a fresher object after a conflict); outside a PATCH it
// does nothing.
func CheckPatched(ctx context.Context, info resource.Info, cur, patched []byte) error {
	fc, _ := ctx.Value(fieldCheckKey{}).(*fieldCheck)
	if fc == nil || fc.fv == FieldIgnore {
		return nil
	}
	problems := fieldProblems(info, patched)
	if len(problems) > 0 {
		held := fieldProblems(info, cur)
		problems = slices.DeleteFunc(problems, func(p string) bool { return slices.Contains(held, p) })
	}
	if len(problems) > 0 && fc.fv == FieldStrict {
		return strictError(info, problems)
	}
	fc.warnings = problems
	return nil
}

// duplicateFields lists the fields a PATCH body names twice in one object, which the object it
// makes no longer shows: Kubernetes refuses them under Strict too.
func duplicateFields(body []byte) []string {
	var v any
	return strictProblems(body, &v, sigsjson.DisallowDuplicateFields)
}

func strictError(info resource.Info, problems []string) error {
	return BadRequest("%s in version %q cannot be handled as a %s: strict decoding error: %s", info.Kind, info.APIVersion(), info.Kind, joinProblems(problems))
}

func joinProblems(p []string) string {
	var b bytes.Buffer
	for i, s := range p {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprint(&b, s)
	}
	return b.String()
}

// DecodeProblem says what is wrong with a field of the wrong JSON type, by its path and the
// JSON type it must have ("spec: must be an object"), rather than by the Go type it did not
// decode into. Other decoding errors (a bad quantity, bad base64) say what they say.
func DecodeProblem(err error) string {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return err.Error()
	}
	field := te.Field
	if field == "" {
		field = "the object"
	}
	return fmt.Sprintf("%s: must be %s", field, jsonkind.Of(te.Type))
}
