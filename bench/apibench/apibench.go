package apibench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"

	"github.com/tetherhub/tether/bench/boltbase"
	"github.com/tetherhub/tether/bench/figure"
	"github.com/tetherhub/tether/cloudapi"
	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/index"
	"github.com/tetherhub/tether/kubeapi"
	"github.com/tetherhub/tether/metaserver"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/sim"
	"github.com/tetherhub/tether/store/boltstore"
)

// Result is one measured figure beside its baseline (the same shape as hubbench's).
type Result = figure.Result

// sizes are the run lengths: "default" fits a 2-core machine in well under a minute.
type sizes struct {
	objects, lists, watchEvents, writes, writers int
}

func sizeOf(size string) (sizes, error) {
	switch size {
	case "", "default":
		return sizes{objects: 1000, lists: 300, watchEvents: 500, writes: 2000, writers: 8}, nil
	case "full":
		return sizes{objects: 1000, lists: 2000, watchEvents: 3000, writes: 10000, writers: 16}, nil
	}
	return sizes{}, fmt.Errorf("apibench: size %q is not default or full", size)
}

// Run measures and prints each figure as it is found.
func Run(ctx context.Context, size string, w io.Writer) ([]Result, error) {
	sz, err := sizeOf(size)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tether-apibench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var out []Result
	emit := func(r Result) {
		out = append(out, r)
		fmt.Fprintln(w, Format(r))
	}
	if err := edgeFigures(ctx, filepath.Join(dir, "edge.db"), sz, emit); err != nil {
		return out, fmt.Errorf("edge: %w", err)
	}
	if err := cloudWrites(ctx, filepath.Join(dir, "cloud.db"), sz, emit); err != nil {
		return out, fmt.Errorf("cloud writes: %w", err)
	}
	return out, nil
}

// Format renders a result as one line.
func Format(r Result) string { return figure.Format(r) }

// podJSON is a pod of about 1 KB, as the cloud would send it.
func podJSON(i int, rv uint64) []byte {
	p := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": fmt.Sprintf("pod-%04d", i), "namespace": "bench", "resourceVersion": fmt.Sprint(rv),
			"uid": fmt.Sprintf("00000000-0000-4000-8000-%012d", i), "creationTimestamp": "2026-01-01T00:00:00Z",
			"labels": map[string]string{"app": "bench", "tier": fmt.Sprint(i % 7)}},
		"spec": map[string]any{"nodeName": "edge-1", "containers": []any{map[string]any{
			"name": "app", "image": "registry.example/bench/app:1.2.3",
			"env":   []any{map[string]any{"name": "MODE", "value": strings.Repeat("x", 400)}},
			"ports": []any{map[string]any{"containerPort": 8080, "protocol": "TCP"}}}}},
		"status": map[string]any{"phase": "Running", "podIP": fmt.Sprintf("10.0.%d.%d", i/250, i%250)},
	}
	b, _ := json.Marshal(p)
	return b
}

// edgeFigures measures the metaserver's list and watch over one edge store.
func edgeFigures(ctx context.Context, path string, sz sizes, emit func(Result)) error {
	reg := resource.New()
	st, err := edgestore.Open(edgestore.DefaultConfig(path), reg, zerolog.Nop(), nil)
	if err != nil {
		return err
	}
	defer st.Close()
	// Commit times by local revision, recorded by a subscriber that runs before the
	// metaserver's, on the store's writer goroutine, right after the commit.
	var commits sync.Map
	st.Subscribe(func(cs []edgestore.Change) {
		now := time.Now()
		for _, c := range cs {
			commits.Store(c.Rev, now)
		}
	})
	meta := metaserver.New(st, reg, 10_000, 0, 10_000, nil)
	h, err := kubeapi.New(kubeapi.DefaultConfig(), reg, meta, zerolog.Nop(), nil, "apibench")
	if err != nil {
		return err
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	if err := st.BeginSession(ctx, "bench"); err != nil {
		return err
	}
	msgs := []protocol.Message{&protocol.ResetBegin{}}
	for i := 0; i < sz.objects; i++ {
		msgs = append(msgs, &protocol.Upsert{Key: resource.Key{Resource: resource.Pods, Namespace: "bench", Name: fmt.Sprintf("pod-%04d", i)}, Rev: uint64(i + 1), Object: podJSON(i, uint64(i+1))})
	}
	msgs = append(msgs, &protocol.ResetEnd{Through: uint64(sz.objects)})
	if err := apply(ctx, st, msgs...); err != nil {
		return err
	}

	// The baseline: the same objects as typed values, encoded by encoding/json.
	recs, _, err := st.List(resource.Prefix(resource.Pods, "bench"))
	if err != nil {
		return err
	}
	list := corev1.PodList{Items: make([]corev1.Pod, len(recs))}
	for i, r := range recs {
		if err := json.Unmarshal(r.Object, &list.Items[i]); err != nil {
			return err
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	url := srv.URL + "/api/v1/namespaces/bench/pods"
	var lists, encodes []float64
	var bodyLen int
	for i := 0; i < 20; i++ { // warm up connections and caches
		if _, err := get(ctx, client, url); err != nil {
			return err
		}
		json.Marshal(&list)
	}
	// The lists first, then the encodings: each encoding leaves ~1 MB of garbage in this
	// process, which the server shares, and its collection would land on the next list.
	for i := 0; i < sz.lists; i++ {
		start := time.Now()
		n, err := get(ctx, client, url)
		if err != nil {
			return err
		}
		lists = append(lists, figure.Ms(time.Since(start)))
		bodyLen = n
	}
	for i := 0; i < sz.lists; i++ {
		start := time.Now()
		if _, err := json.Marshal(&list); err != nil {
			return err
		}
		encodes = append(encodes, figure.Ms(time.Since(start)))
	}
	enc := figure.Percentile(encodes, 0.5)
	note := fmt.Sprintf("%d objects, %d KB per list", sz.objects, bodyLen/1024)
	emit(Result{Name: "edge metaserver list of 1,000 objects p50", Unit: "ms", Value: figure.Percentile(lists, 0.5), Baseline: enc, Note: note + "; baseline: json.Marshal of the same objects, p50"})
	emit(Result{Name: "edge metaserver list of 1,000 objects p99", Unit: "ms", Value: figure.Percentile(lists, 0.99), Baseline: enc, Goal: "≤ 5 ms and ≤ 2× encoding", Note: note})

	// Watch: one HTTP watch from the current version; each change is committed alone.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, _ := http.NewRequestWithContext(wctx, http.MethodGet, fmt.Sprintf("%s?watch=true&resourceVersion=%d", url, st.LocalRev()), nil)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	type seen struct {
		rev uint64
		at  time.Time
	}
	got := make(chan seen, sz.watchEvents)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			at := time.Now()
			var ev struct {
				Object struct {
					Metadata struct{ ResourceVersion string }
				}
			}
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			var rev uint64
			fmt.Sscan(ev.Object.Metadata.ResourceVersion, &rev)
			got <- seen{rev, at}
		}
		close(got)
	}()
	var lat []float64
	for i := 0; i < sz.watchEvents; i++ {
		n := i % sz.objects
		if err := apply(ctx, st, &protocol.Upsert{Key: resource.Key{Resource: resource.Pods, Namespace: "bench", Name: fmt.Sprintf("pod-%04d", n)},
			Rev: uint64(sz.objects + i + 1), Object: podJSON(n, uint64(sz.objects+i+1))}); err != nil {
			return err
		}
		select {
		case s, ok := <-got:
			if !ok {
				return fmt.Errorf("the watch ended")
			}
			t, ok := commits.Load(s.rev)
			if !ok {
				return fmt.Errorf("event at %d has no commit", s.rev)
			}
			lat = append(lat, figure.Ms(s.at.Sub(t.(time.Time))))
		case <-time.After(10 * time.Second):
			return fmt.Errorf("no watch event within 10s")
		}
	}
	emit(Result{Name: "edge watch latency, store commit to client event, p50", Unit: "ms", Value: figure.Percentile(lat, 0.5), Note: fmt.Sprintf("%d events", len(lat))})
	emit(Result{Name: "edge watch latency, store commit to client event, p99", Unit: "ms", Value: figure.Percentile(lat, 0.99), Goal: "≤ 10 ms"})
	return nil
}

func apply(ctx context.Context, st *edgestore.Store, msgs ...protocol.Message) error {
	done := make(chan error, 1)
	if err := st.Apply(ctx, msgs, func(err error) { done <- err }); err != nil {
		return err
	}
	return <-done
}

func get(ctx context.Context, c *http.Client, url string) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return int(n), err
}

// cloudWrites measures creates and updates per second through the cloud API.
func cloudWrites(ctx context.Context, path string, sz sizes, emit func(Result)) error {
	b, err := boltstore.Open(boltstore.DefaultConfig(path), zerolog.Nop(), nil)
	if err != nil {
		return err
	}
	defer b.Close()
	reg := resource.New()
	ix, err := index.New(index.DefaultConfig(), b, reg, zerolog.Nop(), nil)
	if err != nil {
		return err
	}
	objects := cloudapi.NewObjects(b, ix, reg, 10_000, 10_000, time.Now)
	h, err := kubeapi.New(kubeapi.DefaultConfig(), reg, objects, zerolog.Nop(), nil, "apibench_cloud")
	if err != nil {
		return err
	}
	ictx, cancel := context.WithCancel(ctx)
	ixDone := make(chan error, 1)
	go func() { ixDone <- ix.Run(ictx) }()
	defer func() { cancel(); <-ixDone }()
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: sz.writers}}
	if err := sim.EnsureNamespace(srv.URL, "bench"); err != nil {
		return err
	}
	url := srv.URL + "/api/v1/namespaces/bench/configmaps"
	cm := func(i, gen int) []byte {
		return []byte(fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm-%05d","namespace":"bench"},"data":{"gen":"%d","payload":"%s"}}`, i, gen, strings.Repeat("p", 800)))
	}
	run := func(method string, body func(i int) []byte, path func(i int) string, want int) (float64, error) {
		var next, failed atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		start := time.Now()
		for wkr := 0; wkr < sz.writers; wkr++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= sz.writes || ctx.Err() != nil {
						return
					}
					req, _ := http.NewRequestWithContext(ctx, method, path(i), bytes.NewReader(body(i)))
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != want {
							err = fmt.Errorf("%s: %s", method, resp.Status)
						}
					}
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
				}
			}()
		}
		wg.Wait()
		if e := firstErr.Load(); e != nil {
			return 0, fmt.Errorf("%d writes failed, first: %v", failed.Load(), e)
		}
		return float64(sz.writes) / time.Since(start).Seconds(), nil
	}
	// The index must be loaded before the first write is read back.
	select {
	case <-ix.Current():
	case <-ctx.Done():
		return ctx.Err()
	}
	creates, err := run(http.MethodPost, func(i int) []byte { return cm(i, 1) }, func(int) string { return url }, http.StatusCreated)
	if err != nil {
		return err
	}
	updates, err := run(http.MethodPut, func(i int) []byte { return cm(i, 2) }, func(i int) string { return fmt.Sprintf("%s/cm-%05d", url, i) }, http.StatusOK)
	if err != nil {
		return err
	}
	// The baseline: bare bbolt with as many writers, each putting a value of the same size and
	// waiting until it is durable, for as long as the updates took.
	bare, err := boltbase.Run(ctx, filepath.Dir(path), boltbase.Load{Writers: sz.writers, Keys: sz.writes, ValueSize: len(cm(0, 2)),
		Duration: time.Duration(float64(sz.writes) / updates * float64(time.Second))})
	if err != nil {
		return fmt.Errorf("bare bbolt: %w", err)
	}
	note := fmt.Sprintf("%d writes of ~1 KB, %d concurrent clients, each answered after the index applied it", sz.writes, sz.writers)
	bnote := fmt.Sprintf("; baseline: bare bbolt, %d writers putting values of the same size through DB.Batch", sz.writers)
	emit(Result{Name: "cloud API creates per second (embedded store)", Unit: "ops/s", Value: creates, Baseline: bare.Rate, Note: note + bnote})
	emit(Result{Name: "cloud API updates per second (embedded store)", Unit: "ops/s", Value: updates, Baseline: bare.Rate, Note: note + bnote})
	return nil
}
