package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	"github.com/tetherhub/tether/edgestore"
	"github.com/tetherhub/tether/resource"
	"github.com/tetherhub/tether/twin"
)

// The edge's copy of a Device shows the device as the edge knows it: the cloud does not send a
// Device's status back down to the node that reported it (view.Routed), so without this the
// metaserver would serve the status of the Device's last spec change. After a change to a twin
// or state is stored, and after the cloud's version of the Device replaces the edge's copy, the
// device is marked; the status writer then puts its twins and state into the stored Device
// with the cloud's own rules (twin.PutTwins, twin.PutState), so the edge's copy reads what the
// cloud's will once the reports arrive. Writes are grouped and bounded: at most one commit per
// Config.StatusEvery (the first after a quiet spell at once), of at most Config.StatusRate
// devices a second, the longest waiting first. Each write costs a Device's decoding, encoding
// and storing, and an event for the metaserver's watchers; unbounded, 1,000 devices reporting
// all the time took a quarter of the agent's throughput (bench twin). Bounded, a busy node's
// Devices show their twins a few seconds late; the reports themselves go up at once.

// statusOf is what a device's status is made from: the twin and state last stored. Twins are
// never changed in place (package twin copies on write), so holding one is safe.
type statusOf struct {
	tw    twin.Twin
	state twin.DeviceState
}

// markStatus notes that device id's stored Device should show tw and st. The caller holds the
// device's mu, so marks of one device arrive in the order its changes were stored.
func (e *Engine) markStatus(id string, tw twin.Twin, st twin.DeviceState) {
	e.smu.Lock()
	if _, queued := e.dirty[id]; !queued {
		e.order = append(e.order, id)
	}
	e.dirty[id] = statusOf{tw: tw, state: st}
	e.smu.Unlock()
	signal(e.swake)
}

// statusLoop writes marked devices' status, at most once per StatusEvery and StatusRate writes
// a second.
func (e *Engine) statusLoop(ctx context.Context) {
	batch := max(1, int(float64(e.cfg.StatusRate)*e.cfg.StatusEvery.Seconds()))
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.swake:
		}
		if wait := e.cfg.StatusEvery - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		e.writeStatus(ctx, batch)
	}
}

// writeStatus stores the status of marked devices, the longest waiting first, until limit of
// them are written or none is left: the bound is on writes, not on devices looked at, so the
// devices every start marks (whose stored status is mostly current already) do not hold back a
// device that changed. Devices left marked wake the loop again.
func (e *Engine) writeStatus(ctx context.Context, limit int) {
	var (
		taken  []string
		marked = map[string]statusOf{}
		writes []edgestore.StatusWrite
	)
	for len(writes) < limit {
		id, s, ok := e.nextStatus()
		if !ok {
			break
		}
		taken = append(taken, id)
		marked[id] = s
		ns, name := splitKey(id)
		sk := resource.StoreKey(resource.Key{Resource: resource.Devices, Namespace: ns, Name: name})
		rec, err := e.store.Get(sk)
		if err != nil || rec == nil {
			continue // gone; or unreadable, and then its next change marks it again
		}
		obj, changed, err := withStatus(rec.Object, twin.Reported(s.tw), s.state)
		if err != nil {
			e.sampled.Warn().Err(err).Str("device", id).Msg("cannot show the twin in the stored device")
			continue
		}
		if changed {
			writes = append(writes, edgestore.StatusWrite{StoreKey: sk, LocalRev: rec.LocalRev, Object: obj})
		}
	}
	e.smu.Lock()
	more := len(e.order) > 0
	e.smu.Unlock()
	if more {
		signal(e.swake)
	}
	if len(writes) == 0 {
		return
	}
	// Not cancelled with ctx: the store answers every operation, and a write left queued would
	// be committed after Run returned.
	n, err := e.store.SetStatus(context.WithoutCancel(ctx), writes)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		e.sampled.Warn().Err(err).Int("devices", len(writes)).Msg("cannot store the devices' status; retrying")
		e.smu.Lock()
		for _, id := range taken {
			if _, newer := e.dirty[id]; !newer {
				e.dirty[id] = marked[id]
				e.order = append(e.order, id)
			}
		}
		e.smu.Unlock()
		signal(e.swake)
		return
	}
	// A write not stored lost to a newer version of its Device, whose arrival marks it again.
	e.m.statusWrites.Add(float64(n))
}

// nextStatus takes the longest waiting marked device.
func (e *Engine) nextStatus() (string, statusOf, bool) {
	e.smu.Lock()
	defer e.smu.Unlock()
	if len(e.order) == 0 {
		return "", statusOf{}, false
	}
	id := e.order[0]
	e.order = e.order[1:]
	s := e.dirty[id]
	delete(e.dirty, id)
	return id, s, true
}

// withStatus returns the Device obj with twins and state put into its status, and whether that
// changed anything.
func withStatus(obj []byte, twins []twin.StatusTwin, st twin.DeviceState) ([]byte, bool, error) {
	d := json.NewDecoder(bytes.NewReader(obj))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, false, err
	}
	status, _ := m["status"].(map[string]any)
	if status == nil {
		status = map[string]any{}
	}
	changed := twin.PutTwins(status, twins)
	changed = twin.PutState(status, st) || changed
	if !changed {
		return nil, false, nil
	}
	m["status"] = status
	out, err := json.Marshal(m)
	return out, err == nil, err
}
