package e2e

import "fmt"

// Builders for the objects the tests store. They are plain maps: what a client would send.

const ns = "shop"

func meta(name string) map[string]any { return map[string]any{"name": name, "namespace": ns} }

func podObj(name, node string, configMaps, secrets []string) map[string]any {
	var volumes []any
	for _, c := range configMaps {
		volumes = append(volumes, map[string]any{"name": "cm-" + c, "configMap": map[string]any{"name": c}})
	}
	var envFrom []any
	for _, s := range secrets {
		envFrom = append(envFrom, map[string]any{"secretRef": map[string]any{"name": s}})
	}
	return map[string]any{
		"apiVersion": "v1", "kind": "Pod", "metadata": meta(name),
		"spec": map[string]any{"nodeName": node, "volumes": volumes,
			"containers": []any{map[string]any{"name": "app", "image": "busybox", "envFrom": envFrom}}},
	}
}

func configMapObj(name string, data map[string]string) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(name), "data": data}
}

func secretObj(name string) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": meta(name), "stringData": map[string]string{"k": "v"}}
}

func serviceObj(name string) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": meta(name),
		"spec": map[string]any{"ports": []any{map[string]any{"port": 80}}}}
}

func sliceObj(name, service string, nodes ...string) map[string]any {
	var eps []any
	for i, n := range nodes {
		eps = append(eps, map[string]any{"addresses": []string{fmt.Sprintf("10.0.0.%d", i+1)}, "nodeName": n})
	}
	m := meta(name)
	m["labels"] = map[string]string{"kubernetes.io/service-name": service}
	return map[string]any{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": m,
		"addressType": "IPv4", "endpoints": eps}
}

func deviceObj(name, node, model string) map[string]any {
	return map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "metadata": meta(name),
		"spec": map[string]any{"nodeName": node, "deviceModelRef": map[string]any{"name": model},
			"properties": []any{map[string]any{"name": "temperature", "desired": map[string]any{"value": "20"}}}}}
}

func modelObj(name string) map[string]any {
	return map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel", "metadata": meta(name),
		"spec": map[string]any{"properties": []any{map[string]any{"name": "temperature", "type": "INT", "accessMode": "ReadWrite"}}}}
}

// Collection paths, by resource.
var paths = map[string]string{
	"pods":           "/api/v1/namespaces/" + ns + "/pods",
	"configmaps":     "/api/v1/namespaces/" + ns + "/configmaps",
	"secrets":        "/api/v1/namespaces/" + ns + "/secrets",
	"services":       "/api/v1/namespaces/" + ns + "/services",
	"endpointslices": "/apis/discovery.k8s.io/v1/namespaces/" + ns + "/endpointslices",
	"devices":        "/apis/devices.kubeedge.io/v1beta1/namespaces/" + ns + "/devices",
	"devicemodels":   "/apis/devices.kubeedge.io/v1beta1/namespaces/" + ns + "/devicemodels",
	"nodes":          "/api/v1/nodes",
}

func q(names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = ns + "/" + n
	}
	return out
}
