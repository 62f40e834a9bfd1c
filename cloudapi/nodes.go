package cloudapi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tetherhub/tether/cloudhub"
	"github.com/tetherhub/tether/join"
	"github.com/tetherhub/tether/resource"
)

// Nodes registers joining nodes as Node objects. It implements join.Nodes.
type Nodes struct {
	objects *Objects
	info    resource.Info
}

// NewNodes returns the node registrar over objects.
func NewNodes(objects *Objects, reg *resource.Registry) *Nodes {
	info, _ := reg.ByGroupResource(resource.Nodes)
	return &Nodes{objects: objects, info: info}
}

// Joined implements join.Nodes: the certificates-since of the Node (zero without one).
func (n *Nodes) Joined(ctx context.Context, name string) (time.Time, error) {
	snap, err := n.objects.latest(ctx)
	if err != nil {
		return time.Time{}, err
	}
	node := snap.Get(storeKey(n.info, "", name))
	if node == nil {
		return time.Time{}, nil
	}
	t, _ := time.Parse(time.RFC3339Nano, node.Annotations[cloudhub.AnnotationCertificatesSince])
	return t, nil
}

// Register implements join.Nodes: it creates the Node on first join; on a later join (the edge
// lost its data dir) it adds the labels given and leaves everything else as the cloud has it.
// Either way it records on the Node which certificates the hub accepts from now on (see
// cloudhub.AnnotationJoinedUID): this Node object's, issued at certIssued (pki.IssuedAt) or later. An
// earlier certificate of the name, or any certificate once the Node is deleted and created
// again, is refused until the node joins again. A join whose certificate was issued before one
// already recorded for this Node object gets join.ErrLaterJoin and records nothing.
func (n *Nodes) Register(ctx context.Context, name string, labels map[string]string, certIssued time.Time) error {
	md := map[string]any{"name": name}
	node := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": md, "spec": map[string]any{}}
	body, _ := json.Marshal(node)
	if _, err := n.objects.Create(ctx, n.info, "", body); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	since := certIssued.UTC().Format(time.RFC3339Nano)
	_, err := n.objects.write(context.WithValue(ctx, joinWriteKey{}, true), n.info, "", name, "", 0, func(cur object) (object, error) {
		md := cur.metadata()
		uid, _ := md["uid"].(string)
		annotations, _ := md["annotations"].(map[string]any)
		if annotations == nil {
			annotations = map[string]any{}
		}
		if annotations[cloudhub.AnnotationJoinedUID] == uid {
			// Two joins of the name signed close together may get here in either order: the
			// later certificate's must win, or the older certificate would be let back in.
			held, _ := annotations[cloudhub.AnnotationCertificatesSince].(string)
			if t, err := time.Parse(time.RFC3339Nano, held); err == nil && t.After(certIssued) {
				return nil, join.ErrLaterJoin
			}
		}
		annotations[cloudhub.AnnotationJoinedUID] = uid
		annotations[cloudhub.AnnotationCertificatesSince] = since
		md["annotations"] = annotations
		if len(labels) > 0 {
			have, _ := md["labels"].(map[string]any)
			if have == nil {
				have = map[string]any{}
			}
			for k, v := range labels {
				have[k] = v
			}
			md["labels"] = have
		}
		return cur, nil
	})
	if err != nil {
		return fmt.Errorf("record the join of node %s: %w", name, err)
	}
	return nil
}
