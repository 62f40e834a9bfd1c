package kubeapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"reflect"
	"sort"
	"strings"

	openapiv2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/tetherhub/tether/resource"
)

// The OpenAPI documents are what kubectl reads before it writes: `kubectl apply` (1.20) fetches
// /openapi/v2 as protobuf to validate manifests and to compute strategic merge patches, and
// current kubectl reads /openapi/v3 to learn whether the server validates fields itself
// (fieldValidation) and how to patch each kind.
//
// Which schemas: the built-in kinds' v2 definitions are derived from their Go types (see
// openapi_types.go), so kubectl 1.20 checks every field and merges lists by their keys; the
// KubeEdge kinds, which have no Go types here, get a permissive schema (the top level is
// checked, spec and status are kept as given), as a CRD with x-kubernetes-preserve-unknown-fields
// would. The v3 documents are permissive for every kind and announce fieldValidation, so current
// kubectl leaves validation to the server (strict decoding of the built-in kinds, see body.go),
// and they do not announce strategic merge patch, so current kubectl computes it from its own
// compiled-in types for the built-in kinds and sends a merge patch for the others.
//
// The documents depend only on the registry, so they are built once per Handler.

const (
	// Clients ask for the old spelling (with "@", which is not a valid media type) or the new
	// one; the answer is always labelled with the new one, which Go's mime package can parse.
	mimeOpenAPIV2Proto    = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
	mimeOpenAPIV2ProtoOld = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
	gvkExtension          = "x-kubernetes-group-version-kind"
	preserveUnknown       = "x-kubernetes-preserve-unknown-fields"
)

// openAPI holds the encoded documents.
type openAPI struct {
	v2Proto []byte
	v2JSON  []byte
	v3Root  []byte
	v3      map[string][]byte // "api/v1", "apis/{group}/{version}" → document
}

func buildOpenAPI(reg *resource.Registry, version string) (*openAPI, error) {
	o := &openAPI{v3: map[string][]byte{}}
	doc := &openapiv2.Document{
		Swagger:     "2.0",
		Info:        &openapiv2.Info{Title: "tether", Version: version},
		Paths:       &openapiv2.Paths{},
		Definitions: &openapiv2.Definitions{},
	}
	types := &typeSchemas{defs: map[string]*openapiv2.Schema{}}
	for _, info := range reg.All() {
		if typ, ok := BuiltinType(info); ok {
			name := types.definitionFor(reflect.TypeOf(typ).Elem())
			ext, _ := json.Marshal([]map[string]string{gvk(info)}) // JSON is YAML
			types.defs[name].VendorExtension = append(types.defs[name].VendorExtension, &openapiv2.NamedAny{Name: gvkExtension, Value: &openapiv2.Any{Yaml: string(ext) + "\n"}})
			continue
		}
		types.defs[definitionName(info)] = v2Schema(info)
	}
	names := make([]string, 0, len(types.defs))
	for n := range types.defs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		doc.Definitions.AdditionalProperties = append(doc.Definitions.AdditionalProperties, &openapiv2.NamedSchema{Name: n, Value: types.defs[n]})
	}
	var err error
	if o.v2Proto, err = proto.Marshal(doc); err != nil {
		return nil, err
	}
	y, err := doc.YAMLValue("")
	if err != nil {
		return nil, err
	}
	if o.v2JSON, err = yaml.YAMLToJSON(y); err != nil {
		return nil, err
	}

	byGV := map[string][]resource.Info{}
	for _, info := range reg.All() {
		byGV[gvPath(info)] = append(byGV[gvPath(info)], info)
	}
	root := map[string]any{}
	keys := make([]string, 0, len(byGV))
	for k := range byGV {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, gv := range keys {
		b, err := json.Marshal(v3Document(byGV[gv], version))
		if err != nil {
			return nil, err
		}
		o.v3[gv] = b
		sum := sha256.Sum256(b)
		root[gv] = map[string]string{"serverRelativeURL": "/openapi/v3/" + gv + "?hash=" + strings.ToUpper(hex.EncodeToString(sum[:16]))}
	}
	if o.v3Root, err = json.Marshal(map[string]any{"paths": root}); err != nil {
		return nil, err
	}
	return o, nil
}

func gvPath(info resource.Info) string {
	if info.Group == "" {
		return "api/" + info.Version
	}
	return "apis/" + info.Group + "/" + info.Version
}

// definitionName follows Kubernetes' reverse-domain naming of definitions.
func definitionName(info resource.Info) string {
	if info.Group == "" {
		return "io.k8s.api.core." + info.Version + "." + info.Kind
	}
	parts := strings.Split(info.Group, ".")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ".") + "." + info.Version + "." + info.Kind
}

func gvk(info resource.Info) map[string]string {
	return map[string]string{"group": info.Group, "version": info.Version, "kind": info.Kind}
}

// topFields are the top-level fields a kind's objects may have.
func topFields(info resource.Info) []string {
	switch info.Kind {
	case "ConfigMap":
		return []string{"data", "binaryData", "immutable"}
	case "Secret":
		return []string{"data", "stringData", "type", "immutable"}
	case "EndpointSlice":
		return []string{"addressType", "endpoints", "ports"}
	}
	return []string{"spec", "status"}
}

func v2Schema(info resource.Info) *openapiv2.Schema {
	str := func() *openapiv2.Schema {
		return &openapiv2.Schema{Type: &openapiv2.TypeItem{Value: []string{"string"}}}
	}
	// An object without properties is a map of anything to kubectl's validator.
	obj := func() *openapiv2.Schema {
		return &openapiv2.Schema{Type: &openapiv2.TypeItem{Value: []string{"object"}},
			VendorExtension: []*openapiv2.NamedAny{{Name: preserveUnknown, Value: &openapiv2.Any{Yaml: "true\n"}}}}
	}
	props := []*openapiv2.NamedSchema{
		{Name: "apiVersion", Value: str()},
		{Name: "kind", Value: str()},
		{Name: "metadata", Value: obj()},
	}
	for _, f := range topFields(info) {
		props = append(props, &openapiv2.NamedSchema{Name: f, Value: obj()})
	}
	ext, _ := json.Marshal([]map[string]string{gvk(info)}) // JSON is YAML
	return &openapiv2.Schema{
		Description:     info.Kind + " (" + info.APIVersion() + "), as tether serves it.",
		Type:            &openapiv2.TypeItem{Value: []string{"object"}},
		Properties:      &openapiv2.Properties{AdditionalProperties: props},
		VendorExtension: []*openapiv2.NamedAny{{Name: gvkExtension, Value: &openapiv2.Any{Yaml: string(ext) + "\n"}}},
	}
}

// v3Schema is the permissive component schema of a kind.
func v3Schema(info resource.Info) map[string]any {
	obj := map[string]any{"type": "object", preserveUnknown: true}
	props := map[string]any{
		"apiVersion": map[string]any{"type": "string"},
		"kind":       map[string]any{"type": "string"},
		"metadata":   obj,
	}
	for _, f := range topFields(info) {
		props[f] = obj
	}
	s := map[string]any{
		"description": info.Kind + " (" + info.APIVersion() + "), as tether serves it.",
		"type":        "object", "properties": props,
		gvkExtension: []map[string]string{gvk(info)},
	}
	s[preserveUnknown] = true
	return s
}

// v3Document describes one group version: its kinds and, per object path, the operations with
// the parameters kubectl looks for (fieldValidation on PATCH tells it the server validates).
func v3Document(infos []resource.Info, version string) map[string]any {
	schemas := map[string]any{}
	paths := map[string]any{}
	param := func(name string) map[string]any {
		return map[string]any{"name": name, "in": "query", "schema": map[string]any{"type": "string", "uniqueItems": true}}
	}
	ok := map[string]any{"200": map[string]any{"description": "OK"}}
	for _, info := range infos {
		name := definitionName(info)
		schemas[name] = v3Schema(info)
		ref := map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/" + name}}
		op := func(action string, params ...string) map[string]any {
			o := map[string]any{"operationId": action + info.Kind, "x-kubernetes-action": action, gvkExtension: gvk(info), "responses": ok}
			var ps []any
			for _, p := range params {
				ps = append(ps, param(p))
			}
			if ps != nil {
				o["parameters"] = ps
			}
			return o
		}
		base := "/" + gvPath(info)
		if info.Namespaced {
			base += "/namespaces/{namespace}"
		}
		coll, item := base+"/"+info.Resource, base+"/"+info.Resource+"/{name}"
		create := op("post", "fieldValidation", "fieldManager", "dryRun")
		create["requestBody"] = map[string]any{"content": map[string]any{"application/json": ref, "application/yaml": ref}}
		paths[coll] = map[string]any{"get": op("list", "labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "resourceVersionMatch", "watch", "allowWatchBookmarks", "sendInitialEvents", "timeoutSeconds"), "post": create}
		update := op("put", "fieldValidation", "fieldManager", "dryRun")
		update["requestBody"] = map[string]any{"content": map[string]any{"application/json": ref, "application/yaml": ref}}
		patch := op("patch", "fieldValidation", "fieldManager", "dryRun")
		// Strategic merge patch is not announced: kubectl then computes it from its compiled-in
		// types (for built-in kinds) or sends a merge patch (for the others), as it does for CRDs.
		pbody := map[string]any{"schema": map[string]any{"type": "object"}}
		patch["requestBody"] = map[string]any{"content": map[string]any{"application/merge-patch+json": pbody, "application/json-patch+json": pbody}}
		paths[item] = map[string]any{"get": op("get"), "put": update, "patch": patch, "delete": op("delete", "dryRun")}
	}
	return map[string]any{
		"openapi": "3.0.0",
		"info":    map[string]string{"title": "tether", "version": version},
		"paths":   paths, "components": map[string]any{"schemas": schemas},
	}
}

// serveOpenAPI answers /openapi/v2 and /openapi/v3[/…]; parts is the split path.
func (h *Handler) serveOpenAPI(w http.ResponseWriter, r *http.Request, parts []string) int {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return h.fail(w, methodNotAllowed(r.Method, "openapi"))
	}
	switch {
	case len(parts) == 2 && parts[1] == "v2":
		if acceptsProto(r.Header.Get("Accept")) {
			w.Header().Set("Content-Type", mimeOpenAPIV2Proto)
			w.WriteHeader(http.StatusOK)
			w.Write(h.openapi.v2Proto)
			return http.StatusOK
		}
		return h.writeRaw(w, http.StatusOK, h.openapi.v2JSON)
	case len(parts) == 2 && parts[1] == "v3":
		return h.writeRaw(w, http.StatusOK, h.openapi.v3Root)
	case len(parts) > 2 && parts[1] == "v3":
		doc, ok := h.openapi.v3[strings.Join(parts[2:], "/")]
		if !ok {
			return h.fail(w, notFoundPath())
		}
		return h.writeRaw(w, http.StatusOK, doc)
	}
	return h.fail(w, notFoundPath())
}

// acceptsProto says whether the first media type a client accepts is the protobuf document.
func acceptsProto(accept string) bool {
	first := strings.TrimSpace(strings.SplitN(strings.SplitN(accept, ",", 2)[0], ";", 2)[0])
	return first == mimeOpenAPIV2Proto || first == mimeOpenAPIV2ProtoOld
}

func (h *Handler) writeRaw(w http.ResponseWriter, code int, body []byte) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(body)
	return code
}
