package kubeapi

import (
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
)

// mediaProtobuf is the Kubernetes protobuf encoding. Current kubectl sends it for the built-in
// kinds it builds itself (`kubectl create namespace`, `create configmap`, `create secret`);
// answers stay JSON, which it accepts too.
const mediaProtobuf = "application/vnd.kubernetes.protobuf"

// protobufDecoder reads protobuf bodies of the built-in kinds.
type protobufDecoder struct{ s *protobuf.Serializer }

func newProtobufDecoder() (protobufDecoder, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return protobufDecoder{}, err
	}
	if err := discoveryv1.AddToScheme(scheme); err != nil {
		return protobufDecoder{}, err
	}
	return protobufDecoder{s: protobuf.NewSerializer(scheme, scheme)}, nil
}

// toJSON turns a protobuf body into the JSON of the same object. A body that is not a
// protobuf object of a built-in kind is a 415 naming what was sent, or a 400 when it cannot be
// read; the decoder is bounded by the body, which readBody bounds.
func (d protobufDecoder) toJSON(body []byte) (b []byte, err error) {
	defer func() {
		// Generated unmarshalling code is not meant to panic; if it does on hostile bytes, the
		// request fails and the process does not.
		if p := recover(); p != nil {
			b, err = nil, BadRequest("the request body is not a Kubernetes protobuf object: %v", p)
		}
	}()
	obj, gvk, err := d.s.Decode(body, nil, nil)
	switch {
	case runtime.IsNotRegisteredError(err):
		return nil, unsupportedMedia(mediaProtobuf) // a kind without a protobuf form here
	case err != nil:
		return nil, BadRequest("the request body is not a Kubernetes protobuf object: %v", err)
	}
	obj.GetObjectKind().SetGroupVersionKind(*gvk)
	b, err = json.Marshal(obj)
	if err != nil {
		return nil, BadRequest("the request body cannot be converted to JSON: %v", err)
	}
	return b, nil
}
