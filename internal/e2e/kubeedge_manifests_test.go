package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// KubeEdge's own manifests, in the shapes of its v1beta1 CRDs (../shared/testdata/kubeedge-crds),
// must apply unchanged through the cloud API, come back unchanged from the cloud and the edge,
// and the status the edge reports must fit the CRD too.

const kubeEdgeModel = `
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: beta1-model
  namespace: shop
  labels:
    vendor: acme
spec:
  protocol: modbus
  properties:
  - name: temperature
    description: temperature in degree celsius
    type: INT
    accessMode: ReadWrite
    maximum: "100"
    minimum: "1"
    unit: degree celsius
  - name: humidity
    description: relative humidity
    type: FLOAT
    accessMode: ReadOnly
    unit: percent
  - name: switch
    type: BOOLEAN
    accessMode: ReadWrite
    visitors:
      protocolName: modbus
      configData:
        register: CoilRegister
        offset: 1
`

const kubeEdgeDevice = `
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: beta1-device
  namespace: shop
  labels:
    model: beta1-model
  annotations:
    devices.kubeedge.io/description: greenhouse sensor
spec:
  deviceModelRef:
    name: beta1-model
  nodeName: edge-m
  protocol:
    protocolName: modbus
    configData:
      deviceID: 2
      serialPort: /dev/ttyS0
      baudRate: 9600
      dataBits: 8
      parity: even
      stopBits: 1
      protocolID: 1
  properties:
  - name: temperature
    collectCycle: 10000
    reportCycle: 10000
    reportToCloud: true
    desired:
      value: "30"
      metadata:
        timestamp: "1700000000000"
        type: int
    visitors:
      protocolName: modbus
      configData:
        register: HoldingRegister
        offset: 2
        limit: 1
        scale: 1.5
        isSwap: true
        isRegisterSwap: true
        dataType: int
    pushMethod:
      mqtt:
        address: tcp://127.0.0.1:1883
        topic: temperature
        qos: 0
        retained: false
      dbMethod:
        influxdb2:
          influxdb2ClientConfig:
            url: http://127.0.0.1:8086
            org: acme
            bucket: sensors
          influxdb2DataConfig:
            measurement: greenhouse
            tag:
              unit: celsius
            fieldKey: temperature
  - name: humidity
    reportToCloud: true
    visitors:
      protocolName: modbus
      configData:
        register: InputRegister
        offset: 3
        limit: 1
  methods:
  - name: setTemperature
    description: set the target temperature
    propertyNames:
    - temperature
  stateReport:
    reportCycle: 5000
    reportToCloud: true
`

// crdSchema returns the openAPIV3Schema of version v1beta1 in a KubeEdge CRD file.
func crdSchema(t *testing.T, file string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "testdata", "kubeedge-crds", file))
	if err != nil {
		t.Skipf("KubeEdge CRDs not available: %v", err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				}
			}
		}
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name == "v1beta1" {
			return v.Schema.OpenAPIV3Schema
		}
	}
	t.Fatalf("%s has no v1beta1", file)
	return nil
}

// fitsSchema reports every field of v the schema does not allow, or whose JSON type differs.
func fitsSchema(path string, v any, s map[string]any) []string {
	if s == nil || s["x-kubernetes-preserve-unknown-fields"] == true {
		return nil
	}
	var errs []string
	typ, _ := s["type"].(string)
	switch v := v.(type) {
	case map[string]any:
		if typ != "" && typ != "object" {
			return []string{fmt.Sprintf("%s: object, CRD says %s", path, typ)}
		}
		props, _ := s["properties"].(map[string]any)
		addl, _ := s["additionalProperties"].(map[string]any)
		for k, fv := range v {
			switch {
			case props[k] != nil:
				errs = append(errs, fitsSchema(path+"."+k, fv, props[k].(map[string]any))...)
			case addl != nil:
				errs = append(errs, fitsSchema(path+"."+k, fv, addl)...)
			default:
				errs = append(errs, fmt.Sprintf("%s.%s: not in the CRD", path, k))
			}
		}
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if _, has := v[r.(string)]; !has {
					errs = append(errs, fmt.Sprintf("%s.%s: required by the CRD", path, r))
				}
			}
		}
	case []any:
		if typ != "array" {
			return []string{fmt.Sprintf("%s: array, CRD says %s", path, typ)}
		}
		items, _ := s["items"].(map[string]any)
		for i, iv := range v {
			errs = append(errs, fitsSchema(fmt.Sprintf("%s[%d]", path, i), iv, items)...)
		}
	case string:
		if typ != "string" {
			errs = append(errs, fmt.Sprintf("%s: string, CRD says %s", path, typ))
		}
		if enum, ok := s["enum"].([]any); ok {
			found := false
			for _, e := range enum {
				found = found || e == v
			}
			if !found {
				errs = append(errs, fmt.Sprintf("%s: %q not in the CRD's enum", path, v))
			}
		}
	case json.Number:
		if typ != "integer" && typ != "number" {
			errs = append(errs, fmt.Sprintf("%s: number, CRD says %s", path, typ))
		}
	case bool:
		if typ != "boolean" {
			errs = append(errs, fmt.Sprintf("%s: boolean, CRD says %s", path, typ))
		}
	}
	sort.Strings(errs)
	return errs
}

func decodeNumbers(t *testing.T, b []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func manifestJSON(t *testing.T, y string) []byte {
	t.Helper()
	b, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKubeEdgeManifestsUnchanged(t *testing.T) {
	deviceSchema := crdSchema(t, "devices_v1beta1_device.yaml")
	modelSchema := crdSchema(t, "devices_v1beta1_devicemodel.yaml")
	statusSchema := crdSchema(t, "devices_v1beta1_devicestatus.yaml")
	c := newCloud(t)
	e := newEdge(t, c, "edge-m")

	var edgeChecks []func()
	for _, tc := range []struct {
		res, name, manifest string
		schema              map[string]any
	}{
		{"devicemodels", "beta1-model", kubeEdgeModel, modelSchema},
		{"devices", "beta1-device", kubeEdgeDevice, deviceSchema},
	} {
		body := manifestJSON(t, tc.manifest)
		sent := decodeNumbers(t, body)
		// The manifest itself is valid under KubeEdge's CRD: this is what its users apply.
		props := tc.schema["properties"].(map[string]any)
		if errs := fitsSchema("spec", sent["spec"], props["spec"].(map[string]any)); len(errs) > 0 {
			t.Fatalf("%s manifest does not fit the CRD: %v", tc.name, errs)
		}
		code, out := do(t, http.MethodPost, c.url(paths[tc.res]), "application/json", body)
		if code != http.StatusCreated && code != http.StatusOK {
			t.Fatalf("create %s: %d %s", tc.name, code, out)
		}
		same := func(where string, got map[string]any) {
			t.Helper()
			if !reflect.DeepEqual(got["spec"], sent["spec"]) {
				t.Fatalf("%s: %s spec changed\nsent %s\ngot  %s", where, tc.name, mustJSON(sent["spec"]), mustJSON(got["spec"]))
			}
			gm, sm := got["metadata"].(map[string]any), sent["metadata"].(map[string]any)
			for _, k := range []string{"labels", "annotations", "name", "namespace"} {
				if !reflect.DeepEqual(gm[k], sm[k]) {
					t.Fatalf("%s: %s metadata.%s changed: %v → %v", where, tc.name, k, sm[k], gm[k])
				}
			}
			if got["apiVersion"] != sent["apiVersion"] || got["kind"] != sent["kind"] {
				t.Fatalf("%s: %s apiVersion/kind changed", where, tc.name)
			}
		}
		same("create answer", decodeNumbers(t, out))
		_, out = do(t, http.MethodGet, c.url(paths[tc.res]+"/"+tc.name), "", nil)
		cur := decodeNumbers(t, out)
		same("cloud GET", cur)
		// Applied again unchanged (as kubectl apply does with the stored version): still the same.
		// The edge's twin report may update the Device's status in between, which moves its
		// resourceVersion: a conflict is retried with the version read again, as a client would.
		for attempt := 0; ; attempt++ {
			sent2 := decodeNumbers(t, body)
			sent2["metadata"].(map[string]any)["resourceVersion"] = cur["metadata"].(map[string]any)["resourceVersion"]
			code, out = do(t, http.MethodPut, c.url(paths[tc.res]+"/"+tc.name), "application/json", mustJSON(sent2))
			if code == http.StatusConflict && attempt < 5 {
				_, got := do(t, http.MethodGet, c.url(paths[tc.res]+"/"+tc.name), "", nil)
				cur = decodeNumbers(t, got)
				continue
			}
			if code != http.StatusOK {
				t.Fatalf("update %s: %d %s", tc.name, code, out)
			}
			break
		}
		same("update answer", decodeNumbers(t, out))
		edgeChecks = append(edgeChecks, func() {
			// The edge serves it unchanged too (the model once a Device on the node uses it).
			waitFor(t, 20*time.Second, tc.name+" at the edge", func() bool {
				code, _ := do(t, http.MethodGet, e.url(paths[tc.res]+"/"+tc.name), "", nil)
				return code == http.StatusOK
			})
			_, out := do(t, http.MethodGet, e.url(paths[tc.res]+"/"+tc.name), "", nil)
			same("edge GET", decodeNumbers(t, out))
		})
	}
	for _, check := range edgeChecks {
		check()
	}

	// The twin engine read the manifest: the desired value reaches a mapper, and what it reports
	// lands in a status that fits KubeEdge's DeviceStatus CRD.
	m := newMapper(t, e, nil, ns+"/beta1-device")
	g, err := m.Get(context.Background(), ns+"/beta1-device")
	if err != nil {
		t.Fatal(err)
	}
	if tw := g.Twin["temperature"]; tw == nil || tw.Expected == nil || *tw.Expected.Value != "30" || tw.Metadata.Type != "int" {
		t.Fatalf("twin from the manifest: %s", mustJSON(g.Twin))
	}
	if _, err := m.Report(context.Background(), ns+"/beta1-device", map[string]string{"temperature": "29", "humidity": "61.5", "switch": "true"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetState(context.Background(), ns+"/beta1-device", "online"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "status reported", func() bool {
		s := getDeviceStatus(t, c, "beta1-device")
		v, _ := s.reported("switch")
		return v == "true" && s.State == "online"
	})
	_, out := do(t, http.MethodGet, c.url(paths["devices"]+"/beta1-device"), "", nil)
	got := decodeNumbers(t, out)
	status := got["status"]
	sprops := statusSchema["properties"].(map[string]any)
	if errs := fitsSchema("status", status, sprops["status"].(map[string]any)); len(errs) > 0 {
		t.Fatalf("status does not fit KubeEdge's DeviceStatus CRD: %v\n%s", errs, mustJSON(status))
	}
	sent := decodeNumbers(t, manifestJSON(t, kubeEdgeDevice))
	if !reflect.DeepEqual(got["spec"], sent["spec"]) {
		t.Fatal("reports changed the spec")
	}
	e.stop()
	c.stop()
}
