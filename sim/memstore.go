package sim

import (
	"context"
	"sort"
	"sync"

	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

// MemStore is a simulated edge's store: the real edge store's rules (per-key versions, the cursor
// moving only on Progress and ResetEnd, resets sweeping what they did not name, an ordered outbox)
// kept in memory, so thousands of simulated edges fit in one process. It implements
// edgehub.Store. Safe for concurrent use.
type MemStore struct {
	mu        sync.Mutex // guards the fields below
	onApply   func(msgs []protocol.Message)
	cluster   string
	cursor    uint64
	pending   string // the current session's cluster
	objects   map[string]uint64
	resetting bool
	seen      map[string]bool
	outbox    []protocol.Report
	outSeq    uint64
	stale     int // changes older than what the store holds: out of order, which the protocol never sends
	sig       chan struct{}
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore {
	return &MemStore{objects: map[string]uint64{}, sig: make(chan struct{}, 1)}
}

// Stale is how many changes arrived older than the version the store already held.
func (m *MemStore) Stale() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stale
}

// Cursor implements edgehub.Store.
func (m *MemStore) Cursor() (string, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cluster, m.cursor
}

// BeginSession implements edgehub.Store.
func (m *MemStore) BeginSession(_ context.Context, cluster string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.resetting, m.seen, m.pending = false, nil, cluster
	return nil
}

// Apply implements edgehub.Store; the batch is "durable" at once.
func (m *MemStore) Apply(_ context.Context, msgs []protocol.Message, done func(error)) error {
	m.mu.Lock()
	for _, msg := range msgs {
		switch msg := msg.(type) {
		case *protocol.Upsert:
			k := resource.StoreKey(msg.Key)
			if old, ok := m.objects[k]; ok && old > msg.Rev && !m.resetting {
				m.stale++
				continue
			}
			m.objects[k] = msg.Rev
			if m.resetting {
				m.seen[k] = true
			}
		case *protocol.Delete:
			k := resource.StoreKey(msg.Key)
			if old, ok := m.objects[k]; ok && old > msg.Rev && !m.resetting {
				m.stale++
				continue
			}
			delete(m.objects, k)
		case *protocol.Progress:
			m.cursor = max(m.cursor, msg.Through)
		case *protocol.ResetBegin:
			m.resetting, m.seen = true, map[string]bool{}
		case *protocol.ResetEnd:
			if !m.resetting {
				continue
			}
			for k := range m.objects {
				if !m.seen[k] {
					delete(m.objects, k)
				}
			}
			m.resetting, m.seen = false, nil
			m.cluster, m.cursor = m.pending, msg.Through
		}
	}
	onApply := m.onApply
	m.mu.Unlock()
	if onApply != nil {
		onApply(msgs)
	}
	done(nil)
	return nil
}

// SetOnApply makes fn (nil: nothing) be called with every batch applied from now on, after it
// is applied, on the session's reader goroutine. It may be called while the edge runs.
func (m *MemStore) SetOnApply(fn func(msgs []protocol.Message)) {
	m.mu.Lock()
	m.onApply = fn
	m.mu.Unlock()
}

// Enqueue appends a report to the outbox.
func (m *MemStore) Enqueue(r protocol.Report) {
	m.mu.Lock()
	m.outSeq++
	r.Seq = m.outSeq
	m.outbox = append(m.outbox, r)
	m.mu.Unlock()
	select {
	case m.sig <- struct{}{}:
	default:
	}
}

// ReadOutbox implements edgehub.Store.
func (m *MemStore) ReadOutbox(after uint64, maxN, maxBytes int) ([]protocol.Report, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := sort.Search(len(m.outbox), func(i int) bool { return m.outbox[i].Seq > after })
	var out []protocol.Report
	size := 0
	for ; i < len(m.outbox) && len(out) < maxN; i++ {
		if len(out) > 0 && size+len(m.outbox[i].Payload) > maxBytes {
			break
		}
		out = append(out, m.outbox[i])
		size += len(m.outbox[i].Payload)
	}
	return out, nil
}

// AckOutbox implements edgehub.Store.
func (m *MemStore) AckOutbox(_ context.Context, seq uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := sort.Search(len(m.outbox), func(i int) bool { return m.outbox[i].Seq > seq })
	m.outbox = append(m.outbox[:0:0], m.outbox[i:]...)
	return nil
}

// OutboxSignal implements edgehub.Store.
func (m *MemStore) OutboxSignal() <-chan struct{} { return m.sig }

// Keys returns the stored keys and their versions.
func (m *MemStore) Keys() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]uint64, len(m.objects))
	for k, v := range m.objects {
		out[k] = v
	}
	return out
}

// OutboxLen returns how many reports wait.
func (m *MemStore) OutboxLen() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.outbox)
}
