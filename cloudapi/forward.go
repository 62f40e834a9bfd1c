package cloudapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// Forwarder executes the writes edges relay from their metaserver. It implements
// cloudhub.Forwarder.
//
// A node may change what it reports about itself and nothing else:
//   - the status of its own Node (nodes/{node}/status);
//   - the status of its own Pods (spec.nodeName == node), and delete them;
//   - the status of its own Devices (spec.nodeName == node).
//
// Everything else, reads included (the edge serves those from its own store), is a 403 naming
// the rule. An allowed request runs through the cloud API's Handler as any client's would, so
// it gets the same checks, limits and answers.
type Forwarder struct {
	api     *kubeapi.Handler
	objects *Objects
}

// NewForwarder returns the forwarder over the cloud API's handler and objects.
func NewForwarder(api *kubeapi.Handler, objects *Objects) *Forwarder {
	return &Forwarder{api: api, objects: objects}
}

// Forward implements cloudhub.Forwarder.
func (f *Forwarder) Forward(ctx context.Context, node string, req *protocol.Request) *protocol.Response {
	u, err := url.ParseRequestURI(req.Path)
	if err != nil {
		return statusResponse(kubeapi.BadRequest("the forwarded request's path is not valid: %v", err))
	}
	ri, err := f.api.Resolve(req.Method, u)
	if err != nil {
		return statusResponse(err)
	}
	uid, err := f.allowed(ctx, node, ri)
	if err != nil {
		return statusResponse(err)
	}
	body := req.Body
	if ri.Verb == "delete" && uid != "" {
		// The pod was checked to be this node's; delete exactly that pod, not one of the same
		// name created on another node in between.
		if body, err = withUIDPrecondition(body, uid); err != nil {
			return statusResponse(err)
		}
	}
	if uid != "" {
		// And a status write changes exactly that object too.
		ctx = context.WithValue(ctx, expectUIDKey{}, uid)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, u.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return statusResponse(kubeapi.BadRequest("the forwarded request is not valid: %v", err))
	}
	if req.ContentType != "" {
		hr.Header.Set("Content-Type", req.ContentType)
	}
	rec := &recorder{header: http.Header{}}
	f.api.ServeHTTP(rec, hr)
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	return &protocol.Response{ID: req.ID, Code: uint16(rec.code), ContentType: rec.header.Get("Content-Type"), Body: rec.body.Bytes()}
}

// allowed applies the rules of the type comment. For an object bound to the node it returns
// the object's UID as checked.
func (f *Forwarder) allowed(ctx context.Context, node string, ri kubeapi.RequestInfo) (uid string, err error) {
	gr := ri.Info.GroupResource()
	status := ri.Subresource == "status" && (ri.Verb == "update" || ri.Verb == "patch")
	switch {
	case gr == resource.Nodes && status && ri.Name == node:
		return "", nil
	case (gr == resource.Pods && (status || ri.Verb == "delete")) || (gr == resource.Devices && status):
		bound, uid, err := f.objects.boundNode(ctx, ri.Info, ri.Namespace, ri.Name)
		if err != nil {
			return "", err
		}
		if bound == node {
			return uid, nil
		}
	}
	name := ri.Name
	if name == "" {
		name = "(collection)"
	}
	return "", kubeapi.Forbidden(ri.Info.Group, ri.Info.Resource, name, fmt.Errorf(
		"node %q may only change the status of its own Node, Pods and Devices and delete its own Pods (this was %s %s)", node, ri.Verb, describeTarget(ri)))
}

func describeTarget(ri kubeapi.RequestInfo) string {
	s := ri.Info.Resource
	if ri.Subresource != "" {
		s += "/" + ri.Subresource
	}
	return s
}

// boundNode returns the node an object is bound to ("" if it is bound to none or does not
// exist) and its UID, reading the cloud's latest state.
func (o *Objects) boundNode(ctx context.Context, info resource.Info, ns, name string) (node, uid string, err error) {
	snap, err := o.latest(ctx)
	if err != nil {
		return "", "", err
	}
	obj := snap.Get(storeKey(info, ns, name))
	if obj == nil {
		return "", "", nil
	}
	return obj.Node, obj.UID, nil
}

// withUIDPrecondition returns delete options that require uid: the request's own options (a
// JSON object, or none) with preconditions.uid set unless the request set one itself.
func withUIDPrecondition(body []byte, uid string) ([]byte, error) {
	opts := map[string]any{}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &opts); err != nil || opts == nil {
			return nil, kubeapi.BadRequest("the delete options are not a JSON object")
		}
	}
	pre, _ := opts["preconditions"].(map[string]any)
	if pre == nil {
		pre = map[string]any{}
	}
	switch own, _ := pre["uid"].(string); own {
	case "", uid: // unset, null or empty (no precondition), or the very pod checked
		pre["uid"] = uid
	default:
		// The node names another pod than the one checked to be its own: only a pod of the
		// same name created elsewhere since could match, and that one is not the node's.
		return nil, kubeapi.Conflict("", "pods", "", fmt.Errorf("the uid precondition %q is not the uid of the node's pod (%s)", own, uid))
	}
	opts["preconditions"] = pre
	return json.Marshal(opts)
}

func statusResponse(err error) *protocol.Response {
	code, body := kubeapi.StatusBody(err)
	return &protocol.Response{Code: uint16(code), ContentType: "application/json", Body: body}
}

// recorder is the in-memory http.ResponseWriter a forwarded request is served into.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}
