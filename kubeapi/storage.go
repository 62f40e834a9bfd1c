package kubeapi

import (
	"context"
	"encoding/base64"
	"encoding/json"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tetherhub/tether/resource"
)

// Storage holds the objects a Handler serves. Every method gets the kind from the request URL;
// namespace is empty for cluster-scoped kinds and for lists across all namespaces. Objects are
// JSON. Errors should be the ones this package builds (NotFound, Conflict, Invalid…); anything
// else becomes a 500.
//
// A read-only Storage (the edge metaserver's reads) returns a 405 or 403 error from the write
// methods; that is the Storage's decision, not the Handler's.
type Storage interface {
	Get(ctx context.Context, info resource.Info, namespace, name string) ([]byte, error)
	List(ctx context.Context, info resource.Info, namespace string, opts ListOptions) (*ListResult, error)
	Watch(ctx context.Context, info resource.Info, namespace string, opts ListOptions) (*Watch, error)
	Create(ctx context.Context, info resource.Info, namespace string, obj []byte) ([]byte, error)
	// Update replaces an object; subresource is "" or "status".
	Update(ctx context.Context, info resource.Info, namespace, name, subresource string, obj []byte) ([]byte, error)
	// Patch applies a patch of the given type; subresource is "" or "status".
	Patch(ctx context.Context, info resource.Info, namespace, name, subresource string, pt PatchType, patch []byte) ([]byte, error)
	// Delete removes an object, honouring preconditions, and returns it as it was last.
	Delete(ctx context.Context, info resource.Info, namespace, name string, opts DeleteOptions) ([]byte, error)
}

// PatchType is the media type of a PATCH body. The Handler passes a Storage MergePatch,
// StrategicPatch and JSONPatch; ApplyPatch (server-side apply) it answers with a 415.
type PatchType string

const (
	MergePatch     PatchType = "application/merge-patch+json"
	StrategicPatch PatchType = "application/strategic-merge-patch+json"
	JSONPatch      PatchType = "application/json-patch+json"
	ApplyPatch     PatchType = "application/apply-patch+yaml"
)

// ListOptions are the list and watch parameters of a request, parsed and checked.
type ListOptions struct {
	Labels               labels.Selector
	Fields               fields.Selector
	ResourceVersion      string // "" (most recent), "0" (any), or an exact revision
	ResourceVersionMatch string // "", "NotOlderThan" or "Exact"
	Limit                int64
	Continue             string
	AllowWatchBookmarks  bool
	SendInitialEvents    bool
	TimeoutSeconds       int64
}

// ListResult is one page of a list. Items are the objects' JSON.
type ListResult struct {
	Items           [][]byte
	ResourceVersion string
	Continue        string
	Remaining       *int64
}

// DeleteOptions carries the preconditions of a delete.
type DeleteOptions struct {
	UID             string
	ResourceVersion string
}

// Meta is what selectors and watch filtering read of an object, so that a Storage computes it
// once per object version rather than this package parsing JSON per request.
type Meta struct {
	Namespace string
	Name      string
	Labels    map[string]string
	// Fields are the selectable fields beyond metadata.name and metadata.namespace:
	// spec.nodeName for Pods and Devices, and optionally the object fields (ObjectFields).
	Fields map[string]string
}

// Matches reports whether an object with meta m passes the selectors of opts. A requirement on
// an object field that m does not carry passes: the Handler and the Cache check it against the
// object (see fields.go).
func (o ListOptions) Matches(m Meta) bool {
	if o.Labels != nil && !o.Labels.Empty() && !o.Labels.Matches(labels.Set(m.Labels)) {
		return false
	}
	if o.Fields != nil && !o.Fields.Empty() && !matchFields(o.Fields, m) {
		return false
	}
	return true
}

// EncodeContinue makes a continue token: the version the list was first served at and the
// store key of the last item sent. Both storages use it, so tokens mean the same everywhere.
func EncodeContinue(rev int64, lastKey string) string {
	b, _ := json.Marshal(continueToken{Rev: rev, Start: lastKey})
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeContinue reads a token made by EncodeContinue; a token it cannot read is a 400.
func DecodeContinue(s string) (rev int64, lastKey string, err error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	var tok continueToken
	if err != nil || json.Unmarshal(raw, &tok) != nil || tok.Start == "" || tok.Rev < 0 {
		return 0, "", BadRequest("invalid continue token")
	}
	return tok.Rev, tok.Start, nil
}

type continueToken struct {
	Rev   int64  `json:"rv"`
	Start string `json:"start"`
}
