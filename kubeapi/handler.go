package kubeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tetherhub/tether/resource"
)

// Config configures a Handler.
type Config struct {
	// MaxBodyBytes bounds request bodies; larger ones get 413.
	MaxBodyBytes int64
	// BookmarkInterval is how often a watch that asked for bookmarks gets one while idle.
	BookmarkInterval time.Duration
	// MaxWatchTimeout caps a watch's duration (clients ask with timeoutSeconds; client-go
	// asks for 5–10 minutes and re-watches).
	MaxWatchTimeout time.Duration
	// ServerVersion is what /version reports as gitVersion.
	ServerVersion string
	// WatchWriteTimeout bounds one write to a watcher: a client that does not read for this
	// long is disconnected, so that it holds neither a goroutine nor a buffer.
	WatchWriteTimeout time.Duration
	// BodyTimeout bounds reading a request body: a client that announces a body and sends it
	// slowly, or not at all, gets 400 instead of holding a goroutine and a buffer.
	BodyTimeout time.Duration
	// MaxWatches bounds the watches open at once; one more gets 429 with Retry-After, which
	// client-go waits out and tries again. Each holds two goroutines and a cursor on the store.
	MaxWatches int
}

// DefaultConfig returns the defaults of SPEC §10.
func DefaultConfig() Config {
	return Config{MaxBodyBytes: 3 << 20, BookmarkInterval: time.Minute, MaxWatchTimeout: 30 * time.Minute, ServerVersion: "v1.30.0-tether", WatchWriteTimeout: 10 * time.Second, BodyTimeout: 30 * time.Second, MaxWatches: 1000}
}

// MinMaxBodyBytes is the smallest Config.MaxBodyBytes.
const MinMaxBodyBytes = 1024

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	switch {
	case c.MaxBodyBytes < MinMaxBodyBytes:
		return fmt.Errorf("kubeapi: max body bytes must be at least %d, got %d", MinMaxBodyBytes, c.MaxBodyBytes)
	case c.BookmarkInterval <= 0:
		return fmt.Errorf("kubeapi: bookmark interval must be positive, got %s", c.BookmarkInterval)
	case c.MaxWatchTimeout <= 0:
		return fmt.Errorf("kubeapi: max watch timeout must be positive, got %s", c.MaxWatchTimeout)
	case c.WatchWriteTimeout <= 0:
		return fmt.Errorf("kubeapi: watch write timeout must be positive, got %s", c.WatchWriteTimeout)
	case c.BodyTimeout <= 0:
		return fmt.Errorf("kubeapi: body timeout must be positive, got %s", c.BodyTimeout)
	case c.MaxWatches < 1:
		return fmt.Errorf("kubeapi: max watches must be at least 1, got %d", c.MaxWatches)
	}
	return nil
}

// Handler serves the Kubernetes-style API over a Storage.
type Handler struct {
	cfg     Config
	reg     *resource.Registry
	store   Storage
	log     zerolog.Logger
	metrics *metrics
	openapi *openAPI         // built at construction
	now     func() time.Time // ages in tables
	// lists recycles list response buffers: a 1,000-object list is about a megabyte, and
	// allocating it per request is what makes a list's p99 wander with the GC.
	lists sync.Pool
	proto protobufDecoder // bodies current kubectl sends in protobuf
	// watching counts the open watches against cfg.MaxWatches (the watches gauge is for
	// reading, and is nil-safe only as a metric).
	watching atomic.Int64
}

// New returns a Handler. prefix names its metrics ("tether_cloud_api", "tether_edge_metaserver").
func New(cfg Config, reg *resource.Registry, store Storage, log zerolog.Logger, promReg prometheus.Registerer, prefix string) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	oa, err := buildOpenAPI(reg, cfg.ServerVersion)
	if err != nil {
		return nil, fmt.Errorf("kubeapi: openapi: %w", err)
	}
	if c, ok := store.(cached); ok && promReg != nil {
		registerCacheMetrics(promReg, prefix, c.WatchCache())
	}
	pd, err := newProtobufDecoder()
	if err != nil {
		return nil, fmt.Errorf("kubeapi: protobuf: %w", err)
	}
	return &Handler{cfg: cfg, reg: reg, store: store, log: log, metrics: newMetrics(promReg, prefix), openapi: oa, now: time.Now, proto: pd}, nil
}

// cached is a Storage that serves watches from a Cache; the Handler then reports the cache's
// size in its metrics.
type cached interface{ WatchCache() *Cache }

// registerCacheMetrics reports c's size: events held and about the memory they take.
func registerCacheMetrics(reg prometheus.Registerer, prefix string, c *Cache) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: prefix + "_watch_cache_events", Help: "Recent changes the watch cache holds."},
			func() float64 { n, _ := c.Size(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: prefix + "_watch_cache_bytes", Help: "About the memory the watch cache's changes hold (an estimate)."},
			func() float64 { _, b := c.Size(); return float64(b) }),
	)
}

// request is a parsed API request.
type request struct {
	verb        string // get list watch create update patch delete
	info        resource.Info
	namespace   string
	name        string
	subresource string
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	verb, code := h.serve(w, r)
	if code == watchCounted {
		return
	}
	h.metrics.requests.WithLabelValues(verb, strconv.Itoa(code)).Inc()
	if verb != "watch" {
		h.metrics.latency.WithLabelValues(verb).Observe(time.Since(start).Seconds())
	}
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) (verb string, code int) {
	parts := splitPath(r.URL.Path)
	switch {
	case len(parts) == 1 && parts[0] == "version":
		return "discovery", h.writeJSON(w, http.StatusOK, h.version())
	case len(parts) == 1 && parts[0] == "api":
		return "discovery", h.writeJSON(w, http.StatusOK, h.apiVersions())
	case len(parts) == 1 && parts[0] == "apis":
		return "discovery", h.writeJSON(w, http.StatusOK, h.apiGroups())
	case len(parts) >= 2 && parts[0] == "openapi":
		return "discovery", h.serveOpenAPI(w, r, parts)
	case len(parts) == 2 && parts[0] == "apis":
		g, ok := h.group(parts[1])
		if !ok {
			return "discovery", h.fail(w, NotFound("", "groups", parts[1]))
		}
		return "discovery", h.writeJSON(w, http.StatusOK, g)
	}
	req, err := h.parse(r.Method, r.URL.Query(), parts)
	if err != nil {
		return "unknown", h.fail(w, err)
	}
	if req.verb == "discovery" {
		list, ok := h.resourceList(req.info.Group, req.info.Version)
		if !ok {
			return "discovery", h.fail(w, NotFound(req.info.Group, "versions", req.info.Version))
		}
		return "discovery", h.writeJSON(w, http.StatusOK, list)
	}
	ctx := r.Context()
	q := r.URL.Query()
	if req.verb == "create" || req.verb == "update" || req.verb == "patch" || req.verb == "delete" {
		if len(q["dryRun"]) > 0 {
			return req.verb, h.fail(w, BadRequest("dry runs are not supported by this server; nothing was changed"))
		}
	}
	switch req.verb {
	case "get":
		obj, err := h.store.Get(ctx, req.info, req.namespace, req.name)
		if err == nil {
			if t, ok := wantsTable(r.Header.Get("Accept"), q); ok {
				return req.verb, h.writeTable(w, t, req.info, [][]byte{obj}, "", "", nil)
			}
		}
		return req.verb, h.respond(w, http.StatusOK, obj, err)
	case "list":
		return req.verb, h.list(ctx, w, r, req)
	case "watch":
		return h.watch(ctx, w, r, req)
	case "create":
		body, err := h.body(w, r, req)
		if err != nil {
			return req.verb, h.fail(w, err)
		}
		obj, err := h.store.Create(ctx, req.info, req.namespace, body)
		return req.verb, h.respond(w, http.StatusCreated, obj, err)
	case "update":
		body, err := h.body(w, r, req)
		if err != nil {
			return req.verb, h.fail(w, err)
		}
		obj, err := h.store.Update(ctx, req.info, req.namespace, req.name, req.subresource, body)
		return req.verb, h.respond(w, http.StatusOK, obj, err)
	case "patch":
		pt, err := patchType(r.Header.Get("Content-Type"))
		if err != nil {
			return req.verb, h.fail(w, err)
		}
		fv, err := parseFieldValidation(q)
		if err != nil {
			return req.verb, h.fail(w, err)
		}
		body, err := h.readBody(w, r)
		if err == nil {
			err = CheckJSONShape(body)
		}
		if err != nil {
			return req.verb, h.fail(w, err)
		}
		if fv != FieldIgnore {
			if dups := duplicateFields(body); len(dups) > 0 {
				if fv == FieldStrict {
					return req.verb, h.fail(w, strictError(req.info, dups))
				}
				warn(w, dups)
			}
		}
		fc := &fieldCheck{fv: fv}
		obj, err := h.store.Patch(context.WithValue(ctx, fieldCheckKey{}, fc), req.info, req.namespace, req.name, req.subresource, pt, body)
		if err == nil {
			warn(w, fc.warnings)
		}
		return req.verb, h.respond(w, http.StatusOK, obj, err)
	case "delete":
		opts, err := h.deleteOptions(w, r)
		if err != nil {
			return req.verb, h.fail(w, err)
		}
		obj, err := h.store.Delete(ctx, req.info, req.namespace, req.name, opts)
		return req.verb, h.respond(w, http.StatusOK, obj, err)
	}
	return req.verb, h.fail(w, methodNotAllowed(r.Method, req.info.Resource))
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// parse maps a path to a request. Layouts:
//
//	/api/v1[/namespaces/{ns}]/{resource}[/{name}[/{subresource}]]
//	/apis/{group}/{version}[/namespaces/{ns}]/{resource}[/{name}[/{subresource}]]
func (h *Handler) parse(method string, q map[string][]string, parts []string) (request, error) {
	var group, version string
	var rest []string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		version, rest = parts[1], parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		group, version, rest = parts[1], parts[2], parts[3:]
	default:
		return request{}, notFoundPath()
	}
	req := request{info: resource.Info{Group: group, Version: version}}
	if len(rest) == 0 {
		if method != http.MethodGet {
			return req, methodNotAllowed(method, "discovery")
		}
		req.verb = "discovery"
		return req, nil
	}
	// "namespaces/{ns}/{resource}…" is a namespaced path unless it is the Namespace object
	// itself ("namespaces/{name}" or "namespaces/{name}/status").
	if rest[0] == "namespaces" && len(rest) >= 3 {
		if _, ok := h.reg.ByURL(group, version, rest[2]); ok {
			req.namespace, rest = rest[1], rest[2:]
		} else if rest[2] != "status" {
			return req, notFoundPath() // a resource this server does not serve
		}
	}
	info, ok := h.reg.ByURL(group, version, rest[0])
	if !ok {
		return req, notFoundPath()
	}
	req.info = info
	if req.namespace != "" && !info.Namespaced {
		return req, NotFound(group, info.Resource, "")
	}
	switch len(rest) {
	case 1:
	case 2:
		req.name = rest[1]
	case 3:
		req.name, req.subresource = rest[1], rest[2]
		if req.subresource != "status" || !HasStatus(info.Kind) {
			return req, NotFound(group, info.Resource+"/"+req.subresource, req.name)
		}
	default:
		return req, NotFound(group, info.Resource, strings.Join(rest[1:], "/"))
	}
	if info.Namespaced && req.name != "" && req.namespace == "" {
		return req, NotFound(group, info.Resource, req.name)
	}
	watch := len(q["watch"]) > 0 && (q["watch"][0] == "true" || q["watch"][0] == "1")
	switch {
	case method == http.MethodGet && req.name == "" && watch:
		req.verb = "watch"
	case method == http.MethodGet && req.name == "":
		req.verb = "list"
	case method == http.MethodGet:
		req.verb = "get"
	case method == http.MethodPost && req.name == "":
		req.verb = "create"
		if info.Namespaced && req.namespace == "" {
			return req, BadRequest("a %s must be created in a namespace (POST to .../namespaces/{namespace}/%s)", info.Kind, info.Resource)
		}
	case method == http.MethodPut && req.name != "":
		req.verb = "update"
	case method == http.MethodPatch && req.name != "":
		req.verb = "patch"
	case method == http.MethodDelete && req.name != "":
		req.verb = "delete"
	default:
		return req, methodNotAllowed(method, info.Resource)
	}
	return req, nil
}

// readBody reads a request body up to the limit.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > h.cfg.MaxBodyBytes {
		return nil, TooLarge(h.cfg.MaxBodyBytes)
	}
	// The deadline covers the body only, and is lifted once it is read: left on the connection,
	// it would end the request's context while the write is carried out.
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(h.cfg.BodyTimeout)) == nil {
		defer rc.SetReadDeadline(time.Time{})
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, h.cfg.MaxBodyBytes+1))
	if err != nil {
		return nil, BadRequest("reading the request body: %v", err)
	}
	if int64(len(body)) > h.cfg.MaxBodyBytes {
		return nil, TooLarge(h.cfg.MaxBodyBytes)
	}
	return body, nil
}

// body reads and checks a create or update body: one object (JSON or YAML) of the URL's kind,
// whose fields pass the fieldValidation the client asked for.
func (h *Handler) body(w http.ResponseWriter, r *http.Request, req request) ([]byte, error) {
	fv, err := parseFieldValidation(r.URL.Query())
	if err != nil {
		return nil, err
	}
	raw, err := h.readBody(w, r)
	if err != nil {
		return nil, err
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == mediaProtobuf {
		if err := checkProtobufShape(raw); err != nil {
			return nil, err
		}
		if raw, err = h.proto.toJSON(raw); err != nil {
			return nil, err
		}
		ct = "application/json"
	}
	body, err := DecodeBody(ct, raw)
	if err != nil {
		return nil, err
	}
	if err := CheckJSONShape(body); err != nil {
		return nil, err
	}
	if err := checkKind(req.info, body); err != nil {
		return nil, err
	}
	if fv == FieldIgnore {
		return body, nil
	}
	if problems := fieldProblems(req.info, body); len(problems) > 0 {
		if fv == FieldStrict {
			return nil, strictError(req.info, problems)
		}
		warn(w, problems)
	}
	return body, nil
}

// warn adds a warning header for each problem, in the form of Kubernetes' warnings, which
// kubectl prints.
func warn(w http.ResponseWriter, problems []string) {
	for _, p := range problems {
		w.Header().Add("Warning", `299 - `+strconv.Quote(p))
	}
}

// patchType reads the type of a PATCH body. Server-side apply (ApplyPatch) is not served: it is
// a 415, as Kubernetes answers a patch type it does not accept, so that kubectl says so.
func patchType(ct string) (PatchType, error) {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", UnsupportedPatch(ct, JSONPatch, MergePatch, StrategicPatch)
	}
	switch pt := PatchType(mt); pt {
	case MergePatch, StrategicPatch, JSONPatch:
		return pt, nil
	}
	return "", UnsupportedPatch(ct, JSONPatch, MergePatch, StrategicPatch)
}

func (h *Handler) deleteOptions(w http.ResponseWriter, r *http.Request) (DeleteOptions, error) {
	body, err := h.readBody(w, r)
	if err != nil || len(bytes.TrimSpace(body)) == 0 {
		return DeleteOptions{}, err
	}
	var o struct {
		Preconditions *struct {
			UID             *string `json:"uid"`
			ResourceVersion *string `json:"resourceVersion"`
		} `json:"preconditions"`
		DryRun []string `json:"dryRun"`
	}
	if err := json.Unmarshal(body, &o); err != nil {
		return DeleteOptions{}, BadRequest("the delete options are not valid: %s", DecodeProblem(err))
	}
	if len(o.DryRun) > 0 {
		// client-go sends a delete's dry run here, not in the query (kubectl delete
		// --dry-run=server): taking it for a real delete would delete the object.
		return DeleteOptions{}, BadRequest("dry runs are not supported by this server; nothing was changed")
	}
	var opts DeleteOptions
	if p := o.Preconditions; p != nil {
		if p.UID != nil {
			opts.UID = *p.UID
		}
		if p.ResourceVersion != nil {
			opts.ResourceVersion = *p.ResourceVersion
		}
	}
	return opts, nil
}

// listOptions parses and checks the list and watch parameters.
func (h *Handler) listOptions(info resource.Info, q map[string][]string) (ListOptions, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	var o ListOptions
	var err error
	if o.Labels, err = labels.Parse(get("labelSelector")); err != nil {
		return o, BadRequest("unable to parse labelSelector %q: %v", get("labelSelector"), err)
	}
	if o.Fields, err = fields.ParseSelector(get("fieldSelector")); err != nil {
		return o, BadRequest("unable to parse fieldSelector %q: %v", get("fieldSelector"), err)
	}
	allowed := SelectableFields(info)
	for _, req := range o.Fields.Requirements() {
		if !allowed[req.Field] {
			return o, BadRequest("field label not supported: %s", req.Field)
		}
	}
	o.ResourceVersion = get("resourceVersion")
	if o.ResourceVersion != "" {
		if n, err := strconv.ParseInt(o.ResourceVersion, 10, 64); err != nil || n < 0 {
			return o, BadRequest("invalid resourceVersion %q", o.ResourceVersion)
		}
	}
	switch o.ResourceVersionMatch = get("resourceVersionMatch"); o.ResourceVersionMatch {
	case "", "NotOlderThan", "Exact":
	default:
		return o, BadRequest("invalid resourceVersionMatch %q", o.ResourceVersionMatch)
	}
	o.SendInitialEvents = get("sendInitialEvents") == "true"
	// A streamed list (sendInitialEvents) from the most recent state names no version.
	if o.ResourceVersionMatch != "" && o.ResourceVersion == "" && !o.SendInitialEvents {
		return o, BadRequest("resourceVersionMatch is forbidden unless resourceVersion is provided")
	}
	if o.ResourceVersionMatch == "Exact" && o.ResourceVersion == "0" {
		return o, BadRequest("resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"")
	}
	if s := get("limit"); s != "" {
		if o.Limit, err = strconv.ParseInt(s, 10, 64); err != nil || o.Limit < 0 {
			return o, BadRequest("invalid limit %q", s)
		}
	}
	o.Continue = get("continue")
	o.AllowWatchBookmarks = get("allowWatchBookmarks") == "true"
	if s := get("timeoutSeconds"); s != "" {
		if o.TimeoutSeconds, err = strconv.ParseInt(s, 10, 64); err != nil || o.TimeoutSeconds < 0 {
			return o, BadRequest("invalid timeoutSeconds %q", s)
		}
	}
	return o, nil
}

func (h *Handler) list(ctx context.Context, w http.ResponseWriter, r *http.Request, req request) int {
	q := r.URL.Query()
	opts, err := h.listOptions(req.info, q)
	if err != nil {
		return h.fail(w, err)
	}
	table, asTable := wantsTable(r.Header.Get("Accept"), q)
	if asTable {
		if err := checkIncludeObject(table); err != nil {
			return h.fail(w, err)
		}
	}
	var res *ListResult
	if opts.selectsObject(req.info.GroupResource()) {
		res, err = h.listSelected(ctx, req, opts)
	} else {
		res, err = h.store.List(ctx, req.info, req.namespace, opts)
	}
	if err != nil {
		return h.fail(w, err)
	}
	if asTable {
		return h.writeTable(w, table, req.info, res.Items, res.ResourceVersion, res.Continue, res.Remaining)
	}
	b, _ := h.lists.Get().(*bytes.Buffer)
	if b == nil {
		b = new(bytes.Buffer)
	}
	defer func() {
		if b.Cap() <= maxPooledList {
			b.Reset()
			h.lists.Put(b)
		}
	}()
	b.Grow(128 + listSize(res.Items))
	b.WriteString(`{"kind":`)
	writeJSONString(b, req.info.ListKind)
	b.WriteString(`,"apiVersion":`)
	writeJSONString(b, req.info.APIVersion())
	b.WriteString(`,"metadata":{"resourceVersion":`)
	writeJSONString(b, res.ResourceVersion)
	if res.Continue != "" {
		b.WriteString(`,"continue":`)
		writeJSONString(b, res.Continue)
	}
	if res.Remaining != nil {
		fmt.Fprintf(b, `,"remainingItemCount":%d`, *res.Remaining)
	}
	b.WriteString(`},"items":[`)
	for i, item := range res.Items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(item)
	}
	b.WriteString("]}")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b.Bytes())
	return http.StatusOK
}

// listSelected serves a list whose field selector names an object field, which the storage
// cannot judge from its Meta (see fields.go): the storage lists everything else the request
// selects, after the continue point, and the page is selected and cut here. The token of a cut
// page continues after its last item, as a storage's would.
func (h *Handler) listSelected(ctx context.Context, req request, opts ListOptions) (*ListResult, error) {
	limit := opts.Limit
	opts.Limit = 0
	res, err := h.store.List(ctx, req.info, req.namespace, opts)
	if err != nil {
		return nil, err
	}
	gr := req.info.GroupResource()
	items := make([][]byte, 0, min(len(res.Items), 64))
	var last selectable
	res.Continue = ""
	for _, item := range res.Items {
		s := readSelectable(item)
		if !matchObject(opts.Fields, gr, s) {
			continue
		}
		if limit > 0 && int64(len(items)) == limit {
			rev, err := strconv.ParseInt(res.ResourceVersion, 10, 64)
			if err != nil {
				return nil, Internal(fmt.Errorf("the storage listed at version %q", res.ResourceVersion))
			}
			key := resource.Key{Resource: gr, Namespace: last.Metadata.Namespace, Name: last.Metadata.Name}
			res.Continue = EncodeContinue(rev, resource.StoreKey(key))
			break
		}
		items = append(items, item)
		last = s
	}
	res.Items, res.Remaining = items, nil
	return res, nil
}

// maxPooledList bounds the buffers kept for reuse, so one huge list does not stay resident.
const maxPooledList = 8 << 20

func listSize(items [][]byte) int {
	n := len(items)
	for _, it := range items {
		n += len(it)
	}
	return n
}

func (h *Handler) writeTable(w http.ResponseWriter, t tableRequest, info resource.Info, items [][]byte, rv, cont string, remaining *int64) int {
	if err := checkIncludeObject(t); err != nil {
		return h.fail(w, err)
	}
	body, err := newTableWriter(t, info, h.now()).table(items, rv, cont, remaining)
	if err != nil {
		return h.fail(w, Internal(err))
	}
	return h.writeRaw(w, http.StatusOK, body)
}

// watchCounted is the code a served watch returns: it counted itself when it started.
const watchCounted = -1

// watch serves a watch. Its verb is "watchlist" when it starts with the current state (a
// watch from "" or "0", or with sendInitialEvents): that costs what a list costs, and clients
// that stream their lists (client-go's WatchListClient) never send a LIST.
func (h *Handler) watch(ctx context.Context, w http.ResponseWriter, r *http.Request, req request) (string, int) {
	verb := "watch"
	q := r.URL.Query()
	opts, err := h.listOptions(req.info, q)
	if err != nil {
		return verb, h.fail(w, err)
	}
	if opts.SendInitialEvents || opts.ResourceVersion == "" || opts.ResourceVersion == "0" {
		verb = "watchlist"
	}
	if opts.SendInitialEvents && opts.ResourceVersionMatch != "NotOlderThan" {
		return verb, h.fail(w, Invalid("ListOptions", "", "resourceVersionMatch: Forbidden: sendInitialEvents requires resourceVersionMatch=NotOlderThan"))
	}
	table, asTable := wantsTable(r.Header.Get("Accept"), q)
	if asTable {
		if err := checkIncludeObject(table); err != nil {
			return verb, h.fail(w, err)
		}
	}
	timeout := h.cfg.MaxWatchTimeout
	// Compared in seconds: a huge timeoutSeconds would overflow a Duration and end the watch at once.
	if opts.TimeoutSeconds > 0 && opts.TimeoutSeconds < int64(timeout/time.Second) {
		timeout = time.Duration(opts.TimeoutSeconds) * time.Second
	}
	if h.watching.Add(1) > int64(h.cfg.MaxWatches) {
		h.watching.Add(-1)
		return verb, h.fail(w, apierrors.NewTooManyRequests(fmt.Sprintf("too many watches open (at most %d); try again later", h.cfg.MaxWatches), 1))
	}
	defer h.watching.Add(-1)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wt, err := h.store.Watch(ctx, req.info, req.namespace, opts)
	if err != nil {
		return verb, h.fail(w, err)
	}
	defer wt.Stop()
	h.metrics.watches.Inc()
	defer h.metrics.watches.Dec()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	rc.Flush()
	// Counted when it starts, not when it ends minutes later: the count of full-state
	// requests is how a relist storm shows.
	h.metrics.requests.WithLabelValues(verb, "200").Inc()
	var bookmarks <-chan time.Time
	if opts.AllowWatchBookmarks {
		t := time.NewTicker(h.cfg.BookmarkInterval)
		defer t.Stop()
		bookmarks = t.C
	}
	events := make(chan []Event)
	errc := make(chan error, 1)
	go func() {
		for {
			evs, err := wt.NextOrBookmark(ctx, bookmarks)
			if err != nil {
				errc <- err
				return
			}
			select {
			case events <- evs:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
		}
	}()
	var tw *tableWriter
	if asTable {
		tw = newTableWriter(table, req.info, h.now())
	}
	var buf bytes.Buffer
	for {
		buf.Reset()
		select {
		case evs := <-events:
			for _, ev := range evs {
				obj := ev.Object
				if ev.Type == Bookmark && obj == nil { // a periodic one (NextOrBookmark)
					obj = bookmarkObject(req.info, ev.Rev, false)
				}
				if tw != nil && ev.Type != Bookmark {
					if obj, err = tw.table([][]byte{ev.Object}, strconv.FormatInt(ev.Rev, 10), "", nil); err != nil {
						h.log.Error().Err(err).Msg("watch: table row")
						return verb, watchCounted
					}
				}
				writeEvent(&buf, ev.Type, obj)
			}
		case <-errc:
			return verb, watchCounted // the client re-watches from the last version it saw
		}
		// A client that stops reading is cut off here rather than holding the connection.
		rc.SetWriteDeadline(time.Now().Add(h.cfg.WatchWriteTimeout))
		if _, err := w.Write(buf.Bytes()); err != nil {
			return verb, watchCounted
		}
		if err := rc.Flush(); err != nil {
			return verb, watchCounted
		}
	}
}

func writeEvent(b *bytes.Buffer, t EventType, obj []byte) {
	b.WriteString(`{"type":"`)
	b.WriteString(string(t))
	b.WriteString(`","object":`)
	b.Write(obj)
	b.WriteString("}\n")
}

// bookmarkObject is the object of a BOOKMARK event: only kind, apiVersion and the version.
func bookmarkObject(info resource.Info, rev int64, initialEnd bool) []byte {
	md := map[string]any{"resourceVersion": strconv.FormatInt(rev, 10)}
	if initialEnd {
		md["annotations"] = map[string]string{"k8s.io/initial-events-end": "true"}
	}
	b, _ := json.Marshal(map[string]any{"kind": info.Kind, "apiVersion": info.APIVersion(), "metadata": md})
	return b
}

// BookmarkObject is exported for storages that emit the initial-events-end bookmark.
func BookmarkObject(info resource.Info, rev int64, initialEnd bool) []byte {
	return bookmarkObject(info, rev, initialEnd)
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s)
	b.Write(enc)
}

func (h *Handler) respond(w http.ResponseWriter, code int, obj []byte, err error) int {
	if err != nil {
		return h.fail(w, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(obj)
	return code
}

func (h *Handler) fail(w http.ResponseWriter, err error) int {
	st := statusOf(err)
	if st.Code >= 500 && !errors.Is(err, context.Canceled) {
		h.log.Error().Err(err).Msg("request failed")
	}
	if st.Code == http.StatusBadRequest || st.Code == http.StatusRequestEntityTooLarge || st.Code == http.StatusUnsupportedMediaType || st.Code == http.StatusUnprocessableEntity || st.Code == http.StatusTooManyRequests {
		h.metrics.rejected.WithLabelValues(string(st.Reason)).Inc()
	}
	writeStatus(w, err)
	if st.Code == 0 {
		return http.StatusInternalServerError
	}
	return int(st.Code)
}

func (h *Handler) writeJSON(w http.ResponseWriter, code int, v any) int {
	body, err := json.Marshal(v)
	if err != nil {
		return h.fail(w, Internal(err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(body)
	return code
}

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	rejected *prometheus.CounterVec
	watches  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, prefix string) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_requests_total", Help: "API requests by verb and HTTP code.",
		}, []string{"verb", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: prefix + "_request_seconds", Help: "API request latency by verb (watches excluded).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"verb"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_rejected_total", Help: "Requests refused as bad input or past a limit, by reason.",
		}, []string{"reason"}),
		watches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: prefix + "_watches", Help: "Open watches.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.rejected, m.watches)
	}
	return m
}

// RequestInfo is what a request asks for, as the Handler reads its method and path.
type RequestInfo struct {
	Verb        string // get list watch create update patch delete (or discovery)
	Info        resource.Info
	Namespace   string
	Name        string
	Subresource string
}

// Resolve reads a request's method and URL as ServeHTTP would, without serving it: the cloud
// uses it to decide whether a node may make a request before passing it to ServeHTTP.
func (h *Handler) Resolve(method string, u *url.URL) (RequestInfo, error) {
	parts := splitPath(u.Path)
	if len(parts) > 0 && (parts[0] == "version" || parts[0] == "openapi" || (parts[0] == "apis" && len(parts) <= 2) || (parts[0] == "api" && len(parts) == 1)) {
		return RequestInfo{Verb: "discovery"}, nil
	}
	req, err := h.parse(method, u.Query(), parts)
	if err != nil {
		return RequestInfo{}, err
	}
	return RequestInfo{Verb: req.verb, Info: req.info, Namespace: req.namespace, Name: req.name, Subresource: req.subresource}, nil
}
