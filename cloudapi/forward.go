package cloudapi

import (
	"bytes"
	"context"
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
	if err := f.allowed(ctx, node, ri); err != nil {
		return statusResponse(err)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, u.RequestURI(), bytes.NewReader(req.Body))
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

// allowed applies the rules of the type comment.
func (f *Forwarder) allowed(ctx context.Context, node string, ri kubeapi.RequestInfo) error {
	gr := ri.Info.GroupResource()
	status := ri.Subresource == "status" && (ri.Verb == "update" || ri.Verb == "patch")
	switch {
	case gr == resource.Nodes && status && ri.Name == node:
		return nil
	case (gr == resource.Pods && (status || ri.Verb == "delete")) || (gr == resource.Devices && status):
		bound, err := f.objects.boundNode(ctx, ri.Info, ri.Namespace, ri.Name)
		if err != nil {
			return err
		}
		if bound == node {
			return nil
		}
	}
	name := ri.Name
	if name == "" {
		name = "(collection)"
	}
	return kubeapi.Forbidden(ri.Info.Group, ri.Info.Resource, name, fmt.Errorf(
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
// exist), reading the cloud's latest state.
func (o *Objects) boundNode(ctx context.Context, info resource.Info, ns, name string) (string, error) {
	snap, err := o.latest(ctx)
	if err != nil {
		return "", err
	}
	obj := snap.Get(storeKey(info, ns, name))
	if obj == nil {
		return "", nil
	}
	return obj.Node, nil
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
