package kubeapi

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/resource"
)

// edgeStore is a Storage shaped like the edge metaserver's: its Meta carries spec.nodeName but
// no object field, its events carry no object field either (not even in Prev), and it keeps
// only its current state. The object fields must still select right through it.
type edgeStore struct {
	memStore
	mu   sync.Mutex
	objs map[string][]byte // by store key
	rev  int64
}

func newEdgeStore(rev int64) *edgeStore {
	s := &edgeStore{objs: map[string][]byte{}, rev: rev}
	s.cache = NewCache(100, 100)
	s.cache.Reset(rev)
	return s
}

func edgeMeta(res string, obj []byte) Meta {
	var o struct {
		Metadata struct {
			Namespace, Name string
			Labels          map[string]string
		}
		Spec struct{ NodeName string }
	}
	json.Unmarshal(obj, &o)
	m := Meta{Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, Labels: o.Metadata.Labels}
	if res == resource.Pods {
		m.Fields = map[string]string{"spec.nodeName": o.Spec.NodeName}
	}
	return m
}

// seed stores an object without an event, as the edge's store holds objects from before its
// cache started.
func (s *edgeStore) seed(res, key, obj string) {
	s.objs["/"+res+"/"+key] = []byte(obj)
}

// put writes an object and reports it to the cache, as the metaserver does.
func (s *edgeStore) put(res, key, obj string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	k := "/" + res + "/" + key
	old, had := s.objs[k]
	s.objs[k] = []byte(obj)
	ev := Event{Type: Added, Rev: s.rev, Resource: res, Meta: edgeMeta(res, []byte(obj)), Object: []byte(obj)}
	if had {
		prev := edgeMeta(res, old)
		ev.Type, ev.Prev = Modified, &prev
	}
	s.cache.Add(ev)
}

func (s *edgeStore) remove(res, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	k := "/" + res + "/" + key
	old := s.objs[k]
	delete(s.objs, k)
	m := edgeMeta(res, old)
	s.cache.Add(Event{Type: Deleted, Rev: s.rev, Resource: res, Meta: m, Prev: &m, Object: old})
}

func (s *edgeStore) List(_ context.Context, info resource.Info, ns string, opts ListOptions) (*ListResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	after := ""
	if opts.Continue != "" {
		var err error
		if _, after, err = DecodeContinue(opts.Continue); err != nil {
			return nil, err
		}
	}
	res := &ListResult{ResourceVersion: strconv.FormatInt(s.rev, 10), Items: [][]byte{}}
	prefix := resource.Prefix(info.GroupResource(), ns)
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range s.objs {
			if strings.HasPrefix(k, prefix) && k > after && !yield(k) {
				return
			}
		}
	})
	last := ""
	for _, k := range keys {
		if !opts.Matches(edgeMeta(info.GroupResource(), s.objs[k])) {
			continue
		}
		if opts.Limit > 0 && int64(len(res.Items)) == opts.Limit {
			res.Continue = EncodeContinue(s.rev, last)
			break
		}
		res.Items = append(res.Items, s.objs[k])
		last = k
	}
	return res, nil
}

func (s *edgeStore) Watch(_ context.Context, info resource.Info, ns string, opts ListOptions) (*Watch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	from, _ := strconv.ParseInt(opts.ResourceVersion, 10, 64)
	var initial []Event
	if opts.ResourceVersion == "" {
		from = s.rev
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range s.objs {
				if strings.HasPrefix(k, resource.Prefix(info.GroupResource(), ns)) && !yield(k) {
					return
				}
			}
		}) {
			if m := edgeMeta(info.GroupResource(), s.objs[k]); opts.Matches(m) {
				initial = append(initial, Event{Type: Added, Rev: s.rev, Resource: info.GroupResource(), Meta: m, Object: s.objs[k]})
			}
		}
	}
	return s.cache.Watch(info.GroupResource(), ns, opts, from, initial)
}

func pod(name, node, phase string) string {
	st := ""
	if phase != "" {
		st = `,"status":{"phase":"` + phase + `"}`
	}
	return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"` + name + `","namespace":"ns"},"spec":{"nodeName":"` + node + `"}` + st + `}`
}

func serveStore(t *testing.T, s Storage) *httptest.Server {
	t.Helper()
	h, err := New(DefaultConfig(), resource.New(), s, zerolog.Nop(), nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text())
	}
	return resp.StatusCode, b.String()
}

// TestObjectFieldSelectorsThroughAMetaWithout: a Pod's status.phase and a Secret's type select
// in lists (whole and paged) and watches through a Storage whose Meta does not carry them, as
// the edge metaserver's does not. Before, both were "field label not supported".
func TestObjectFieldSelectorsThroughAMetaWithout(t *testing.T) {
	s := newEdgeStore(10)
	s.seed("pods", "ns/p0", pod("p0", "edge-1", "Running")) // from before the cache started
	srv := serveStore(t, s)
	s.put("pods", "ns/p1", pod("p1", "edge-1", ""))
	s.put("pods", "ns/p2", pod("p2", "edge-1", "Running"))
	s.put("pods", "ns/p3", pod("p3", "edge-2", "Pending"))
	s.put("pods", "ns/p4", pod("p4", "edge-1", "Pending"))
	s.put("secrets", "ns/s1", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s1","namespace":"ns"},"type":"Opaque"}`)
	s.put("secrets", "ns/s2", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s2","namespace":"ns"},"type":"kubernetes.io/tls"}`)

	pods := srv.URL + "/api/v1/namespaces/ns/pods"
	list := func(url string) string {
		t.Helper()
		var got []string
		for cont := ""; ; {
			u := url
			if cont != "" {
				u += "&continue=" + cont
			}
			code, out := get(t, u)
			if code != http.StatusOK {
				t.Fatalf("%s: %d %s", u, code, out)
			}
			var l struct {
				Metadata struct{ Continue string }
				Items    []struct{ Metadata struct{ Name string } }
			}
			json.Unmarshal([]byte(out), &l)
			for _, it := range l.Items {
				got = append(got, it.Metadata.Name)
			}
			if cont = l.Metadata.Continue; cont == "" {
				return strings.Join(got, ",")
			}
			got = append(got, "|")
		}
	}
	for _, tc := range []struct{ url, want string }{
		{pods + "?fieldSelector=status.phase%3DPending", "p1,p3,p4"},
		{pods + "?fieldSelector=status.phase%3DRunning", "p0,p2"},
		{pods + "?fieldSelector=status.phase%3DPending,spec.nodeName%3Dedge-1", "p1,p4"},
		{pods + "?fieldSelector=status.phase%3DPending&limit=2", "p1,p3,|,p4"},
		{pods + "?fieldSelector=status.phase!%3DPending&limit=1", "p0,|,p2"},
		{pods + "?fieldSelector=spec.nodeName%3Dedge-2", "p3"},
		{srv.URL + "/api/v1/namespaces/ns/secrets?fieldSelector=type%3Dkubernetes.io/tls", "s2"},
	} {
		if got := list(tc.url); got != tc.want {
			t.Errorf("%s: %s, want %s", strings.TrimPrefix(tc.url, srv.URL), got, tc.want)
		}
	}
	if code, out := get(t, srv.URL+"/api/v1/namespaces/ns/secrets?fieldSelector=status.phase%3DPending"); code != http.StatusBadRequest || !strings.Contains(out, "field label not supported") {
		t.Errorf("status.phase on secrets: %d %s", code, out)
	}

	// Watches straight from the cache: a Pending one from the current version, a Running one
	// from the current state.
	ctx := context.Background()
	pending, err := s.Watch(ctx, resource.Info{Version: "v1", Resource: "pods"}, "ns", mustListOptions(t, "status.phase=Pending", "11"))
	if err != nil {
		t.Fatal(err)
	}
	running, err := s.Watch(ctx, resource.Info{Version: "v1", Resource: "pods"}, "ns", mustListOptions(t, "status.phase=Running", ""))
	if err != nil {
		t.Fatal(err)
	}
	expect := func(w *Watch, want ...string) {
		t.Helper()
		var got []string
		for len(got) < len(want) {
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			evs, err := w.Next(wctx)
			cancel()
			if err != nil {
				t.Fatalf("got %v, want %v: %v", got, want, err)
			}
			for _, ev := range evs {
				got = append(got, string(ev.Type)+" "+edgeMeta("pods", ev.Object).Name)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("events %v, want %v", got, want)
		}
	}
	// The Pending watch from 11 replays the events after it: p2 (Running) is not for it.
	expect(pending, "ADDED p3", "ADDED p4")
	expect(running, "ADDED p0", "ADDED p2")
	s.put("pods", "ns/p4", pod("p4", "edge-1", "Running"))   // leaves Pending, enters Running
	s.put("pods", "ns/p3", pod("p3", "edge-2", "Pending"))   // stays Pending
	s.put("pods", "ns/p2", pod("p2", "edge-1", "Succeeded")) // leaves Running
	s.put("pods", "ns/p0", pod("p0", "edge-1", "Succeeded")) // leaves Running; seen by the cache for the first time
	s.put("pods", "ns/p1", pod("p1", "edge-1", "Failed"))    // leaves Pending (it had no phase)
	s.put("pods", "ns/p5", pod("p5", "edge-1", ""))          // a new Pending
	s.put("pods", "ns/p2", pod("p2", "edge-1", "Succeeded")) // in neither, and known to be
	s.remove("pods", "ns/p4")                                // was Running
	// p0 changed before the cache knew its phase: a watch it does not match now is told it
	// is gone, in case it had it (this one did not, and a client ignores such a delete).
	expect(pending, "DELETED p4", "MODIFIED p3", "DELETED p0", "DELETED p1", "ADDED p5")
	expect(running, "ADDED p4", "DELETED p2", "DELETED p0", "DELETED p4")
	for _, w := range []*Watch{pending, running} {
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		if evs, err := w.Next(wctx); err == nil {
			t.Errorf("more events: %+v", evs)
		}
		cancel()
		w.Stop()
	}
}

func mustListOptions(t *testing.T, fieldSelector, rv string) ListOptions {
	t.Helper()
	h := &Handler{}
	o, err := h.listOptions(resource.Info{Version: "v1", Resource: "pods"}, map[string][]string{"fieldSelector": {fieldSelector}, "resourceVersion": {rv}})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestServerSideApplyIs415: an apply patch is a 415 Status, as Kubernetes answers a patch type
// it does not take. Before, it reached the storage and came back a 400.
func TestServerSideApplyIs415(t *testing.T) {
	srv, _ := newTestServer(t, map[string][]byte{})
	req, _ := http.NewRequest(http.MethodPatch, srv.URL+"/api/v1/namespaces/ns/configmaps/c1?fieldManager=kubectl", strings.NewReader("apiVersion: v1\nkind: ConfigMap\n"))
	req.Header.Set("Content-Type", "application/apply-patch+yaml")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct{ Kind, Reason, Message string }
	json.NewDecoder(resp.Body).Decode(&st)
	if resp.StatusCode != http.StatusUnsupportedMediaType || st.Kind != "Status" || st.Reason != "UnsupportedMediaType" || !strings.Contains(st.Message, "application/merge-patch+json") {
		t.Fatalf("apply patch: %d %+v", resp.StatusCode, st)
	}
}
