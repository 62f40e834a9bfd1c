package cloudhub

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// failingStatus refuses the first fail heartbeat writes, as a store swamped by thousands of
// connecting nodes does, and counts them all.
type failingStatus struct {
	mu    sync.Mutex
	fail  int
	calls int
}

func (f *failingStatus) SetReady(_ context.Context, _ string, ready bool, _ string, _ time.Time, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !ready {
		return nil
	}
	f.calls++
	if f.calls <= f.fail {
		return errors.New("the store refused the write: context deadline exceeded")
	}
	return nil
}

func (f *failingStatus) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// TestFailedHeartbeatIsRetriedSoon: a node whose Ready write failed is written again within
// seconds, not a StatusInterval later, and then left alone until the interval.
func TestFailedHeartbeatIsRetriedSoon(t *testing.T) {
	st := &failingStatus{fail: 2}
	r := newRig(t, rigOpts{status: st, cfg: func(c *Config) { c.StatusInterval = time.Minute }})
	r.hub.statusRetry = 400 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.hub.tick(ctx) // Run's ticker; the rig serves connections without Run
	r.put(nodeKey("n1"), nodeJSON("n1", ""))
	e := newEdge(t, "n1")
	e.connect(r)
	deadline := time.Now().Add(10 * time.Second)
	for st.count() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d heartbeat writes in 10 s after 2 failures; a failed write waits for the next StatusInterval (1 min)", st.count())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Ticks come every second; after the success nothing is written for a StatusInterval.
	time.Sleep(2500 * time.Millisecond)
	if n := st.count(); n != 3 {
		t.Fatalf("%d heartbeat writes; want 3 (two failed, one stored)", n)
	}
	var m dto.Metric
	r.hub.metrics.statusFailed.Write(&m)
	if n := m.GetCounter().GetValue(); n != 2 {
		t.Fatalf("tether_cloud_hub_status_write_failures_total %v, want 2", n)
	}
}

// TestRetryAfterBacksOff: each failure in a row doubles the wait, jittered, up to the limit.
func TestRetryAfterBacksOff(t *testing.T) {
	for failures, want := range map[int]time.Duration{1: 5 * time.Second, 2: 10 * time.Second, 3: 20 * time.Second} {
		for range 200 {
			if d := retryAfter(5*time.Second, failures, time.Minute); d < want/2 || d >= want*3/2 {
				t.Fatalf("failure %d: %s, want within [%s, %s)", failures, d, want/2, want*3/2)
			}
		}
	}
	if d := retryAfter(5*time.Second, 4, time.Minute); d < 20*time.Second || d > time.Minute {
		t.Fatalf("failure 4: %s, want within [20s, 1m]", d)
	}
	for _, failures := range []int{10, 100} {
		if d := retryAfter(5*time.Second, failures, time.Minute); d != time.Minute {
			t.Fatalf("failure %d: %s, want the limit", failures, d)
		}
	}
}

// TestReadyRewrittenWhenMarkedElsewhere: a Node marked not Ready while its node is connected
// here (another replica took this one for dead) is written Ready again at once, not at the next
// heartbeat write; a Node that says Ready, whoever wrote it, is left alone.
func TestReadyRewrittenWhenMarkedElsewhere(t *testing.T) {
	st := &failingStatus{}
	r := newRig(t, rigOpts{status: st, cfg: func(c *Config) { c.StatusInterval = time.Hour }})
	// The hub must have seen the Node before the edge connects: this fake status stores
	// nothing, so a Node without Ready arriving after the connect would be written (rightly).
	rev := r.put(nodeKey("n1"), nodeJSON("n1", ""))
	for deadline := time.Now().Add(5 * time.Second); r.hub.processed.Load() < rev; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the hub did not process the Node within 5 s")
		}
	}
	e := newEdge(t, "n1")
	e.connect(r)
	waitCount := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for st.count() < want {
			if time.Now().After(deadline) {
				t.Fatalf("%d Ready writes, want %d", st.count(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitCount(1) // the connect's own
	withReady := func(status, message string) string {
		n := nodeJSON("n1", "")
		return n[:len(n)-1] + `,"status":{"conditions":[{"type":"Ready","status":"` + status + `","message":"` + message + `"}]}}`
	}
	r.put(nodeKey("n1"), withReady("True", "the edge is connected to replica-b"))
	time.Sleep(300 * time.Millisecond)
	if n := st.count(); n != 1 {
		t.Fatalf("%d Ready writes after a Ready True by another replica; want it left alone", n)
	}
	r.put(nodeKey("n1"), withReady("Unknown", "the edge has not been connected for the grace period"))
	waitCount(2)
	time.Sleep(300 * time.Millisecond)
	if n := st.count(); n != 2 {
		t.Fatalf("%d Ready writes; want exactly one for the NotReady mark", n)
	}
}

// markStatus records when each NotReady mark was asked for and answers it with answer, given
// how many were asked so far, counting this one.
type markStatus struct {
	answer func(asks int) error
	mu     sync.Mutex
	asks   []time.Time
}

func (f *markStatus) SetReady(_ context.Context, _ string, ready bool, _ string, _ time.Time, _ time.Duration) error {
	if ready {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asks = append(f.asks, time.Now())
	return f.answer(len(f.asks))
}

func (f *markStatus) asked() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asks)
}

// stoppedHolder answers as a replica does whose node was held by a replica that stopped wait
// ago (less than a grace period): the first mark is a HolderStoppedError with what is left,
// the next ones mark.
func stoppedHolder(wait time.Duration) *markStatus {
	return &markStatus{answer: func(asks int) error {
		if asks == 1 {
			return &HolderStoppedError{Holder: "replica-a", Wait: wait}
		}
		return nil
	}}
}

// TestStoppedHolderWaitsWhatIsLeft: a node whose holder stopped less than a grace period ago
// is looked at again when that grace period ends (the HolderStoppedError's Wait), not a whole
// grace period later, as for a holder that runs.
func TestStoppedHolderWaitsWhatIsLeft(t *testing.T) {
	const wait = 100 * time.Millisecond
	st := stoppedHolder(wait)
	const grace = 1500 * time.Millisecond
	r := newRig(t, rigOpts{status: st, cfg: func(c *Config) { c.GracePeriod = grace }})
	r.put(nodeKey("n1"), nodeJSON("n1", ""))
	e := newEdge(t, "n1")
	e.connect(r)
	for deadline := time.Now().Add(5 * time.Second); !r.hub.Connected("n1"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no session within 5 s")
		}
	}
	e.ws.Close()
	var asks []time.Time
	for deadline := time.Now().Add(10 * time.Second); len(asks) < 2; asks = st.asked() {
		if time.Now().After(deadline) {
			t.Fatalf("%d NotReady marks asked for in 10 s, want 2", len(asks))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if gap := asks[1].Sub(asks[0]); gap < wait || gap > grace/2 {
		t.Fatalf("asked again %s after the HolderStoppedError, want about its %s (not the grace period, %s)", gap, wait, grace)
	}
}

// TestRecheckElsewhere: a node this replica has no session for is looked at once a grace
// period; told that another replica stopped (RecheckElsewhere), the hub looks at it again
// within a quarter of the grace period, not at the end of the current one, and then goes back
// to once a grace period.
func TestRecheckElsewhere(t *testing.T) {
	// Every mark answered as for a node another replica holds.
	st := &markStatus{answer: func(int) error { return ErrHeldElsewhere }}
	const grace = 4 * time.Second
	// SharedStore: the hub times nodes that connected through another replica (watchElsewhere).
	r := newRig(t, rigOpts{status: st, cfg: func(c *Config) { c.GracePeriod, c.SharedStore = grace, true }})
	rev := r.put(nodeKey("n1"), nodeJSON("n1", ""))
	for deadline := time.Now().Add(5 * time.Second); r.hub.processed.Load() < rev; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the hub did not process the Node within 5 s")
		}
	}
	time.Sleep(100 * time.Millisecond)
	told := time.Now()
	r.hub.RecheckElsewhere()
	var asks []time.Time
	for deadline := told.Add(grace / 2); len(asks) < 1; asks = st.asked() {
		if time.Now().After(deadline) {
			t.Fatalf("not looked at within %s of RecheckElsewhere (grace period %s)", grace/2, grace)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := asks[0].Sub(told); d > grace/4+200*time.Millisecond {
		t.Fatalf("looked at %s after RecheckElsewhere, want within a quarter of the grace period", d)
	}
	time.Sleep(grace / 2)
	if n := len(st.asked()); n != 1 {
		t.Fatalf("%d looks within half a grace period of the first, want 1 (held elsewhere: once a grace period)", n)
	}
}

// TestNotReadyWriteRetried: a NotReady write past the grace period that fails is tried again;
// before, nothing looked at the node again and it showed Ready for good.
func TestNotReadyWriteRetried(t *testing.T) {
	st := &answerNotReady{first: context.DeadlineExceeded} // a store timeout, then written
	goneAfterConnecting(t, st, nil)
	deadline := time.Now().Add(5 * time.Second)
	for st.count() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d NotReady writes in 5 s (grace 100 ms), the first failed: not tried again", st.count())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answerNotReady is a Status whose first NotReady write answers first and every later one
// rest.
type answerNotReady struct {
	first, rest error
	mu          sync.Mutex
	notReady    int
}

func (f *answerNotReady) SetReady(_ context.Context, _ string, ready bool, _ string, _ time.Time, _ time.Duration) error {
	if ready {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notReady++
	if f.notReady == 1 {
		return f.first
	}
	return f.rest
}

func (f *answerNotReady) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.notReady }

// TestNothingToMarkIsNoFailure: a NotReady mark that writes nothing (ErrNotMarked: the node
// shows not Ready already) is not a failure to retry. Before, it was retried like a store
// timeout, for good: 53,723 retries on one replica in a 10,000-node failover.
func TestNothingToMarkIsNoFailure(t *testing.T) {
	st := &answerNotReady{first: ErrNotMarked, rest: ErrNotMarked}
	goneAfterConnecting(t, st, func(h *Hub) { h.statusRetry = 10 * time.Millisecond })
	time.Sleep(time.Second) // the grace period ten times over
	if n := st.count(); n != 1 {
		t.Fatalf("%d NotReady marks in 1 s (grace 100 ms), want 1: nothing to mark was retried", n)
	}
}

// goneAfterConnecting starts a hub with a grace period of 100 ms whose node statuses go to st
// (tune, if not nil, changes the hub before it serves), connects node n1 and disconnects it.
func goneAfterConnecting(t *testing.T, st Status, tune func(*Hub)) {
	t.Helper()
	r := newRig(t, rigOpts{status: st, cfg: func(c *Config) { c.GracePeriod = 100 * time.Millisecond }})
	if tune != nil {
		tune(r.hub)
	}
	r.put(nodeKey("n1"), nodeJSON("n1", ""))
	e := newEdge(t, "n1")
	e.connect(r)
	e.syncTo(1, time.Second)
	for !r.hub.Connected("n1") {
		time.Sleep(10 * time.Millisecond)
	}
	e.ws.Close()
}
