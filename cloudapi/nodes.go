package cloudapi

import (
	"context"
	"encoding/json"

	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tetherhub/tether/kubeapi"
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

// Register implements join.Nodes: it creates the Node on first join; on a later join (the edge
// lost its data dir) it adds the labels given and leaves everything else as the cloud has it.
func (n *Nodes) Register(ctx context.Context, name string, labels map[string]string) error {
	md := map[string]any{"name": name}
	if len(labels) > 0 {
		md["labels"] = labels
	}
	node := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": md, "spec": map[string]any{}}
	body, _ := json.Marshal(node)
	_, err := n.objects.Create(ctx, n.info, "", body)
	if err == nil || !apierrors.IsAlreadyExists(err) {
		return err
	}
	if len(labels) == 0 {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if _, err := n.objects.Patch(ctx, n.info, "", name, "", kubeapi.MergePatch, patch); err != nil {
		return fmt.Errorf("label node %s: %w", name, err)
	}
	return nil
}
