package sim

import (
	"context"
	"testing"

	"github.com/tetherhub/tether/protocol"
)

func TestMemStoreFollowsTheEdgeStoreRules(t *testing.T) {
	m := NewMemStore()
	ctx := context.Background()
	apply := func(msgs ...protocol.Message) { m.Apply(ctx, msgs, func(error) {}) }
	k := func(n string) protocol.Key { return protocol.Key{Resource: "configmaps", Namespace: "ns", Name: n} }
	m.BeginSession(ctx, "c1")
	apply(&protocol.ResetBegin{Seq: 1}, &protocol.Upsert{Seq: 2, Rev: 5, Key: k("a")}, &protocol.ResetEnd{Seq: 3, Through: 5})
	if c, cur := m.Cursor(); c != "c1" || cur != 5 {
		t.Fatalf("cursor %s %d after reset", c, cur)
	}
	// An older version never wins; the cursor moves only on Progress.
	apply(&protocol.Upsert{Seq: 4, Rev: 9, Key: k("a")}, &protocol.Upsert{Seq: 5, Rev: 7, Key: k("a")})
	if m.Keys()["/configmaps/ns/a"] != 9 {
		t.Fatalf("keys = %v", m.Keys())
	}
	if _, cur := m.Cursor(); cur != 5 {
		t.Fatalf("cursor moved on an upsert: %d", cur)
	}
	apply(&protocol.Progress{Seq: 6, Through: 9})
	// A reset sweeps what it does not name.
	apply(&protocol.Upsert{Seq: 7, Rev: 10, Key: k("b")}, &protocol.ResetBegin{Seq: 8}, &protocol.Upsert{Seq: 9, Rev: 11, Key: k("b")}, &protocol.ResetEnd{Seq: 10, Through: 11})
	if keys := m.Keys(); len(keys) != 1 || keys["/configmaps/ns/b"] != 11 {
		t.Fatalf("after the reset: %v", keys)
	}
	// A half-done reset abandoned by a new session leaves the store as it was.
	apply(&protocol.ResetBegin{Seq: 11}, &protocol.Upsert{Seq: 12, Rev: 12, Key: k("c")})
	m.BeginSession(ctx, "c1")
	if keys := m.Keys(); len(keys) != 2 {
		t.Fatalf("after an abandoned reset: %v", keys)
	}
	// The outbox is ordered and trimmed by acks.
	m.Enqueue(protocol.Report{Kind: protocol.ReportUpload, Payload: []byte("1")})
	m.Enqueue(protocol.Report{Kind: protocol.ReportUpload, Payload: []byte("2")})
	rs, _ := m.ReadOutbox(0, 10, 1<<20)
	if len(rs) != 2 || rs[0].Seq != 1 || rs[1].Seq != 2 {
		t.Fatalf("outbox = %v", rs)
	}
	m.AckOutbox(ctx, 1)
	if rs, _ := m.ReadOutbox(0, 10, 1<<20); len(rs) != 1 || string(rs[0].Payload) != "2" {
		t.Fatalf("after ack = %v", rs)
	}
}
