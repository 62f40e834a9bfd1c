package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/twin"
)

// storedDevice reads device name from the edge store: its record and its decoded status.
func (r *rig) storedDevice(name string) (*edgestore.Record, map[string]any) {
	r.t.Helper()
	rec, err := r.store.Get(resource.StoreKey(resource.Key{Resource: resource.Devices, Namespace: ns, Name: name}))
	if err != nil || rec == nil {
		r.t.Fatalf("device %s: %v %v", name, rec, err)
	}
	var obj struct {
		Status map[string]any `json:"status"`
	}
	if err := json.Unmarshal(rec.Object, &obj); err != nil {
		r.t.Fatal(err)
	}
	return rec, obj.Status
}

// shows says whether status holds prop with reported value rep and observed desired value des
// ("" for a side that must be absent).
func shows(status map[string]any, prop, rep, des string) bool {
	b, _ := json.Marshal(status["twins"])
	var twins []twin.StatusTwin
	json.Unmarshal(b, &twins)
	for _, st := range twins {
		if st.PropertyName != prop {
			continue
		}
		got := func(v *twin.StatusValue) string {
			if v == nil {
				return ""
			}
			return v.Value
		}
		return got(st.Reported) == rep && got(st.ObservedDesired) == des
	}
	return rep == "" && des == ""
}

// TestStoredDeviceShowsTheTwin: the edge's copy of a Device shows the twin and state the devices
// reported, without the cloud: written over the cloud's version of the Device, kept when the
// cloud sends that version again, and written again over a newer one. Bursts share writes.
func TestStoredDeviceShowsTheTwin(t *testing.T) {
	r := newRig(t, func(c *Config) { c.StatusEvery = 300 * time.Millisecond }, nil)
	r.model("m", "temp", "INT")
	// The cloud's copy: desired 20, and a status from an older report, with a field of its own.
	r.rev++
	cloudRV := fmt.Sprint(r.rev)
	cloudObj := func(desired, rv string) []byte {
		b, _ := json.Marshal(map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
			"metadata": map[string]any{"name": "a", "namespace": ns, "resourceVersion": rv},
			"spec": map[string]any{"nodeName": node, "deviceModelRef": map[string]any{"name": "m"},
				"properties": []any{map[string]any{"name": "temp", "desired": map[string]any{"value": desired}}}},
			"status": map[string]any{"extra": "kept", "twins": []any{map[string]any{"propertyName": "temp",
				"reported": map[string]any{"value": "1", "metadata": map[string]any{"timestamp": "1000", "type": "int"}}}}}})
		return b
	}
	key := resource.Key{Resource: resource.Devices, Namespace: ns, Name: "a"}
	r.apply(&protocol.Upsert{Rev: r.rev, Key: key, Object: cloudObj("20", cloudRV)})
	r.waitDevice("a")
	cloudRev := r.rev

	waitStatus := func(what string, ok func(*edgestore.Record, map[string]any) bool) (*edgestore.Record, map[string]any) {
		t.Helper()
		deadline := time.Now().Add(waitFor)
		for {
			rec, st := r.storedDevice("a")
			if ok(rec, st) {
				return rec, st
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the stored device's status is %s", what, mustJSON(st))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Before any report the stored Device shows the desired value the edge holds, and, as in
	// the cloud, no reported value: the twin holds none (the cloud's came from an older twin).
	waitStatus("observed desired", func(_ *edgestore.Record, st map[string]any) bool { return shows(st, "temp", "", "20") })

	m := connectMapper(t, r.url, nil, ns+"/a")
	ctx := context.Background()
	if _, err := m.Report(ctx, ns+"/a", map[string]string{"temp": "30"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetState(ctx, ns+"/a", "online"); err != nil {
		t.Fatal(err)
	}
	rec, st := waitStatus("report", func(_ *edgestore.Record, st map[string]any) bool {
		return shows(st, "temp", "30", "20") && st["state"] == "online" && st["lastOnlineTime"] != nil
	})
	if st["extra"] != "kept" || rec.Rev != cloudRev || rec.CloudRV != cloudRV || !rec.Meta.EdgeStatus {
		t.Fatalf("record after the edge's status: rev %d (cloud %d), cloudRV %s, edge status %v, status %s",
			rec.Rev, cloudRev, rec.CloudRV, rec.Meta.EdgeStatus, mustJSON(st))
	}
	// The engine does not take its own status writes for changes of the Device.
	desired := value(r.engine.m.desired.WithLabelValues("unchanged"))

	// The cloud sends the same version again (as in a resync): the edge's status stays.
	r.rev++
	r.apply(&protocol.Upsert{Rev: r.rev, Key: key, Object: cloudObj("20", cloudRV)})
	again, st := r.storedDevice("a")
	if again.LocalRev != rec.LocalRev || !shows(st, "temp", "30", "20") {
		t.Fatalf("the same cloud version again replaced the edge's status: local rev %d → %d, %s", rec.LocalRev, again.LocalRev, mustJSON(st))
	}

	// A newer version (desired 25) carries the cloud's older status; the edge's goes back over it.
	r.rev++
	r.apply(&protocol.Upsert{Rev: r.rev, Key: key, Object: cloudObj("25", fmt.Sprint(r.rev))})
	waitStatus("after a spec change", func(rec *edgestore.Record, st map[string]any) bool {
		return rec.Rev == r.rev && shows(st, "temp", "30", "25") && st["state"] == "online" && st["extra"] == "kept"
	})

	// A burst of reports: the stored Device ends at the last value, in far fewer writes.
	before := value(r.engine.m.statusWrites)
	for i := 1; i <= 60; i++ {
		if _, err := m.Report(ctx, ns+"/a", map[string]string{"temp": fmt.Sprint(100 + i)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitStatus("after a burst", func(_ *edgestore.Record, st map[string]any) bool { return shows(st, "temp", "160", "25") })
	if n := value(r.engine.m.statusWrites) - before; n > 10 {
		t.Fatalf("%v status writes for 60 reports over about 0.5 s (StatusEvery 300ms)", n)
	}
	if d := value(r.engine.m.desired.WithLabelValues("unchanged")) - desired; d != 0 {
		// The spec change counts as applied and the resend made no change; the edge's own
		// writes must add none either.
		t.Fatalf("the engine re-read the Device %v times after its own status writes", d)
	}

	// After a restart the stored status is as it was, and nothing is rewritten: the start
	// marks the device, and its status is current.
	r.restart()
	_, st = r.storedDevice("a")
	if !shows(st, "temp", "160", "25") {
		t.Fatalf("after restart: %s", mustJSON(st))
	}
	time.Sleep(3 * 300 * time.Millisecond)
	if n := value(r.engine.m.statusWrites); n != 0 {
		t.Fatalf("%v status writes after the restart, want none", n)
	}
}

// TestStatusWritesAreBounded: many busy devices get their status written StatusRate a second,
// and every one of them in the end.
func TestStatusWritesAreBounded(t *testing.T) {
	r := newRig(t, func(c *Config) { c.StatusEvery, c.StatusRate = 200*time.Millisecond, 10 }, nil)
	r.model("m", "temp", "INT")
	const n = 30
	var ids []string
	for i := range n {
		name := fmt.Sprint("d", i)
		r.device(name, "m")
		r.waitDevice(name)
		ids = append(ids, ns+"/"+name)
	}
	// The devices' arrival marked them all; let those writes pass.
	waitUntil(t, "the first status of every device", func() bool { return value(r.engine.m.statusWrites) >= n })
	m := connectMapper(t, r.url, nil, ids...)
	before := value(r.engine.m.statusWrites)
	start := time.Now()
	for _, id := range ids {
		if _, err := m.Report(context.Background(), id, map[string]string{"temp": "7"}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "every device's status", func() bool {
		for i := range n {
			if _, st := r.storedDevice(fmt.Sprint("d", i)); !shows(st, "temp", "7", "") {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	// The count follows the commit the status was read from.
	waitUntil(t, "the writes counted", func() bool { return value(r.engine.m.statusWrites)-before >= n })
	if got := value(r.engine.m.statusWrites) - before; got != n {
		t.Fatalf("%v status writes for %d devices, want one each", got, n)
	}
	// 10 a second, 2 per commit: the 30 take at least 2.6 s after the first commit.
	if took < 2500*time.Millisecond {
		t.Fatalf("%d devices' status written in %s at 10 a second", n, took)
	}
	t.Logf("%d devices' status written in %s", n, took.Round(time.Millisecond))
}

// TestStartDoesNotHoldBackAChange: every start marks every device, and the stored status of most
// is current already; the bound counts writes, so a device that changes right after the start is
// written at once, not behind all the others.
func TestStartDoesNotHoldBackAChange(t *testing.T) {
	r := newRig(t, func(c *Config) { c.StatusEvery, c.StatusRate = 200*time.Millisecond, 10 }, nil)
	r.model("m", "temp", "INT")
	const n = 30
	for i := range n {
		r.device(fmt.Sprint("d", i), "m")
	}
	// d9 is the last of them in the store's (and so the start's) order.
	r.waitDevice("d9")
	waitUntil(t, "the first status of every device", func() bool { return value(r.engine.m.statusWrites) >= n })

	r.restart()
	m := connectMapper(t, r.url, nil, ns+"/d9")
	start := time.Now()
	if _, err := m.Report(context.Background(), ns+"/d9", map[string]string{"temp": "7"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "d9's status", func() bool { _, st := r.storedDevice("d9"); return shows(st, "temp", "7", "") })
	// Looked at 2 to a commit (10 a second, every 200 ms), d9 would wait for the other 29: 2.8 s.
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("d9's status written %s after its report", took)
	}
	// The count follows the commit the status was read from.
	waitUntil(t, "d9's write counted", func() bool { return value(r.engine.m.statusWrites) >= 1 })
	if got := value(r.engine.m.statusWrites); got != 1 {
		t.Fatalf("%v status writes after the restart, want 1 (d9's): the others were current", got)
	}
}
