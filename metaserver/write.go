package metaserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"net/http"
	"strconv"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/tetherhub/tether/edgehub"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// Writes are relayed to the cloud, which decides what this node may change (its Node's status,
// its Pods' status and their deletion, its Devices' status) and answers as its API would.
//
// Versions are translated on the way: a client of the metaserver knows objects by the edge's
// local resourceVersion, the cloud by its own. A precondition on a local version that is no
// longer the stored one is a 409 here, without a round trip; a current one is replaced by the
// cloud version it stands for (Record.CloudRV). The cloud's answer is applied to the edge store
// (edgestore.ApplyLocal) and served from there, so the client reads its own write — in the
// edge's versions — even for status changes, which the cloud does not send back down.

// Create implements kubeapi.Storage.
func (s *Storage) Create(ctx context.Context, info resource.Info, ns string, body []byte) ([]byte, error) {
	resp, err := s.forward(ctx, http.MethodPost, path(info, ns, "", ""), "application/json", body)
	if err != nil {
		return nil, err
	}
	return s.applyAnswer(ctx, info, resp, nil)
}

// Update implements kubeapi.Storage.
func (s *Storage) Update(ctx context.Context, info resource.Info, ns, name, sub string, body []byte) ([]byte, error) {
	key := resource.Key{Resource: info.GroupResource(), Namespace: ns, Name: name}
	defer s.lockStatus(info, key, sub)()
	method, contentType := http.MethodPut, "application/json"
	var patch []byte
	if statusMovesUnseen(info, sub) {
		var pt kubeapi.PatchType
		var err error
		if patch, pt, err = s.statusChanges(info, key, body); err != nil {
			return nil, err
		}
		if patch != nil {
			method, contentType, body = http.MethodPatch, string(pt), patch
		}
	}
	if patch == nil {
		// Sent as it is, its version translated (or, for a status the cloud moves unseen,
		// checked and left out: see statusMovesUnseen), for the cloud to answer.
		var err error
		if body, err = s.translate(info, key, sub, body, resourceVersionOf); err != nil {
			return nil, err
		}
	}
	resp, err := s.forward(ctx, method, path(info, ns, name, sub), contentType, body)
	if err != nil {
		return nil, err
	}
	return s.applyAnswer(ctx, info, resp, nil)
}

// resourceVersionOf finds the version an update or a merge patch names.
func resourceVersionOf(m map[string]any) (*string, bool) {
	md, _ := m["metadata"].(map[string]any)
	rv, ok := md["resourceVersion"].(string)
	if !ok || rv == "" {
		return nil, false
	}
	return &rv, true
}

// statusChanges turns a whole-status update of a status the cloud moves unseen
// (statusMovesUnseen) into a patch of what the client changed in the edge's copy, which is what
// it read: the cloud's status is newer than that copy (heartbeat times, the reports the outbox
// sent since), and a field the client sent back as it read it must not put an older value back
// in the cloud. A Node's patch is strategic (its conditions merge by type), but for its
// addresses, sent whole when they changed (two addresses may share a type, and a strategic
// patch merging them by type loses one); a Device's is a JSON merge patch (a changed list, such
// as twins, is sent whole). The copy is read once, for the version check and the patch.
//
// It returns a nil patch when the update is to be forwarded as it is, for the cloud to answer:
// there is no copy here, the body is not an object of this name, or the copy cannot be compared
// (a list entry without its merge key).
func (s *Storage) statusChanges(info resource.Info, key resource.Key, body []byte) (patch []byte, pt kubeapi.PatchType, err error) {
	rec, err := s.store.Get(resource.StoreKey(key))
	if err != nil {
		return nil, "", kubeapi.Unavailable("the edge store cannot be read: %v", err)
	}
	var held, sent map[string]json.RawMessage
	if rec == nil || json.Unmarshal(rec.Object, &held) != nil || json.Unmarshal(body, &sent) != nil || sent == nil {
		return nil, "", nil
	}
	var md struct {
		Name, Namespace, UID, ResourceVersion string
	}
	if json.Unmarshal(sent["metadata"], &md) != nil || md.Name != key.Name || md.Namespace != "" && md.Namespace != key.Namespace {
		return nil, "", nil
	}
	if md.ResourceVersion != "" && md.ResourceVersion != strconv.FormatUint(rec.LocalRev, 10) {
		return nil, "", staleVersion(info, key.Name)
	}
	if md.UID != "" {
		var heldMD struct{ UID string }
		if json.Unmarshal(held["metadata"], &heldMD) == nil && heldMD.UID != "" && heldMD.UID != md.UID {
			return nil, "", kubeapi.Conflict(info.Group, info.Resource, key.Name, errors.New("the object was deleted and made again since it was read (its uid differs)"))
		}
	}
	statusOnly := func(m map[string]json.RawMessage) []byte {
		st, ok := m["status"]
		if !ok {
			return []byte(`{}`)
		}
		b, _ := json.Marshal(map[string]json.RawMessage{"status": st})
		return b
	}
	from, to := statusOnly(held), statusOnly(sent)
	schema, builtin := kubeapi.BuiltinType(info)
	if !builtin {
		if patch, err = jsonpatch.CreateMergePatch(from, to); err != nil {
			return nil, "", nil
		}
		return patch, kubeapi.MergePatch, nil
	}
	if patch, err = strategicpatch.CreateTwoWayMergePatch(from, to, schema); err != nil {
		return nil, "", nil
	}
	if info.GroupResource() == resource.Nodes {
		if patch, err = replaceAddresses(patch, to); err != nil {
			return nil, "", nil
		}
	}
	return patch, kubeapi.StrategicPatch, nil
}

// replaceAddresses makes a Node status patch that changes status.addresses replace them with
// the list in to, the status sent.
func replaceAddresses(patch, to []byte) ([]byte, error) {
	var p map[string]map[string]json.RawMessage
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, err
	}
	st := p["status"]
	if _, changed := st["addresses"]; !changed {
		return patch, nil
	}
	var sent struct {
		Status struct {
			Addresses []json.RawMessage `json:"addresses"`
		} `json:"status"`
	}
	if err := json.Unmarshal(to, &sent); err != nil {
		return nil, err
	}
	st["addresses"], _ = json.Marshal(append(sent.Status.Addresses, json.RawMessage(`{"$patch":"replace"}`)))
	delete(st, "$setElementOrder/addresses")
	return json.Marshal(p)
}

// Patch implements kubeapi.Storage. A version named in a merge or strategic patch
// (metadata.resourceVersion) or in a JSON patch operation on /metadata/resourceVersion is a
// precondition and is translated like an update's.
func (s *Storage) Patch(ctx context.Context, info resource.Info, ns, name, sub string, pt kubeapi.PatchType, patch []byte) ([]byte, error) {
	key := resource.Key{Resource: info.GroupResource(), Namespace: ns, Name: name}
	defer s.lockStatus(info, key, sub)()
	var err error
	switch pt {
	case kubeapi.MergePatch, kubeapi.StrategicPatch:
		patch, err = s.translate(info, key, sub, patch, resourceVersionOf)
	case kubeapi.JSONPatch:
		patch, err = s.translateJSONPatch(info, key, sub, patch)
	}
	if err != nil {
		return nil, err
	}
	resp, err := s.forward(ctx, http.MethodPatch, path(info, ns, name, sub), string(pt), patch)
	if err != nil {
		return nil, err
	}
	return s.applyAnswer(ctx, info, resp, nil)
}

// Delete implements kubeapi.Storage.
func (s *Storage) Delete(ctx context.Context, info resource.Info, ns, name string, opts kubeapi.DeleteOptions) ([]byte, error) {
	key := resource.Key{Resource: info.GroupResource(), Namespace: ns, Name: name}
	rec, err := s.store.Get(resource.StoreKey(key))
	if err != nil {
		return nil, kubeapi.Unavailable("the edge store cannot be read: %v", err)
	}
	pre := map[string]string{}
	if opts.UID != "" {
		pre["uid"] = opts.UID
	}
	if opts.ResourceVersion != "" {
		if rec == nil || opts.ResourceVersion != strconv.FormatUint(rec.LocalRev, 10) {
			return nil, staleVersion(info, name)
		}
		pre["resourceVersion"] = rec.CloudRV
	}
	body, _ := json.Marshal(map[string]any{"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": pre})
	resp, err := s.forward(ctx, http.MethodDelete, path(info, ns, name, ""), "application/json", body)
	if err != nil {
		return nil, err
	}
	if resp.Code/100 == 2 && rec != nil {
		if err := s.store.DeleteLocal(ctx, key, rec.Rev); err != nil {
			return nil, kubeapi.Unavailable("the cloud deleted the object but the edge store could not record it: %v", err)
		}
	}
	return s.applyAnswer(ctx, info, resp, &key)
}

// statusMovesUnseen says whether a write is to a status the cloud changes without sending the
// change down (resource.StatusPartlyUnrouted). The cloud version the edge holds for such an
// object falls behind, and a status write that named it would be refused (409) on every retry,
// the edge answering each re-read with the same version. For their status, the local version is
// checked here and not forwarded: the edge's copy is what its clients (and the edge's reports)
// know best.
func statusMovesUnseen(info resource.Info, sub string) bool {
	return sub == "status" && resource.StatusPartlyUnrouted(info.GroupResource())
}

// lockStatus holds, for a status write that statusMovesUnseen, the lock of key until the
// returned function is called: its version is checked here and not by the cloud, so two writes
// at the same version must not both pass the check before either's answer is stored (the second
// would overwrite the first without a conflict). Other writes take no lock.
func (s *Storage) lockStatus(info resource.Info, key resource.Key, sub string) (unlock func()) {
	if !statusMovesUnseen(info, sub) {
		return func() {}
	}
	h := fnv.New32a()
	h.Write([]byte(resource.StoreKey(key)))
	mu := &s.statusLocks[h.Sum32()%uint32(len(s.statusLocks))]
	mu.Lock()
	return mu.Unlock
}

// translate replaces the local version a body names (found by rvOf) with the cloud's, or, for a
// status the cloud moves unseen (statusMovesUnseen), checks it and leaves it out.
func (s *Storage) translate(info resource.Info, key resource.Key, sub string, body []byte, rvOf func(map[string]any) (*string, bool)) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil || m == nil {
		return body, nil // not an object: the cloud refuses it with the right Status
	}
	rv, ok := rvOf(m)
	if !ok {
		return body, nil
	}
	cloudRV, err := s.cloudVersion(info, key, *rv)
	if err != nil {
		return nil, err
	}
	if statusMovesUnseen(info, sub) {
		delete(m["metadata"].(map[string]any), "resourceVersion")
	} else {
		m["metadata"].(map[string]any)["resourceVersion"] = cloudRV
	}
	return json.Marshal(m)
}

func (s *Storage) translateJSONPatch(info resource.Info, key resource.Key, sub string, patch []byte) ([]byte, error) {
	var ops []map[string]any
	if err := json.Unmarshal(patch, &ops); err != nil {
		return patch, nil
	}
	changed := false
	kept := ops[:0:0]
	for _, op := range ops {
		rv, ok := op["value"].(string)
		if p, _ := op["path"].(string); p != "/metadata/resourceVersion" || !ok {
			kept = append(kept, op)
			continue
		}
		cloudRV, err := s.cloudVersion(info, key, rv)
		if err != nil {
			return nil, err
		}
		changed = true
		if !statusMovesUnseen(info, sub) {
			op["value"] = cloudRV
			kept = append(kept, op)
		}
	}
	if !changed {
		return patch, nil
	}
	return json.Marshal(kept)
}

// cloudVersion maps a local version of key to the cloud's, or fails with 409 if it is stale.
func (s *Storage) cloudVersion(info resource.Info, key resource.Key, local string) (string, error) {
	rec, err := s.store.Get(resource.StoreKey(key))
	if err != nil {
		return "", kubeapi.Unavailable("the edge store cannot be read: %v", err)
	}
	if rec == nil {
		return "", kubeapi.NotFound(info.Group, info.Resource, key.Name)
	}
	if local != strconv.FormatUint(rec.LocalRev, 10) || rec.CloudRV == "" {
		return "", staleVersion(info, key.Name)
	}
	return rec.CloudRV, nil
}

func staleVersion(info resource.Info, name string) error {
	return kubeapi.Conflict(info.Group, info.Resource, name,
		errors.New("the object has been modified; please apply your changes to the latest version and try again"))
}

// forward sends one write to the cloud. No answer is a 503 (not connected: nothing was sent)
// or a 504 (sent, but no answer in time or the session ended: the write may or may not have
// been made).
func (s *Storage) forward(ctx context.Context, method, p, contentType string, body []byte) (*protocol.Response, error) {
	if s.fwd == nil {
		return nil, kubeapi.Unavailable("this metaserver does not forward writes to the cloud")
	}
	ctx, cancel := context.WithTimeout(ctx, s.forwardTimeout)
	defer cancel()
	resp, err := s.fwd.Forward(ctx, &protocol.Request{Method: method, Path: p, ContentType: contentType, Body: body})
	switch {
	case err == nil:
		return resp, nil
	case ctx.Err() != nil:
		return nil, apierrors.NewTimeoutError("the cloud did not answer in time; the write may or may not have been made", 1)
	case errors.Is(err, edgehub.ErrAnswerLost):
		return nil, apierrors.NewTimeoutError("the connection to the cloud ended before its answer; the write may or may not have been made", 1)
	}
	return nil, kubeapi.Unavailable("the edge is not connected to the cloud, and writes need it (%v); nothing was changed", err)
}

// applyAnswer turns the cloud's answer into this storage's: an error Status as an error, an
// object as stored at the edge (with the edge's version). deleted is set for deletes, whose
// answer (a Status, or the object as it was) is passed through.
func (s *Storage) applyAnswer(ctx context.Context, info resource.Info, resp *protocol.Response, deleted *resource.Key) ([]byte, error) {
	if resp.Code/100 != 2 {
		var st metav1.Status
		if err := json.Unmarshal(resp.Body, &st); err != nil || st.Kind != "Status" {
			return nil, kubeapi.Internal(errors.New("the cloud answered " + strconv.Itoa(int(resp.Code)) + " without a Status"))
		}
		if st.Code == 0 {
			st.Code = int32(resp.Code)
		}
		return nil, &apierrors.StatusError{ErrStatus: st}
	}
	if deleted != nil {
		return resp.Body, nil
	}
	var head struct {
		Metadata struct {
			Name, Namespace, ResourceVersion string
		}
	}
	if err := json.Unmarshal(resp.Body, &head); err != nil {
		return nil, kubeapi.Internal(errors.New("the cloud answered with something that is not an object"))
	}
	rev, err := strconv.ParseUint(head.Metadata.ResourceVersion, 10, 64)
	if err != nil || head.Metadata.Name == "" {
		return nil, kubeapi.Internal(errors.New("the cloud's answer has no name or version"))
	}
	key := resource.Key{Resource: info.GroupResource(), Name: head.Metadata.Name}
	if info.Namespaced {
		key.Namespace = head.Metadata.Namespace
	}
	rec, err := s.store.ApplyLocal(ctx, key, rev, resp.Body)
	if err != nil {
		return nil, kubeapi.Unavailable("the cloud made the write but the edge store could not record it: %v", err)
	}
	if rec == nil {
		// Not kept at the edge (a reset is under way, or the hub has since deleted it): the
		// cloud's object, without a version the client could confuse with the edge's.
		return setVersion(resp.Body, ""), nil
	}
	return rec.Object, nil
}

// path is the API path of a collection, an object or its subresource.
func path(info resource.Info, ns, name, sub string) string {
	var b strings.Builder
	if info.Group == "" {
		b.WriteString("/api/" + info.Version)
	} else {
		b.WriteString("/apis/" + info.Group + "/" + info.Version)
	}
	if info.Namespaced {
		b.WriteString("/namespaces/" + ns)
	}
	b.WriteString("/" + info.Resource)
	if name != "" {
		b.WriteString("/" + name)
	}
	if sub != "" {
		b.WriteString("/" + sub)
	}
	return b.String()
}
