package engine

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/twin"
)

// deviceWithUID is the Upsert of Device name of model, with uid, at the rig's next revision.
func (r *rig) deviceWithUID(name, uid, model string) *protocol.Upsert {
	r.rev++
	b, _ := json.Marshal(map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
		"metadata": map[string]any{"name": name, "namespace": ns, "uid": uid, "resourceVersion": fmt.Sprint(r.rev)},
		"spec":     map[string]any{"nodeName": node, "deviceModelRef": map[string]any{"name": model}}})
	return &protocol.Upsert{Rev: r.rev, Key: resource.Key{Resource: resource.Devices, Namespace: ns, Name: name}, Object: b}
}

// TestDeviceMadeAgainInOneChange: a Device deleted and made again under its name, both in one
// batch (or a catch-up that sends only the new one), is a new device: the mappers hear it
// leave and come, and its twin starts empty instead of keeping the old one's values.
func TestDeviceMadeAgainInOneChange(t *testing.T) {
	r := newRig(t, nil, nil)
	r.model("m", "temp", "INT")
	r.model("m2", "pressure", "INT")
	members := "$hw/events/node/" + node + "/membership/updated"
	c := newClient(t, r.url, "$hw/events/node/"+node+"/#", dev+"#")
	r.apply(r.deviceWithUID("thermo", "uid-1", "m"))
	r.waitDevice("thermo")
	c.next(members, 1) // added
	c.publish(dev+"twin/update", []byte(`{"event_id":"u1","twin":{"temp":{"actual":{"value":"19"}}}}`))
	c.next(dev+"twin/update/result", 1)
	// The report names the Device's uid, so that the cloud can drop it if it lands after the
	// Device was made again.
	var uids []string
	for _, e := range r.outbox() {
		if e.Kind == protocol.ReportTwin {
			rep, err := twin.DecodeTwinReport(e.Payload)
			if err != nil {
				t.Fatal(err)
			}
			uids = append(uids, rep.UID)
		}
	}
	if fmt.Sprint(uids) != "[uid-1]" {
		t.Fatalf("uids named by the twin reports queued: %v, want [uid-1]", uids)
	}

	r.rev++
	del := &protocol.Delete{Rev: r.rev, Key: resource.Key{Resource: resource.Devices, Namespace: ns, Name: "thermo"}}
	r.apply(del, r.deviceWithUID("thermo", "uid-2", "m2"))
	gone, back := c.next(members, 2), c.next(members, 3)
	if rm := gone["removed_devices"].([]any); len(rm) != 1 || len(gone["added_devices"].([]any)) != 0 {
		t.Fatalf("first membership/updated after the device was made again: %v, want it removed", gone)
	}
	if add := back["added_devices"].([]any); len(add) != 1 || len(back["removed_devices"].([]any)) != 0 {
		t.Fatalf("second membership/updated: %v, want it added", back)
	}
	c.publish(dev+"twin/get", []byte(`{"event_id":"g1"}`))
	if g := c.next(dev+"twin/get/result", 1); strings.Contains(fmt.Sprint(g["twin"]), "temp") {
		t.Fatalf("the new device's twin: %v, want none of the old one's properties", g["twin"])
	}
	if tw, _ := r.store.Twins(); strings.Contains(string(tw[ns+"/thermo"]), `"temp"`) {
		t.Fatalf("stored twin of the new device: %s", tw[ns+"/thermo"])
	}
}

// TestDeviceMadeAgainWhileDown: made again while the engine was stopped, the new Device does
// not inherit the twin stored for the old one (the stored twin carries its Device's uid).
func TestDeviceMadeAgainWhileDown(t *testing.T) {
	r := newRig(t, nil, nil)
	r.model("m", "temp", "INT")
	r.apply(r.deviceWithUID("thermo", "uid-1", "m"))
	r.waitDevice("thermo")
	c := newClient(t, r.url, dev+"#")
	c.publish(dev+"twin/update", []byte(`{"event_id":"u1","twin":{"temp":{"actual":{"value":"19"}}}}`))
	c.next(dev+"twin/update/result", 1)
	if tw, _ := r.store.Twins(); !strings.Contains(string(tw[ns+"/thermo"]), `"uid":"uid-1"`) {
		t.Fatalf("stored twin without its Device's uid: %s", tw[ns+"/thermo"])
	}
	c.c.Disconnect(0)

	r.stopEngine()
	r.apply(r.deviceWithUID("thermo", "uid-2", "m"))
	r.restart()
	r.waitDevice("thermo")
	c = newClient(t, r.url, dev+"#")
	c.publish(dev+"twin/get", []byte(`{"event_id":"g1"}`))
	if g := c.next(dev+"twin/get/result", 1); strings.Contains(fmt.Sprint(g["twin"]), "19") {
		t.Fatalf("the device made again while the engine was down: %v, want the old actual value gone", g["twin"])
	}
}

// TestServedDevicesKeptAcrossRestart: at the device limit, the devices served before a restart
// are served after it, even those with nothing reported yet; before, the first by name were.
func TestServedDevicesKeptAcrossRestart(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxDevices = 1 }, nil)
	r.model("m", "temp", "INT")
	r.device("zeta", "m")
	r.waitDevice("zeta")
	r.device("alpha", "m") // refused: the limit is reached
	served := func() string {
		var s []string
		for _, name := range []string{"alpha", "zeta"} {
			if _, ok := r.engine.lookup(ns + "/" + name); ok {
				s = append(s, name)
			}
		}
		return strings.Join(s, ",")
	}
	deadline := time.Now().Add(waitFor)
	for served() != "zeta" || refusedCount(r) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("before the restart: served %q", served())
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.restart() // returns once the engine has loaded
	if got := served(); got != "zeta" {
		t.Fatalf("after the restart: served %q, want zeta as before", got)
	}
}

// refusedCount is how many devices were refused for the device limit.
func refusedCount(r *rig) float64 {
	var m dto.Metric
	r.engine.m.rejected.WithLabelValues("device_limit").Write(&m)
	return m.GetCounter().GetValue()
}
