package kubeapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Errors are apimachinery's StatusError, so that a Storage can return exactly the Status a
// Kubernetes client expects. These helpers name the common cases.

func gr(group, res string) schema.GroupResource {
	return schema.GroupResource{Group: group, Resource: res}
}

// NotFound is the 404 for one object.
func NotFound(group, res, name string) error { return apierrors.NewNotFound(gr(group, res), name) }

// AlreadyExists is the 409 for a create of an existing object.
func AlreadyExists(group, res, name string) error {
	return apierrors.NewAlreadyExists(gr(group, res), name)
}

// Conflict is the 409 for a stale resourceVersion.
func Conflict(group, res, name string, err error) error {
	return apierrors.NewConflict(gr(group, res), name, err)
}

// BadRequest is a 400.
func BadRequest(format string, args ...any) error {
	return apierrors.NewBadRequest(fmt.Sprintf(format, args...))
}

// Invalid is a 422 naming the object and the reason.
func Invalid(kind, name string, format string, args ...any) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusUnprocessableEntity,
		Reason:  metav1.StatusReasonInvalid,
		Details: &metav1.StatusDetails{Kind: kind, Name: name},
		Message: fmt.Sprintf("%s %q is invalid: %s", kind, name, fmt.Sprintf(format, args...)),
	}}
}

// Forbidden is a 403.
func Forbidden(group, res, name string, err error) error {
	return apierrors.NewForbidden(gr(group, res), name, err)
}

// Unavailable is a 503 with a reason the client can show.
func Unavailable(format string, args ...any) error {
	return apierrors.NewServiceUnavailable(fmt.Sprintf(format, args...))
}

// Gone is the 410 (reason Expired) for a version older than what is kept.
func Gone(format string, args ...any) error {
	return apierrors.NewResourceExpired(fmt.Sprintf(format, args...))
}

// TooLarge is the 413 for a body over the limit.
func TooLarge(limit int64) error {
	return apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("request body exceeds the limit of %d bytes", limit))
}

func methodNotAllowed(method, what string) error {
	return apierrors.NewMethodNotSupported(gr("", what), method)
}

func unsupportedMedia(ct string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusUnsupportedMediaType,
		Reason:  metav1.StatusReasonUnsupportedMediaType,
		Message: fmt.Sprintf("the body of the request was in an unknown format (%q); use application/json", ct),
	}}
}

// UnsupportedPatch is the 415 for a patch of a type the server does not apply to this kind
// (server-side apply; a strategic merge patch of a kind without a Go type), worded as Kubernetes
// words it; accepted are the types it does apply.
func UnsupportedPatch(ct string, accepted ...PatchType) error {
	list := make([]string, len(accepted))
	for i, pt := range accepted {
		list[i] = string(pt)
	}
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusUnsupportedMediaType,
		Reason:  metav1.StatusReasonUnsupportedMediaType,
		Message: fmt.Sprintf("the body of the request was in an unknown format (%q) - accepted media types include: %s", ct, strings.Join(list, ", ")),
	}}
}

// Internal wraps an unexpected failure as a 500 without leaking internals beyond the message.
func Internal(err error) error { return apierrors.NewInternalError(err) }

// statusOf turns any error into the Status to send.
func statusOf(err error) metav1.Status {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status()
	}
	return apierrors.NewInternalError(err).Status()
}

// writeStatus writes err as a metav1.Status with its code.
func writeStatus(w http.ResponseWriter, err error) {
	code, body := StatusBody(err)
	if d := statusOf(err).Details; d != nil && d.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(d.RetryAfterSeconds)))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(body)
}

// StatusBody is the HTTP code and the metav1.Status JSON that answer err, for answers that are
// not written to an http.ResponseWriter (a forwarded request's).
func StatusBody(err error) (int, []byte) {
	st := statusOf(err)
	st.Kind, st.APIVersion = "Status", "v1"
	if st.Code == 0 {
		st.Code = http.StatusInternalServerError
	}
	body, _ := json.Marshal(st)
	return int(st.Code), body
}

// MethodNotAllowed is a 405 with a message saying what to do instead.
func MethodNotAllowed(res, msg string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusMethodNotAllowed,
		Reason: metav1.StatusReasonMethodNotAllowed, Message: msg,
		Details: &metav1.StatusDetails{Kind: res},
	}}
}

// notFoundPath is the 404 for a path that names nothing this server serves, worded as the
// Kubernetes API server words it (kubectl shows it as "the server could not find the requested
// resource").
func notFoundPath() error {
	return apierrors.NewGenericServerResponse(http.StatusNotFound, "", schema.GroupResource{}, "", "", 0, false)
}

// TooLargeVersion is the 504 (reason Timeout) for a read at a version the store has not
// reached, as the Kubernetes API server answers it; clients retry.
func TooLargeVersion(rv, current int64) error {
	return apierrors.NewTimeoutError(fmt.Sprintf("Too large resource version: %d, current: %d", rv, current), 1)
}
