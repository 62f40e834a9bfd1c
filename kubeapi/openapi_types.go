package kubeapi

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"

	openapiv2 "github.com/google/gnostic-models/openapiv2"
)

// The built-in kinds' OpenAPI v2 definitions are derived from their Go types in k8s.io/api,
// the types the server decodes them into: property names and types from the JSON encoding, and
// the strategic-merge-patch keys from the struct tags (x-kubernetes-patch-strategy and
// -merge-key), so that kubectl 1.20 validates every field of a built-in object and computes the
// same patches it would from its own compiled-in types. Required fields are not marked: the
// server checks those, and a client-side "missing field" would only duplicate its answer.

// typeSchemas builds definitions from Go types; the zero value is not usable.
type typeSchemas struct {
	defs map[string]*openapiv2.Schema
}

// definitionFor adds the definitions of t (a struct type) and everything it refers to, and
// returns t's definition name.
func (b *typeSchemas) definitionFor(t reflect.Type) string {
	name := goDefinitionName(t)
	if _, ok := b.defs[name]; ok {
		return name
	}
	s := &openapiv2.Schema{Type: &openapiv2.TypeItem{Value: []string{"object"}}, Properties: &openapiv2.Properties{}}
	b.defs[name] = s // before the fields: a type may refer to itself
	b.addFields(s, t)
	sort.Slice(s.Properties.AdditionalProperties, func(i, j int) bool {
		return s.Properties.AdditionalProperties[i].Name < s.Properties.AdditionalProperties[j].Name
	})
	return name
}

func (b *typeSchemas) addFields(s *openapiv2.Schema, t reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if name == "" && (f.Anonymous || strings.Contains(opts, "inline")) {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				b.addFields(s, ft) // inlined, as encoding/json does
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		prop := b.schemaOf(f.Type)
		var ext []*openapiv2.NamedAny
		if v := f.Tag.Get("patchStrategy"); v != "" {
			ext = append(ext, &openapiv2.NamedAny{Name: "x-kubernetes-patch-strategy", Value: &openapiv2.Any{Yaml: v + "\n"}})
		}
		if v := f.Tag.Get("patchMergeKey"); v != "" {
			ext = append(ext, &openapiv2.NamedAny{Name: "x-kubernetes-patch-merge-key", Value: &openapiv2.Any{Yaml: v + "\n"}})
		}
		if len(ext) > 0 {
			if prop.XRef != "" {
				// Extensions beside a $ref are ignored by readers; allOf keeps them.
				prop = &openapiv2.Schema{AllOf: []*openapiv2.Schema{prop}}
			}
			prop.VendorExtension = append(prop.VendorExtension, ext...)
		}
		s.Properties.AdditionalProperties = append(s.Properties.AdditionalProperties, &openapiv2.NamedSchema{Name: name, Value: prop})
	}
}

type schemaFormatter interface{ OpenAPISchemaType() []string }
type formatNamer interface{ OpenAPISchemaFormat() string }

var jsonMarshaler = reflect.TypeFor[json.Marshaler]()

func (b *typeSchemas) schemaOf(t reflect.Type) *openapiv2.Schema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	prim := func(typ, format string) *openapiv2.Schema {
		return &openapiv2.Schema{Type: &openapiv2.TypeItem{Value: []string{typ}}, Format: format}
	}
	// Types that say how they are published (times, quantities, int-or-string).
	if f, ok := reflect.Zero(t).Interface().(schemaFormatter); ok {
		s := &openapiv2.Schema{Type: &openapiv2.TypeItem{Value: f.OpenAPISchemaType()}}
		if n, ok := reflect.Zero(t).Interface().(formatNamer); ok {
			s.Format = n.OpenAPISchemaFormat()
		}
		return s
	}
	// Other types with their own encoding (managed fields, raw extensions): anything.
	if t.Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(jsonMarshaler) {
		return &openapiv2.Schema{}
	}
	switch t.Kind() {
	case reflect.String:
		return prim("string", "")
	case reflect.Bool:
		return prim("boolean", "")
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return prim("integer", "int32")
	case reflect.Int, reflect.Int64, reflect.Uint, reflect.Uint64:
		return prim("integer", "int64")
	case reflect.Float32, reflect.Float64:
		return prim("number", "double")
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return prim("string", "byte")
		}
		return &openapiv2.Schema{Type: &openapiv2.TypeItem{Value: []string{"array"}},
			Items: &openapiv2.ItemsItem{Schema: []*openapiv2.Schema{b.schemaOf(t.Elem())}}}
	case reflect.Map:
		return &openapiv2.Schema{Type: &openapiv2.TypeItem{Value: []string{"object"}},
			AdditionalProperties: &openapiv2.AdditionalPropertiesItem{Oneof: &openapiv2.AdditionalPropertiesItem_Schema{Schema: b.schemaOf(t.Elem())}}}
	case reflect.Struct:
		return &openapiv2.Schema{XRef: "#/definitions/" + b.definitionFor(t)}
	}
	return &openapiv2.Schema{} // interfaces and the like: anything
}

// goDefinitionName names a Go type as Kubernetes names its definitions:
// k8s.io/api/core/v1.Pod → io.k8s.api.core.v1.Pod.
func goDefinitionName(t reflect.Type) string {
	path := t.PkgPath()
	host, rest, _ := strings.Cut(path, "/")
	parts := strings.Split(host, ".")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	name := strings.Join(parts, ".")
	if rest != "" {
		name += "." + strings.ReplaceAll(rest, "/", ".")
	}
	return name + "." + t.Name()
}
