package broker

import (
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// offlineHeld bounds the bytes of QoS 1/2 messages mochi keeps for disconnected sessions.
// mochi bounds them per session by count only (MaxInflight), so without this the defaults
// would let 10,000 sessions hold 1,024 messages of 256 KiB each.
//
// A session's figure is recounted from its stored messages each time one more is stored for
// it, so it never drifts; it is forgotten when the client comes back (mochi then sends them
// and they drain) or the session expires.
type offlineHeld struct {
	mu      sync.Mutex
	held    map[string]int64 // by client id: payload bytes stored for the disconnected session
	total   int64
	dropped atomic.Int64 // messages dropped for these limits
}

// store is called after mochi stored pk for the disconnected client cl. If cl's messages, or
// all disconnected sessions' together, are then over their limits, pk is dropped (and, while
// still over, any message mochi put back as pending after an earlier drop: mochi may store pk
// again after this returns, and the next call drops it).
func (o *offlineHeld) store(srv *mqtt.Server, cl *mqtt.Client, pk packets.Packet, perSession, all int64) {
	dropped := 0
	stored := cl.State.Inflight.GetAll(false)
	var held int64
	for _, p := range stored {
		held += int64(len(p.Payload))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.held == nil {
		o.held = map[string]int64{}
	}
	prev := o.held[cl.ID]
	room := min(perSession, all-(o.total-prev))
	drop := func(id uint16, size int64) {
		if cl.State.Inflight.Delete(id) {
			atomic.AddInt64(&srv.Info.Inflight, -1)
			held -= size
			dropped++
		}
	}
	if held > room {
		drop(pk.PacketID, int64(len(pk.Payload)))
		// mochi takes one unit of the client's send quota after this hook; give it back for a
		// message that is not kept (mochi resets the quota when the client returns anyway).
		cl.State.Inflight.IncreaseSendQuota()
	}
	for _, p := range stored {
		if held <= room {
			break
		}
		if p.Expiry < 0 && p.PacketID != pk.PacketID {
			drop(p.PacketID, int64(len(p.Payload)))
		}
	}
	o.held[cl.ID] = held
	o.total += held - prev
	o.dropped.Add(int64(dropped))
}

// forget drops a session's figure: its client is back, or the session is gone.
func (o *offlineHeld) forget(id string) {
	o.mu.Lock()
	o.total -= o.held[id]
	delete(o.held, id)
	o.mu.Unlock()
}

// bytes returns the payload bytes held for disconnected sessions.
func (o *offlineHeld) bytes() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.total
}
