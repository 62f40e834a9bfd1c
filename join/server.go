package join

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/pki"
)

// Tokens checks join tokens; the cloud implements it over its token store.
type Tokens interface {
	// Check validates a join token for nodeName: known ID, secret matches (pki.SecretMatches
	// against the stored digest), not expired, and either a fleet token or bound to nodeName.
	// Returns ErrTokenUnknown (also for a wrong secret), ErrTokenExpired or ErrTokenWrongNode;
	// any other error is the store's failure and answers 500.
	Check(ctx context.Context, id, secret, nodeName string) error
}

// Nodes registers joined nodes; the cloud implements it over its Node objects.
type Nodes interface {
	// Register makes sure the Node object exists (creating it with these labels on first join)
	// and records that certificates of the name issued before certIssued (pki.IssuedAt) are retired.
	Register(ctx context.Context, nodeName string, labels map[string]string, certIssued time.Time) error
	// Joined returns the issue time of the certificate the latest recorded join of nodeName got
	// (zero if none): a new certificate is issued after it whatever this replica's clock says,
	// or a replica whose clock is behind could not record a join.
	Joined(ctx context.Context, nodeName string) (time.Time, error)
}

// Config is the join server's configuration.
type Config struct {
	// CertValidity is how long a certificate issued at join is valid. Nodes rotate before expiry
	// over the hub connection (SPEC §3); a shorter validity bounds the use of a stolen key.
	CertValidity time.Duration
	// MaxBodyBytes bounds a join request body (SPEC §10: 64 KiB). A real request is under 4 KiB.
	MaxBodyBytes int64
	// Timeout bounds, in HTTPServer, reading a request (headers and body) and writing its answer.
	Timeout time.Duration
	// Now is the clock certificates are issued by; nil means time.Now. Not a configuration key:
	// tests set it.
	Now func() time.Time `json:"-" yaml:"-"`
}

// MinCertValidity and MaxCertValidity bound Config.CertValidity.
const (
	MinCertValidity = time.Hour
	MaxCertValidity = 10 * 365 * 24 * time.Hour
)

const (
	minBodyBytes = 4 << 10
	maxBodyBytes = 1 << 20
)

// DefaultConfig returns 90-day certificates, a 64 KiB body limit and a 30 s timeout.
func DefaultConfig() Config {
	return Config{
		CertValidity: 90 * 24 * time.Hour,
		MaxBodyBytes: 64 << 10,
		Timeout:      30 * time.Second,
	}
}

// Validate returns an error naming the first field out of range.
func (c Config) Validate() error {
	switch {
	case c.CertValidity < MinCertValidity || c.CertValidity > MaxCertValidity:
		return fmt.Errorf("join: CertValidity must be between %s and %s, got %s", MinCertValidity, MaxCertValidity, c.CertValidity)
	case c.MaxBodyBytes < minBodyBytes || c.MaxBodyBytes > maxBodyBytes:
		return fmt.Errorf("join: MaxBodyBytes must be between %d and %d, got %d", minBodyBytes, maxBodyBytes, c.MaxBodyBytes)
	case c.Timeout <= 0 || c.Timeout > 10*time.Minute:
		return fmt.Errorf("join: Timeout must be positive and at most 10m, got %s", c.Timeout)
	}
	return nil
}

// Server answers the join port. Every field is set by NewServer and never changed.
type Server struct {
	ca     *pki.CA
	caPEM  []byte
	tokens Tokens
	nodes  Nodes
	cfg    Config
	now    func() time.Time
	log    zerolog.Logger
	joins  *prometheus.CounterVec // by code: codeOK or the error code answered
}

// NewServer returns a join server for ca. It registers its metrics on reg (nil: none), failing if
// they are already registered there.
func NewServer(ca *pki.CA, tokens Tokens, nodes Nodes, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Server, error) {
	if ca == nil || tokens == nil || nodes == nil {
		return nil, errors.New("join: NewServer needs a CA, Tokens and Nodes")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	joins := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_cloud_join_requests_total",
		Help: "Join requests (POST /v1/join) by result: ok, or the error code answered.",
	}, []string{"code"})
	for _, c := range joinCodes() {
		joins.WithLabelValues(c)
	}
	if reg != nil {
		if err := reg.Register(joins); err != nil {
			return nil, fmt.Errorf("join: register metrics: %w", err)
		}
	}
	return &Server{
		ca:     ca,
		caPEM:  ca.CertPEM(),
		tokens: tokens,
		nodes:  nodes,
		cfg:    cfg,
		now:    now,
		log:    log.With().Str("component", "join").Logger(),
		joins:  joins,
	}, nil
}

// TLSConfig is the TLS configuration for the join port: TLS 1.3 and cert, no client certificate.
func TLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
}

// HTTPServer returns an *http.Server for the join port serving Handler with TLSConfig(cert) and
// Config.Timeout on every phase of a request. Serve it with ServeTLS(ln, "", "").
func (s *Server) HTTPServer(cert tls.Certificate) *http.Server {
	return &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         TLSConfig(cert),
		ReadHeaderTimeout: s.cfg.Timeout,
		ReadTimeout:       s.cfg.Timeout,
		WriteTimeout:      s.cfg.Timeout,
		IdleTimeout:       s.cfg.Timeout,
		MaxHeaderBytes:    16 << 10,
		// TLS handshake failures from scanners land here; keep them in the structured log.
		ErrorLog: log.New(s.log.With().Str("source", "net/http").Logger(), "", 0),
	}
}

// Handler serves GET /ca.crt and POST /v1/join; anything else is a JSON 404 or 405.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case PathCA:
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				w.Header().Set("Allow", "GET, HEAD")
				writeError(w, &Error{Status: http.StatusMethodNotAllowed, Code: CodeMethodNotAllowed, Message: "use GET for " + PathCA + "."})
				return
			}
			s.serveCA(w)
		case PathJoin:
			s.serveJoin(w, r)
		default:
			writeError(w, &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: "no such path; the join port serves " + PathCA + " and " + PathJoin + "."})
		}
	})
}

func (s *Server) serveCA(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(s.caPEM)
}

// attempt is what the log line of one join says, filled in as the request is understood. It is
// the only place request data reaches the log, and it has no field for the secret.
type attempt struct {
	tokenID string
	node    string
	cause   error // for 5xx: what failed in the cloud; never sent to the client
}

func (s *Server) serveJoin(w http.ResponseWriter, r *http.Request) {
	var a attempt
	resp, jerr := s.join(w, r, &a)
	code := codeOK
	if jerr != nil {
		code = jerr.Code
		writeError(w, jerr)
	} else {
		writeJSON(w, http.StatusOK, resp)
	}
	s.joins.WithLabelValues(code).Inc()

	var ev *zerolog.Event
	switch {
	case jerr == nil:
		ev = s.log.Info()
	case jerr.Status >= 500:
		ev = s.log.Error().Err(a.cause)
	default:
		ev = s.log.Warn()
	}
	ev = ev.Str("remote", r.RemoteAddr).Str("code", code)
	if a.tokenID != "" {
		ev = ev.Str("token_id", a.tokenID)
	}
	if a.node != "" {
		ev = ev.Str("node", a.node)
	}
	if jerr != nil {
		ev.Str("reason", jerr.Message).Msg("join refused")
	} else {
		ev.Msg("node joined")
	}
}

// join runs the checks in the order doc.go lists and returns the answer or the refusal.
func (s *Server) join(w http.ResponseWriter, r *http.Request, a *attempt) (*joinResponse, *Error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return nil, &Error{Status: http.StatusMethodNotAllowed, Code: CodeMethodNotAllowed, Message: "use POST for " + PathJoin + "."}
	}
	req, jerr := s.decode(w, r)
	if jerr != nil {
		return nil, jerr
	}
	tok, err := pki.ParseToken(req.Token)
	if err != nil {
		return nil, badRequest(CodeInvalidToken, strings.TrimPrefix(err.Error(), "pki: ")+".")
	}
	a.tokenID = tok.ID
	if tok.CAHash != s.ca.Hash() {
		return nil, badRequest(CodeCAMismatch, "the token was made for another CA; create a token on this cloud with tether-cloud token create.")
	}
	if err := pki.ValidNodeName(req.NodeName); err != nil {
		return nil, badRequest(CodeInvalidNodeName, strings.TrimPrefix(err.Error(), "pki: ")+".")
	}
	a.node = req.NodeName
	if err := ValidateLabels(req.Labels); err != nil {
		return nil, badRequest(CodeInvalidLabels, err.Error()+".")
	}

	ctx := r.Context()
	if err := s.tokens.Check(ctx, tok.ID, tok.Secret, req.NodeName); err != nil {
		switch {
		case errors.Is(err, ErrTokenUnknown):
			return nil, &Error{Status: http.StatusUnauthorized, Code: CodeTokenUnknown, Message: "the token is unknown to this cloud or its secret is wrong."}
		case errors.Is(err, ErrTokenExpired):
			return nil, &Error{Status: http.StatusUnauthorized, Code: CodeTokenExpired, Message: "the token has expired; create a new one with tether-cloud token create."}
		case errors.Is(err, ErrTokenWrongNode):
			return nil, &Error{Status: http.StatusForbidden, Code: CodeTokenWrongNode, Message: "the token is bound to another node name; join with that name or create a token for this one."}
		default:
			return nil, s.failure(ctx, a, fmt.Errorf("check token: %w", err))
		}
	}

	// Sign before Register: a CSR that is refused must leave no Node behind, and the certificate
	// is not released until Register has succeeded.
	now := s.now()
	last, err := s.nodes.Joined(ctx, req.NodeName)
	if err != nil {
		return nil, s.failure(ctx, a, fmt.Errorf("read the node's last join: %w", err))
	}
	issued := now
	if !issued.After(last) {
		// This clock is behind the one that signed the last join: the issue time follows that
		// join, the validity still starts from this clock.
		issued = last.Add(time.Microsecond)
	}
	certPEM, err := s.ca.SignCSRIssued([]byte(req.CSR), req.NodeName, s.cfg.CertValidity, now, issued)
	if err != nil {
		if ce, ok := errors.AsType[*pki.CSRError](err); ok {
			return nil, badRequest(CodeInvalidCSR, "the CSR was refused: "+ce.Detail+".")
		}
		return nil, s.failure(ctx, a, fmt.Errorf("sign CSR: %w", err))
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return nil, s.failure(ctx, a, fmt.Errorf("read the signed certificate: %w", err))
	}
	if err := s.nodes.Register(ctx, req.NodeName, req.Labels, pki.IssuedAt(cert)); errors.Is(err, ErrLaterJoin) {
		a.cause = err
		return nil, &Error{Status: http.StatusConflict, Code: CodeLaterJoin,
			Message: fmt.Sprintf("another join of node %q was recorded while this one was signed; join again.", req.NodeName)}
	} else if err != nil {
		return nil, s.failure(ctx, a, fmt.Errorf("register node: %w", err))
	}
	return &joinResponse{Certificate: string(certPEM), CA: string(s.caPEM)}, nil
}

// failure records a cloud-side error for the log and answers without its details, which may
// name internal systems.
func (s *Server) failure(ctx context.Context, a *attempt, err error) *Error {
	a.cause = err
	if ctx.Err() != nil {
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "the request was cancelled or timed out; try again."}
	}
	return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "the cloud could not complete the join; try again, and see the cloud's log if it persists."}
}

// decode reads the body within MaxBodyBytes and decodes exactly one JSON object with known fields.
func (s *Server) decode(w http.ResponseWriter, r *http.Request) (*joinRequest, *Error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, &Error{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMedia, Message: "send the request as application/json."}
		}
	}
	tooLarge := &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeBodyTooLarge,
		Message: fmt.Sprintf("the request body is larger than %d bytes.", s.cfg.MaxBodyBytes)}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return nil, tooLarge
	}
	// MaxBytesReader stops reading at the limit whatever Content-Length claimed, and makes the
	// server close the connection instead of draining the rest.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return nil, tooLarge
	}
	if err != nil {
		return nil, badRequest(CodeInvalidRequest, "the request body could not be read.")
	}

	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req *joinRequest // a pointer, so that a JSON null is told apart from {}
	if err := dec.Decode(&req); err != nil {
		return nil, badRequest(CodeInvalidRequest, describeJSONError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest(CodeInvalidRequest, "the request body has data after the JSON object; send exactly one object.")
	}
	switch {
	case req == nil:
		return nil, badRequest(CodeInvalidRequest, "the request body is null; send a JSON object with token, nodeName, csr and optional labels.")
	case req.Token == "":
		return nil, badRequest(CodeInvalidRequest, "the field token is required.")
	case req.NodeName == "":
		return nil, badRequest(CodeInvalidRequest, "the field nodeName is required.")
	case req.CSR == "":
		return nil, badRequest(CodeInvalidRequest, "the field csr is required.")
	}
	return req, nil
}

// describeJSONError turns a decoding error into one sentence. encoding/json's messages name Go
// types; these name JSON ones and the field, and never quote the body (it holds the token).
func describeJSONError(err error) string {
	if errors.Is(err, io.EOF) {
		return "the request body is empty; send a JSON object with token, nodeName, csr and optional labels."
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "the request body ends inside the JSON object."
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Sprintf("the request body is not valid JSON (at byte %d).", se.Offset)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if te.Field == "" {
			return fmt.Sprintf("the request body must be a JSON object, not %s.", jsonKind(te.Value))
		}
		if te.Field == "labels" && te.Type.Kind() == reflect.String {
			// encoding/json names the map, not the key, when a value has the wrong type.
			return fmt.Sprintf("the values in labels must be strings, not %s.", jsonKind(te.Value))
		}
		return fmt.Sprintf("the field %s must be %s, not %s.", clip(te.Field), goTypeKind(te.Type), jsonKind(te.Value))
	}
	// encoding/json has no typed error for an unknown field; its message is stable and names the
	// field in quotes.
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Sprintf("the request has an unknown field %s; the fields are token, nodeName, labels and csr.", clip(field))
	}
	return "the request body could not be decoded as JSON."
}

func jsonKind(v string) string {
	switch v {
	case "object", "array", "number", "string", "bool":
		return "a JSON " + v
	}
	if strings.HasPrefix(v, "number") {
		return "a JSON number"
	}
	return "a JSON " + clip(v)
}

func goTypeKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Map, reflect.Struct:
		if t.Kind() == reflect.Map && t.Elem().Kind() == reflect.String {
			return "an object of strings"
		}
		return "an object"
	}
	return t.String()
}

func badRequest(code, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: code, Message: msg}
}

func writeError(w http.ResponseWriter, e *Error) {
	writeJSON(w, e.Status, errorBody{Code: e.Code, Message: e.Message})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types of strings reach here, so this cannot happen; answer rather than panic.
		status, b = http.StatusInternalServerError, []byte(`{"code":"internal","message":"the response could not be encoded."}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store") // answers carry certificates and say things about tokens
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
