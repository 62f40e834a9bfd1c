package cloudapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/cloudhub"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/store"
)

// Uploads stores what devices publish on $hw/events/upload/# and SYS/dis/upload_records, as their
// edges report it (protocol.ReportUpload), and serves them as a stream a program can follow and
// resume: GET /tether/v1/uploads?after=CURSOR&follow=true (UploadsPath).
//
// Exactly once: each upload is stored under a key made of its node, its outbox seq and the time
// the edge recorded it, with a create that fails if the key exists. An upload the edge resends
// (its ack was lost) finds its key taken and is acknowledged again without a second copy; the
// time tells a fresh outbox (an edge whose store was wiped numbers from 1 again) from a resend.
// An edge's reports are applied in order, so one node's uploads are stored in their order.
//
// Cursor: the store revision that created an upload. Revisions are global and only grow, so the
// stream is every upload in the order the cloud stored it, and any replica (one etcd) serves the
// same stream. Streaming reads the store's history (Watch) from the cursor; when the cursor is
// older than the history, the retained uploads are listed instead. Retention keeps the newest
// UploadsConfig.Retain uploads; a cursor older than an upload retention removed is answered
// 410 Gone, so a follower knows it missed some.
//
// Caveat: uploads live in the same revision sequence as objects, so a high upload rate shortens,
// in time, the history that edges catch up from after a disconnect (as status writes do).
type Uploads struct {
	backend store.Backend
	cfg     UploadsConfig
	now     func() time.Time
	log     zerolog.Logger
	stop    chan struct{} // closed when Run ends: ends every follow

	stored, dups, pruned prometheus.Counter
	bytes                prometheus.Counter
	followers            prometheus.Gauge
}

// UploadsConfig configures upload retention.
type UploadsConfig struct {
	// Retain is how many uploads are kept; the oldest beyond it are deleted.
	Retain int
	// PruneInterval is how often retention runs.
	PruneInterval time.Duration
	// WriteTimeout bounds each write to a follower: one that stops reading is cut off instead
	// of holding its goroutine and the store's buffer of events for it.
	WriteTimeout time.Duration
}

// DefaultUploadsConfig returns the defaults.
func DefaultUploadsConfig() UploadsConfig {
	return UploadsConfig{Retain: 100_000, PruneInterval: time.Minute, WriteTimeout: 10 * time.Second}
}

// Validate reports the first unusable setting.
func (c UploadsConfig) Validate() error {
	switch {
	case c.Retain < 1:
		return fmt.Errorf("uploads: retain must be at least 1, got %d", c.Retain)
	case c.PruneInterval <= 0:
		return fmt.Errorf("uploads: prune interval must be positive, got %s", c.PruneInterval)
	case c.WriteTimeout <= 0:
		return fmt.Errorf("uploads: write timeout must be positive, got %s", c.WriteTimeout)
	}
	return nil
}

// Keys of uploads in the store. They are outside the served kinds, so the index skips them.
const (
	uploadPrefix    = "/tether/uploads/"       // + node/seq(20 digits)-time
	uploadPrunedKey = "/tether/uploads-pruned" // the newest cursor retention deleted
)

// UploadsPath is where the API serves the upload stream.
const UploadsPath = "/tether/v1/uploads"

// Upload is one upload as stored and as streamed (one JSON object per line).
type Upload struct {
	// Cursor is the store revision that stored it: pass it as after= to resume behind it.
	Cursor string `json:"cursor,omitempty"`
	Node   string `json:"node"`
	Topic  string `json:"topic"`
	// Seq is the edge's outbox sequence number; with Node and Time it identifies the upload.
	Seq uint64 `json:"seq"`
	// Time is when the edge received it, RFC 3339 with milliseconds, UTC.
	Time string `json:"time"`
	// Payload is what the device published, as it was (base64 in JSON).
	Payload []byte `json:"payload"`
}

// NewUploads returns the upload store; cfg must be valid.
func NewUploads(backend store.Backend, cfg UploadsConfig, now func() time.Time, log zerolog.Logger, promReg prometheus.Registerer) *Uploads {
	u := &Uploads{
		backend: backend, cfg: cfg, now: now, log: log.With().Str("component", "uploads").Logger(),
		stop:   make(chan struct{}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_cloud_uploads_total", Help: "Uploads from devices stored."}),
		dups: prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_cloud_upload_duplicates_total",
			Help: "Uploads an edge sent again after they were stored (acknowledged, not stored twice)."}),
		pruned:    prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_cloud_uploads_pruned_total", Help: "Uploads deleted by retention."}),
		bytes:     prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_cloud_upload_bytes_total", Help: "Payload bytes of uploads stored."}),
		followers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_cloud_upload_streams", Help: "Upload streams being served."}),
	}
	if promReg != nil {
		promReg.MustRegister(u.stored, u.dups, u.pruned, u.bytes, u.followers)
	}
	return u
}

func uploadKey(node string, seq uint64, t int64) string {
	return fmt.Sprintf("%s%s/%020d-%d", uploadPrefix, node, seq, t)
}

// Apply stores one upload report (see the type's documentation for exactly once).
func (u *Uploads) Apply(ctx context.Context, node string, r *protocol.Report) error {
	if r.Kind != protocol.ReportUpload {
		return fmt.Errorf("%w: report kind %d is not an upload", cloudhub.ErrBadReport, r.Kind)
	}
	up := Upload{Node: node, Topic: r.Subject, Seq: r.Seq,
		Time: time.UnixMilli(r.Time).UTC().Format("2006-01-02T15:04:05.000Z07:00"), Payload: r.Payload}
	b, err := json.Marshal(up)
	if err != nil {
		return fmt.Errorf("%w: upload: %v", cloudhub.ErrBadReport, err)
	}
	_, err = u.backend.Create(ctx, uploadKey(node, r.Seq, r.Time), b)
	switch {
	case errors.Is(err, store.ErrExists):
		u.dups.Inc()
		return nil
	case err != nil:
		return fmt.Errorf("store upload: %w", err)
	}
	u.stored.Inc()
	u.bytes.Add(float64(len(r.Payload)))
	return nil
}

// Run applies retention every PruneInterval until ctx ends; then it ends every stream.
func (u *Uploads) Run(ctx context.Context) error {
	defer close(u.stop)
	t := time.NewTicker(u.cfg.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := u.prune(ctx); err != nil && ctx.Err() == nil {
				u.log.Warn().Err(err).Msg("upload retention failed; retried at the next interval")
			}
		}
	}
}

// prune deletes the oldest uploads beyond Retain. The mark of what was deleted is written first,
// so a stream asked to resume before it fails with 410 instead of skipping silently.
func (u *Uploads) prune(ctx context.Context) error {
	all, _, err := u.listAfter(ctx, 0) // oldest first; uploads stored during the walk wait for the next run
	if err != nil {
		return err
	}
	excess := len(all) - u.cfg.Retain
	if excess <= 0 {
		return nil
	}
	gone := all[:excess]
	mark := []byte(strconv.FormatInt(gone[len(gone)-1].CreateRev, 10))
	if _, err := u.backend.Update(ctx, uploadPrunedKey, mark, 0); errors.Is(err, store.ErrNotFound) {
		_, err = u.backend.Create(ctx, uploadPrunedKey, mark)
		if err != nil && !errors.Is(err, store.ErrExists) {
			return err
		}
	} else if err != nil {
		return err
	}
	for _, g := range gone {
		if _, _, err := u.backend.Delete(ctx, g.Key, 0); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		u.pruned.Inc()
	}
	return nil
}

// prunedThrough returns the newest cursor retention has deleted (0 if none).
func (u *Uploads) prunedThrough(ctx context.Context) (int64, error) {
	kv, err := u.backend.Get(ctx, uploadPrunedKey)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(kv.Value), 10, 64)
}

// ServeHTTP serves GET /tether/v1/uploads: newline-delimited JSON, one Upload per line, in the
// order they were stored, after the cursor given as after= (default: from the oldest retained).
// follow=true keeps the response open and sends uploads as they are stored; otherwise it ends at
// the newest. node= keeps only one node's uploads.
func (u *Uploads) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		statusError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "use GET")
		return
	}
	q := r.URL.Query()
	var after int64
	if s := q.Get("after"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			statusError(w, http.StatusBadRequest, "BadRequest", "after must be a cursor from a previous line (a non-negative integer)")
			return
		}
		after = v
	}
	follow, _ := strconv.ParseBool(q.Get("follow"))
	node := q.Get("node")
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-u.stop:
			cancel()
		case <-ctx.Done():
		}
	}()

	pruned, err := u.prunedThrough(ctx)
	if err != nil {
		statusError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "the store is unavailable: "+err.Error())
		return
	}
	head, err := u.backend.Rev(ctx)
	if err != nil {
		statusError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "the store is unavailable: "+err.Error())
		return
	}
	compacted, err := u.backend.Compacted(ctx)
	if err != nil {
		statusError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "the store is unavailable: "+err.Error())
		return
	}
	switch {
	case after < pruned:
		statusError(w, http.StatusGone, "Expired", fmt.Sprintf("uploads after cursor %d were deleted by retention (through %d); resume from %d", after, pruned, pruned))
		return
	case after > head:
		statusError(w, http.StatusGone, "Expired", fmt.Sprintf("cursor %d is ahead of the store (%d): it is from another store; start again from 0", after, head))
		return
	}
	u.followers.Inc()
	defer u.followers.Dec()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	deadline := func() { rc.SetWriteDeadline(time.Now().Add(u.cfg.WriteTimeout)) }
	deadline()
	send := func(kv store.KV) error {
		var up Upload
		if err := json.Unmarshal(kv.Value, &up); err != nil {
			u.log.Warn().Err(err).Str("key", kv.Key).Msg("skipping a damaged upload record")
			return nil
		}
		if node != "" && up.Node != node {
			return nil
		}
		up.Cursor = strconv.FormatInt(kv.CreateRev, 10)
		deadline()
		return enc.Encode(up)
	}

	from := after
	if after < compacted {
		// The history no longer reaches back to the cursor: list what is retained.
		refs, rev, err := u.listAfter(ctx, after)
		if err != nil {
			return // the status line is sent; the client sees a short stream and resumes
		}
		for _, ref := range refs {
			kv, err := u.backend.Get(ctx, ref.Key)
			if errors.Is(err, store.ErrNotFound) {
				continue // pruned since the list
			}
			if err != nil || send(kv) != nil {
				return
			}
		}
		rc.Flush()
		from = rev
	}
	if !follow && from >= head {
		return
	}
	events, err := u.backend.Watch(ctx, from)
	if err != nil {
		return
	}
	for resp := range events {
		if resp.Err != nil {
			return // compacted under us or too slow: the client resumes from its last cursor
		}
		for _, ev := range resp.Events {
			if ev.Type == store.Put && ev.Prev == nil && strings.HasPrefix(ev.KV.Key, uploadPrefix) {
				if send(ev.KV) != nil {
					return
				}
			}
			if !follow && ev.Rev() >= head {
				rc.Flush()
				return
			}
		}
		deadline()
		if rc.Flush() != nil {
			return
		}
	}
}

// listAfter returns the retained uploads stored after cursor, in cursor order, without their
// values (up to Retain uploads of any size would not fit in memory at once; the caller reads
// each as it sends it), and the revision the list is consistent at.
func (u *Uploads) listAfter(ctx context.Context, cursor int64) ([]store.KV, int64, error) {
	var out []store.KV
	var rev int64
	after := ""
	for {
		kvs, r, err := u.backend.Keys(ctx, uploadPrefix, after, 1000)
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = r
		}
		for _, kv := range kvs {
			if kv.CreateRev > cursor && kv.CreateRev <= rev {
				out = append(out, kv)
			}
		}
		if len(kvs) < 1000 {
			break
		}
		after = kvs[len(kvs)-1].Key
	}
	slices.SortFunc(out, func(a, b store.KV) int { return cmp.Compare(a.CreateRev, b.CreateRev) })
	return out, rev, nil
}

// statusError answers with a Kubernetes-style Status, as the rest of the API does.
func statusError(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": msg, "reason": reason, "code": code,
	})
}
