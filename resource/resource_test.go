package resource

import "testing"

func TestStoreKeysRoundTrip(t *testing.T) {
	reg := New()
	for _, k := range []Key{
		{Resource: Pods, Namespace: "default", Name: "web"},
		{Resource: Nodes, Name: "edge-1"},
		{Resource: Devices, Namespace: "ns", Name: "d.1"},
		{Resource: NodeGroups, Name: "east"},
		{Resource: EndpointSlices, Namespace: "ns", Name: "svc-abc"},
	} {
		got, info, err := reg.ParseStoreKey(StoreKey(k))
		if err != nil || got != k || info.GroupResource() != k.Resource {
			t.Errorf("%v: parsed %v %v %v", k, got, info.GroupResource(), err)
		}
	}
	for _, bad := range []string{"", "pods/x", "/nope/a/b", "/pods/onlyns", "/pods//x", "/nodes/a/b", "/tether/tokens/abc"} {
		if _, _, err := reg.ParseStoreKey(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestLookups(t *testing.T) {
	reg := New()
	dev, ok := reg.ByURL(GroupDevices, "v1beta1", "devices")
	if !ok || dev.Kind != "Device" || !dev.Namespaced || dev.ShortNames[0] != "dev" || dev.APIVersion() != "devices.kubeedge.io/v1beta1" {
		t.Fatalf("devices = %+v", dev)
	}
	if ng, ok := reg.ByKind("apps.kubeedge.io/v1alpha1", "NodeGroup"); !ok || ng.Namespaced || ng.ShortNames[0] != "ng" {
		t.Fatalf("nodegroups = %+v", ng)
	}
	if _, ok := reg.ByURL("", "v1", "deployments"); ok {
		t.Fatal("an unserved kind was found")
	}
	if Prefix(Pods, "a") != "/pods/a/" || Prefix(Nodes, "") != "/nodes/" {
		t.Fatal("prefixes")
	}
}
