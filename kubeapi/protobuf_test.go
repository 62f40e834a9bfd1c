package kubeapi

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// protobufBody encodes obj as Kubernetes' protobuf wire form, as client-go does.
func protobufBody(t testing.TB, obj runtime.Object) []byte {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	if err := protobuf.NewSerializer(scheme, scheme).Encode(obj, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestProtobufCreate: a typed client-go client sending protobuf (as current kubectl does for
// `create namespace` and `create configmap`) creates the object, which the storage receives as
// JSON; a protobuf kind the server has no Go type for is a 415, and a damaged body a 400.
func TestProtobufCreate(t *testing.T) {
	srv, _ := newTestServer(t, nil)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL, ContentConfig: rest.ContentConfig{ContentType: mediaProtobuf}})
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: "ns", Labels: map[string]string{"app": "x"}}, Data: map[string]string{"mode": "eco"}}
	got, err := cs.CoreV1().ConfigMaps("ns").Create(context.Background(), cm, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "settings" || got.Data["mode"] != "eco" || got.Labels["app"] != "x" {
		t.Fatalf("created %+v", got)
	}

	post := func(body []byte) (int, string) {
		resp, err := http.Post(srv.URL+"/api/v1/namespaces/ns/configmaps", mediaProtobuf, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out bytes.Buffer
		out.ReadFrom(resp.Body)
		return resp.StatusCode, out.String()
	}
	deploy := &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}, ObjectMeta: metav1.ObjectMeta{Name: "d"}}
	if code, out := post(protobufBody(t, deploy)); code != http.StatusUnsupportedMediaType {
		t.Fatalf("a Deployment in protobuf: %d %s", code, out)
	}
	good := protobufBody(t, &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: metav1.ObjectMeta{Name: "c"}})
	for _, bad := range [][]byte{good[:len(good)-3], []byte("k8s\x00\xff\xff\xff"), []byte("not protobuf")} {
		if code, out := post(bad); code != http.StatusBadRequest || !strings.Contains(out, "protobuf") {
			t.Fatalf("body %q: %d %s", bad, code, out)
		}
	}
	// A Namespace sent for the configmaps URL is refused as any body of the wrong kind is.
	ns := protobufBody(t, &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: "x"}})
	if code, out := post(ns); code != http.StatusBadRequest || !strings.Contains(out, "Namespace") {
		t.Fatalf("a Namespace for the configmaps URL: %d %s", code, out)
	}
}

// FuzzProtobufBody: whatever bytes come as a protobuf body, the decoder returns the JSON of one
// object or a client error Status, and never panics.
func FuzzProtobufBody(f *testing.F) {
	f.Add(protobufBody(f, &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "c", Labels: map[string]string{"a": "b"}}, Data: map[string]string{"k": "v"}}))
	f.Add(protobufBody(f, &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{NodeName: "n", Containers: []corev1.Container{{Name: "c", Image: "i"}}}}))
	f.Add(protobufBody(f, &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}}))
	f.Add([]byte("k8s\x00"))
	d, err := newProtobufDecoder()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := d.toJSON(body)
		if err != nil {
			if c := statusOf(err).Code; c != http.StatusBadRequest && c != http.StatusUnsupportedMediaType {
				t.Fatalf("error without a client Status: %v", err)
			}
			return
		}
		if _, err := DecodeBody("application/json", out); err != nil {
			t.Fatalf("accepted %q as %q, which is not one JSON object: %v", body, out, err)
		}
	})
}
