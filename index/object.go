package index

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
)

// Object is one served object at one revision.
type Object struct {
	Key       resource.Key
	StoreKey  string
	Info      resource.Info
	CreateRev int64
	ModRev    int64
	// Raw is the object's JSON as clients and edges receive it: the stored value with
	// metadata.resourceVersion set to ModRev.
	Raw []byte
	// Content is a hash of the object without its resourceVersion and without the status the
	// edge itself is the source of (see reported). Two versions with the same Content differ
	// only there: such a change is not sent back down.
	Content uint64
	Meta
	Route
	// Slice is the routing part of an EndpointSlice (topology.go); nil for other kinds.
	Slice *Slice
}

// Meta is the part of metadata selectors and the hub need.
type Meta struct {
	UID         string
	Created     time.Time
	Labels      map[string]string
	Annotations map[string]string
}

// Route is the part of an object that decides which nodes see what. It is small on purpose:
// the hub keeps one per recent change.
type Route struct {
	// Node is the node the object is bound to: spec.nodeName of a Pod or Device, the name of a
	// Node. Empty for everything else.
	Node string
	// Refs are the store keys of objects this one needs on its node: a Pod's ConfigMaps and
	// Secrets, a Device's DeviceModel.
	Refs []string
}

// nodeIndex and refs are what memdb indexes; derived at decode time.
func (o *Object) nodeIndex() string {
	if o.Node == "" {
		return ""
	}
	return o.Key.Resource + "/" + o.Node
}

// Decode builds an Object from a stored KV. It fails for keys outside the served kinds and for
// values that are not JSON objects (which the API never writes, so it signals a damaged store).
func Decode(reg *resource.Registry, kv store.KV) (*Object, error) {
	key, info, err := reg.ParseStoreKey(kv.Key)
	if err != nil {
		return nil, err
	}
	raw, content, err := stamp(kv.Value, kv.ModRev, key.Resource)
	if err != nil {
		return nil, fmt.Errorf("index: %s: %w", kv.Key, err)
	}
	var head objectHead
	if err := json.Unmarshal(kv.Value, &head); err != nil {
		return nil, fmt.Errorf("index: %s: metadata: %w", kv.Key, err)
	}
	o := &Object{Key: key, StoreKey: kv.Key, Info: info, CreateRev: kv.CreateRev, ModRev: kv.ModRev, Raw: raw, Content: content}
	o.UID = head.Metadata.UID
	o.Created = head.Metadata.CreationTimestamp
	o.Labels = head.Metadata.Labels
	o.Annotations = head.Metadata.Annotations
	if o.Route, err = routeOf(key, head.Spec); err != nil {
		return nil, fmt.Errorf("index: %s: spec: %w", kv.Key, err)
	}
	if key.Resource == resource.EndpointSlices {
		if o.Slice, err = decodeSlice(key, o.Labels, raw); err != nil {
			return nil, fmt.Errorf("index: %s: %w", kv.Key, err)
		}
	}
	return o, nil
}

// SetResourceVersion returns obj with metadata.resourceVersion set to rev. The store keeps
// values without a trustworthy version (etcd assigns the revision after the value is written),
// so the version is stamped on the way out, as the Kubernetes API server does.
func SetResourceVersion(obj []byte, rev int64) ([]byte, error) {
	m, md, err := decodeMap(obj)
	if err != nil {
		return nil, err
	}
	md["resourceVersion"] = strconv.FormatInt(rev, 10)
	return json.Marshal(m)
}

// stamp is SetResourceVersion that also returns the Content hash of an object of the given
// resource.
func stamp(obj []byte, rev int64, res string) ([]byte, uint64, error) {
	m, md, err := decodeMap(obj)
	if err != nil {
		return nil, 0, err
	}
	md["resourceVersion"] = strconv.FormatInt(rev, 10)
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, 0, err
	}
	delete(md, "resourceVersion")
	reported(res, m)
	rest, err := json.Marshal(m)
	if err != nil {
		return nil, 0, err
	}
	h := fnv.New64a()
	h.Write(rest)
	return raw, h.Sum64(), nil
}

// reported removes from m, an object of resource res, the status that an edge is the source
// of, so that a change to it alone is not echoed back to the edge that reported it:
//   - a Device's whole status: the twins and state its edge reports (the edge's twin engine
//     holds them, newer than any copy the cloud could send);
//   - a Node's heartbeat times: the hub refreshes them while the node is connected, and sending
//     each refresh down would cost every idle node a message per StatusInterval.
//
// (resource.StatusPartlyUnrouted names these two kinds, for the edge's metaserver.)
//
// Every other status change is routed like any change, so the edge's copy of its Node (Ready,
// and what it reported about itself) and of its Pods and Services follows the cloud's.
//
// The epoch of the session whose report an object holds (resource.AnnotationReportEpoch) is left
// out too: it moves with the reports.
func reported(res string, m map[string]any) {
	if md, _ := m["metadata"].(map[string]any); md != nil {
		if ann, _ := md["annotations"].(map[string]any); ann != nil {
			if _, ok := ann[resource.AnnotationReportEpoch]; ok {
				delete(ann, resource.AnnotationReportEpoch)
				if len(ann) == 0 {
					delete(md, "annotations") // as the object was before its first report
				}
			}
		}
	}
	switch res {
	case resource.Devices:
		delete(m, "status")
	case resource.Nodes:
		status, _ := m["status"].(map[string]any)
		conds, _ := status["conditions"].([]any)
		for _, c := range conds {
			if c, ok := c.(map[string]any); ok {
				delete(c, "lastHeartbeatTime")
			}
		}
	}
}

func decodeMap(obj []byte) (m, md map[string]any, err error) {
	d := json.NewDecoder(bytes.NewReader(obj))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return nil, nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if m == nil {
		return nil, nil, fmt.Errorf("not a JSON object: null")
	}
	md, _ = m["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
		m["metadata"] = md
	}
	return m, md, nil
}

// objectHead is the part every served kind shares.
type objectHead struct {
	Metadata struct {
		UID               string            `json:"uid"`
		CreationTimestamp time.Time         `json:"creationTimestamp"`
		Labels            map[string]string `json:"labels"`
		Annotations       map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec json.RawMessage `json:"spec"`
}

// boundSpec is the part of a Pod's or Device's spec that routing reads.
type boundSpec struct {
	NodeName       string      `json:"nodeName"`
	DeviceModelRef *nameRef    `json:"deviceModelRef"`
	Volumes        []volume    `json:"volumes"`
	Containers     []container `json:"containers"`
	InitContainers []container `json:"initContainers"`
	Ephemeral      []container `json:"ephemeralContainers"`
	PullSecrets    []nameRef   `json:"imagePullSecrets"`
}

type nameRef struct {
	Name string `json:"name"`
}

type volume struct {
	ConfigMap *nameRef `json:"configMap"`
	Secret    *struct {
		SecretName string `json:"secretName"`
	} `json:"secret"`
	Projected *struct {
		Sources []struct {
			ConfigMap *nameRef `json:"configMap"`
			Secret    *nameRef `json:"secret"`
		} `json:"sources"`
	} `json:"projected"`
	// Volume plugins that take a Secret, as Kubernetes' node authorizer lets a node read it.
	CSI *struct {
		NodePublishSecretRef *nameRef `json:"nodePublishSecretRef"`
	} `json:"csi"`
	CephFS     *secretRefOf `json:"cephfs"`
	RBD        *secretRefOf `json:"rbd"`
	ISCSI      *secretRefOf `json:"iscsi"`
	FlexVolume *secretRefOf `json:"flexVolume"`
	ScaleIO    *secretRefOf `json:"scaleIO"`
	StorageOS  *secretRefOf `json:"storageos"`
	Cinder     *secretRefOf `json:"cinder"`
	AzureFile  *struct {
		SecretName string `json:"secretName"`
	} `json:"azureFile"`
}

// secretRefOf is a volume plugin's secretRef.
type secretRefOf struct {
	SecretRef *nameRef `json:"secretRef"`
}

// secrets are the names of the Secrets v's plugin takes.
func (v *volume) secrets() []string {
	var out []string
	for _, p := range []*secretRefOf{v.CephFS, v.RBD, v.ISCSI, v.FlexVolume, v.ScaleIO, v.StorageOS, v.Cinder} {
		if p != nil && p.SecretRef != nil {
			out = append(out, p.SecretRef.Name)
		}
	}
	if v.CSI != nil && v.CSI.NodePublishSecretRef != nil {
		out = append(out, v.CSI.NodePublishSecretRef.Name)
	}
	if v.AzureFile != nil {
		out = append(out, v.AzureFile.SecretName)
	}
	return out
}

type container struct {
	EnvFrom []struct {
		ConfigMapRef *nameRef `json:"configMapRef"`
		SecretRef    *nameRef `json:"secretRef"`
	} `json:"envFrom"`
	Env []struct {
		ValueFrom *struct {
			ConfigMapKeyRef *nameRef `json:"configMapKeyRef"`
			SecretKeyRef    *nameRef `json:"secretKeyRef"`
		} `json:"valueFrom"`
	} `json:"env"`
}

func routeOf(key resource.Key, spec json.RawMessage) (Route, error) {
	switch key.Resource {
	case resource.Nodes:
		return Route{Node: key.Name}, nil
	case resource.Pods, resource.Devices:
	default:
		return Route{}, nil
	}
	var s boundSpec
	if len(spec) > 0 {
		if err := json.Unmarshal(spec, &s); err != nil {
			return Route{}, err
		}
	}
	if key.Resource == resource.Pods {
		return Route{Node: s.NodeName, Refs: podRefs(key.Namespace, &s)}, nil
	}
	r := Route{Node: s.NodeName}
	if m := s.DeviceModelRef; m != nil && m.Name != "" {
		r.Refs = []string{resource.StoreKey(resource.Key{Resource: resource.DeviceModels, Namespace: key.Namespace, Name: m.Name})}
	}
	return r, nil
}

// podRefs lists the ConfigMaps and Secrets a pod needs on its node, deduplicated, in a stable
// order: volumes (plain and projected), envFrom, env valueFrom and image pull secrets.
func podRefs(ns string, s *boundSpec) []string {
	var refs []string
	seen := map[string]bool{}
	add := func(res, name string) {
		if name == "" {
			return
		}
		k := resource.StoreKey(resource.Key{Resource: res, Namespace: ns, Name: name})
		if !seen[k] {
			seen[k] = true
			refs = append(refs, k)
		}
	}
	for _, v := range s.Volumes {
		if v.ConfigMap != nil {
			add(resource.ConfigMaps, v.ConfigMap.Name)
		}
		if v.Secret != nil {
			add(resource.Secrets, v.Secret.SecretName)
		}
		for _, name := range v.secrets() {
			add(resource.Secrets, name)
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.ConfigMap != nil {
					add(resource.ConfigMaps, src.ConfigMap.Name)
				}
				if src.Secret != nil {
					add(resource.Secrets, src.Secret.Name)
				}
			}
		}
	}
	for _, list := range [][]container{s.InitContainers, s.Containers, s.Ephemeral} {
		for _, c := range list {
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil {
					add(resource.ConfigMaps, e.ConfigMapRef.Name)
				}
				if e.SecretRef != nil {
					add(resource.Secrets, e.SecretRef.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
					add(resource.ConfigMaps, r.Name)
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil {
					add(resource.Secrets, r.Name)
				}
			}
		}
	}
	for _, ps := range s.PullSecrets {
		add(resource.Secrets, ps.Name)
	}
	return refs
}
