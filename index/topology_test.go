package index

import (
	"sync"
	"testing"

	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/store"
)

func TestDecodeSlice(t *testing.T) {
	reg := resource.New()
	decode := func(rev int64, v string) *Slice {
		t.Helper()
		o, err := Decode(reg, store.KV{Key: "/endpointslices.discovery.k8s.io/shop/web-1", ModRev: rev, Value: []byte(v)})
		if err != nil {
			t.Fatal(err)
		}
		return o.Slice
	}
	a := decode(3, `{"metadata":{"name":"web-1","namespace":"shop","labels":{"kubernetes.io/service-name":"web"}},
		"endpoints":[{"addresses":["10.0.0.1"],"nodeName":"n1"},{"addresses":["10.0.0.2"]}],"ports":[{"port":80}]}`)
	if a.Service != "/services/shop/web" || len(a.Endpoints) != 2 || a.Endpoints[0].Node != "n1" || a.Endpoints[1].Node != "" {
		t.Fatalf("slice = %+v", a)
	}
	b := decode(9, `{"metadata":{"name":"web-1","namespace":"shop","labels":{"kubernetes.io/service-name":"web"}},
		"endpoints":[{"addresses":["10.0.0.1"],"nodeName":"n1"},{"addresses":["10.0.0.3"]}],"ports":[{"port":80}]}`)
	if a.Rest != b.Rest || a.Endpoints[0].Hash != b.Endpoints[0].Hash || a.Endpoints[1].Hash == b.Endpoints[1].Hash {
		t.Error("a change of one endpoint (and of the version) must change that endpoint's hash alone")
	}
	c := decode(9, `{"metadata":{"name":"web-1","namespace":"shop","labels":{"kubernetes.io/service-name":"web"}},
		"endpoints":[{"addresses":["10.0.0.1"],"nodeName":"n1"},{"addresses":["10.0.0.3"]}],"ports":[{"port":81}]}`)
	if c.Rest == b.Rest {
		t.Error("a change outside the endpoints must change Rest")
	}
	if d := decode(1, `{"metadata":{"name":"web-1","namespace":"shop"}}`); d.Service != "" || len(d.Endpoints) != 0 {
		t.Errorf("a slice without a service or endpoints = %+v", d)
	}
	if _, err := Decode(reg, store.KV{Key: "/endpointslices.discovery.k8s.io/shop/bad", Value: []byte(`{"endpoints":[{"nodeName":5}]}`)}); err == nil {
		t.Error("a slice with a numeric nodeName decoded")
	}

	// Concurrent callers of one form build it once and share it.
	var builds int
	var mu sync.Mutex
	var wg sync.WaitGroup
	got := make([][]byte, 16)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = a.Form("k", func() []byte {
				mu.Lock()
				builds++
				mu.Unlock()
				return []byte("form")
			})
		}()
	}
	wg.Wait()
	if builds != 1 || &got[0][0] != &got[15][0] {
		t.Errorf("a form was built %d times; want once, shared", builds)
	}
}
