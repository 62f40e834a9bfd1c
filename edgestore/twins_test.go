package edgestore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/resource"
)

func openTwinStore(t *testing.T, edit func(*Config)) *Store {
	t.Helper()
	cfg := DefaultConfig(filepath.Join(t.TempDir(), "edge.db"))
	if edit != nil {
		edit(&cfg)
	}
	s, err := Open(cfg, resource.New(), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil {
			t.Errorf("bbolt check: %v", err)
		}
		s.Close()
	})
	return s
}

func twinReport(id, payload string) Entry {
	return Entry{Kind: protocol.ReportTwin, Subject: id, Payload: []byte(payload)}
}

func outbox(t *testing.T, s *Store) []Entry {
	t.Helper()
	var out []Entry
	seqs, err := s.OutboxSeqs()
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range seqs {
		s.db.View(func(tx *bolt.Tx) error {
			e, err := decodeEntry(seq, tx.Bucket(bucketOutbox).Get(beUint(seq)))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
			return nil
		})
	}
	return out
}

func payloads(es []Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Subject + "=" + string(e.Payload)
	}
	return out
}

func TestWriteTwinStoresStateAndReportTogether(t *testing.T) {
	s := openTwinStore(t, nil)
	ctx := context.Background()
	if n, err := s.WriteTwin(ctx, "ns/a", []byte("state-a1"), twinReport("ns/a", "r1")); err != nil || n != 0 {
		t.Fatalf("WriteTwin: %d, %v", n, err)
	}
	twins, err := s.Twins()
	if err != nil || string(twins["ns/a"]) != "state-a1" || len(twins) != 1 {
		t.Fatalf("Twins: %q, %v", twins, err)
	}
	if got := payloads(outbox(t, s)); fmt.Sprint(got) != "[ns/a=r1]" {
		t.Fatalf("outbox %v", got)
	}
	if _, err := s.WriteTwin(ctx, "ns/a", nil); err != nil {
		t.Fatal(err)
	}
	if twins, _ := s.Twins(); len(twins) != 0 {
		t.Fatalf("state not deleted: %q", twins)
	}
	if _, err := s.WriteTwin(ctx, "", []byte("x")); !errors.Is(err, ErrEmptyID) {
		t.Fatalf("empty id: %v", err)
	}
}

func TestWriteTwinReplacesOnlyUnreadEntries(t *testing.T) {
	s := openTwinStore(t, nil)
	ctx := context.Background()
	write := func(id, p string) int {
		t.Helper()
		n, err := s.WriteTwin(ctx, id, []byte(p), twinReport(id, p))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	write("ns/a", "a1")
	write("ns/b", "b1")
	if n := write("ns/a", "a2"); n != 1 {
		t.Fatalf("replaced %d, want 1", n)
	}
	// Same place, newest value: a's report keeps the position of its first unsent change.
	if got := payloads(outbox(t, s)); fmt.Sprint(got) != "[ns/a=a2 ns/b=b1]" {
		t.Fatalf("outbox %v", got)
	}
	// Other kinds of the same subject are other entries.
	if _, err := s.WriteTwin(ctx, "ns/a", []byte("a2"), Entry{Kind: protocol.ReportDeviceState, Subject: "ns/a", Payload: []byte("online")}); err != nil {
		t.Fatal(err)
	}
	read, err := s.ReadOutbox(0, 1, 1<<20) // a's entry may now be on the wire
	if err != nil || len(read) != 1 || string(read[0].Payload) != "a2" {
		t.Fatalf("ReadOutbox: %v, %v", read, err)
	}
	if n := write("ns/a", "a3"); n != 0 {
		t.Fatalf("replaced a read entry")
	}
	if n := write("ns/b", "b2"); n != 1 {
		t.Fatalf("unread b not replaced")
	}
	if got := payloads(outbox(t, s)); fmt.Sprint(got) != "[ns/a=a2 ns/b=b2 ns/a=online ns/a=a3]" {
		t.Fatalf("outbox %v", got)
	}
	// Once trimmed, the next report is appended.
	seqs, _ := s.OutboxSeqs()
	if err := s.AckOutbox(ctx, seqs[len(seqs)-1]); err != nil {
		t.Fatal(err)
	}
	if n := write("ns/a", "a4"); n != 0 {
		t.Fatalf("replaced a trimmed entry")
	}
	if got := payloads(outbox(t, s)); fmt.Sprint(got) != "[ns/a=a4]" {
		t.Fatalf("outbox %v", got)
	}
	if n, _ := s.OutboxDepth(); n != 1 {
		t.Fatalf("depth %d", n)
	}
}

func TestWriteTwinOutboxFullWritesNothing(t *testing.T) {
	s := openTwinStore(t, func(c *Config) { c.OutboxLimit = 2 })
	ctx := context.Background()
	for _, id := range []string{"ns/a", "ns/b"} {
		if _, err := s.WriteTwin(ctx, id, []byte("1"), twinReport(id, "1")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.WriteTwin(ctx, "ns/c", []byte("1"), twinReport("ns/c", "1")); !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("third device: %v, want ErrOutboxFull", err)
	}
	if twins, _ := s.Twins(); twins["ns/c"] != nil {
		t.Fatal("state written although its report was refused")
	}
	// A replacement needs no room.
	if n, err := s.WriteTwin(ctx, "ns/a", []byte("2"), twinReport("ns/a", "2")); err != nil || n != 1 {
		t.Fatalf("replacement in a full outbox: %d, %v", n, err)
	}
}

// TestWriteTwinNoLostUpdate races writers replacing entries against a reader draining and
// acknowledging them, as the hub client does: whatever the interleaving, the last payload read
// for every device must be the last one written.
func TestWriteTwinNoLostUpdate(t *testing.T) {
	s := openTwinStore(t, nil)
	ctx := context.Background()
	const devices, writes = 8, 300
	var wg sync.WaitGroup
	for d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("ns/d%d", d)
			for i := 1; i <= writes; i++ {
				p := fmt.Sprint(i)
				if _, err := s.WriteTwin(ctx, id, []byte(p), twinReport(id, p)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	stop := make(chan struct{})
	last := map[string]string{}
	var after uint64
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		drain := func() int {
			es, err := s.ReadOutbox(after, 3, 1<<20)
			if err != nil {
				t.Error(err)
				return 0
			}
			for _, e := range es {
				last[e.Subject] = string(e.Payload)
				after = e.Seq
			}
			if len(es) > 0 {
				s.AckOutbox(ctx, after)
			}
			return len(es)
		}
		for {
			select {
			case <-stop:
				for drain() > 0 {
				}
				return
			default:
				drain()
				time.Sleep(time.Duration(after%3) * 100 * time.Microsecond)
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-readerDone
	for d := range devices {
		if id := fmt.Sprintf("ns/d%d", d); last[id] != fmt.Sprint(writes) {
			t.Errorf("%s: last payload read %q, want %q", id, last[id], fmt.Sprint(writes))
		}
	}
}

// fourSentReports opens a store whose outbox holds reports of four devices, all read for
// sending, and returns them.
func fourSentReports(t *testing.T) (*Store, []Entry) {
	t.Helper()
	s := openTwinStore(t, nil)
	for _, id := range []string{"ns/a", "ns/b", "ns/c", "ns/d"} {
		if _, err := s.WriteTwin(context.Background(), id, []byte("1"), twinReport(id, "1")); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.ReadOutbox(0, 10, 1<<20)
	if err != nil || len(all) != 4 {
		t.Fatalf("outbox %d entries, %v", len(all), err)
	}
	return s, all
}

// TestAckOutboxDeletesEveryAcknowledged: one ack for several waiting entries removes them all.
func TestAckOutboxDeletesEveryAcknowledged(t *testing.T) {
	s, all := fourSentReports(t)
	ctx := context.Background()
	if err := s.AckOutbox(ctx, all[3].Seq); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.OutboxDepth(); n != 0 {
		left, _ := s.ReadOutbox(0, 10, 1<<20)
		t.Fatalf("depth %d after acknowledging every entry; left %d", n, len(left))
	}
}

// TestAckForgetsReplacementHints: the writer's hints of which entry a device's next report may
// replace go with the acknowledged entries. Before, a device that left the node kept its hint
// until the agent restarted.
func TestAckForgetsReplacementHints(t *testing.T) {
	s, all := fourSentReports(t)
	if err := s.AckOutbox(context.Background(), all[2].Seq); err != nil {
		t.Fatal(err)
	}
	var hints int
	s.do(context.Background(), func(*bolt.Tx, *txState) error { hints = len(s.rep.latest); return nil })
	if hints != 1 {
		t.Fatalf("%d replacement hints with one entry left in the outbox", hints)
	}
}

// TestAckInTheTransactionOfAnAppend: the writer puts a device's new report and the cloud's ack
// of older ones in one transaction. The append loads the outbox leaf into memory, and there
// bbolt's cursor Next after a Delete skipped every other key: acknowledged reports stayed in the
// outbox for good (found as a report stuck at depth 1 in the twin benchmark).
func TestAckInTheTransactionOfAnAppend(t *testing.T) {
	s, all := fourSentReports(t)
	ctx := context.Background()
	err := s.do(ctx, func(tx *bolt.Tx, st *txState) error {
		if err := s.enqueue(tx, st, []Entry{twinReport("ns/e", "1")}); err != nil {
			return err
		}
		return s.ackOutbox(tx, st, all[3].Seq)
	})
	if err != nil {
		t.Fatal(err)
	}
	left := outbox(t, s)
	if len(left) != 1 || left[0].Subject != "ns/e" {
		var subjects []string
		for _, e := range left {
			subjects = append(subjects, fmt.Sprintf("%d %s", e.Seq, e.Subject))
		}
		t.Fatalf("outbox after acknowledging all but the new entry: %v", subjects)
	}
	if n, _ := s.OutboxDepth(); n != 1 {
		t.Fatalf("depth %d, want 1", n)
	}
}

// TestReportBeyondHubBounds: a report no hub would accept (a subject over
// protocol.MaxReportSubject bytes, a payload over protocol.MaxReportPayload) is refused by
// Enqueue and WriteTwin with nothing written, so it can never hold back the reports after it;
// one at the bounds is queued.
func TestReportBeyondHubBounds(t *testing.T) {
	s := openTwinStore(t, nil)
	ctx := context.Background()
	long := "$hw/events/upload/" + strings.Repeat("x", protocol.MaxReportSubject)
	cases := []struct {
		name string
		err  error
	}{
		{"enqueue, long subject", s.Enqueue(ctx, Entry{Kind: protocol.ReportUpload, Subject: long, Payload: []byte("v")})},
		{"enqueue, large payload", s.Enqueue(ctx, Entry{Kind: protocol.ReportUpload, Subject: "a", Payload: make([]byte, protocol.MaxReportPayload+1)})},
	}
	_, err := s.WriteTwin(ctx, "ns/dev", []byte(`{}`), twinReport("ns/dev", string(make([]byte, protocol.MaxReportPayload+1))))
	cases = append(cases, struct {
		name string
		err  error
	}{"write twin, large report", err})
	for _, c := range cases {
		if !errors.Is(c.err, protocol.ErrReportTooLarge) {
			t.Errorf("%s: %v, want ErrReportTooLarge", c.name, c.err)
		}
	}
	if n, _ := s.OutboxDepth(); n != 0 {
		t.Fatalf("%d entries queued, want none", n)
	}
	if twins, err := s.Twins(); err != nil || len(twins) != 0 {
		t.Fatalf("twins stored: %d, %v; want none", len(twins), err)
	}
	atBounds := Entry{Kind: protocol.ReportUpload, Subject: long[:protocol.MaxReportSubject], Payload: make([]byte, protocol.MaxReportPayload)}
	if err := s.Enqueue(ctx, atBounds); err != nil {
		t.Fatalf("a report at the bounds: %v", err)
	}
}

// TestDamagedOutboxEntrySkipped: an outbox entry that cannot be decoded is skipped and counted
// once, and the ones around it are still read and go when acknowledged. Before, ReadOutbox
// failed at every read, the hub client ended its session each time, and the cloud link stayed
// down for good.
func TestDamagedOutboxEntrySkipped(t *testing.T) {
	s := openTwinStore(t, nil)
	ctx := context.Background()
	for i := range 3 {
		if err := s.Enqueue(ctx, twinReport(fmt.Sprint("ns/d", i), "1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketOutbox).Put(beUint(2), []byte{}) }); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		got, err := s.ReadOutbox(0, 10, 1<<20)
		if err != nil {
			t.Fatalf("ReadOutbox with a damaged entry: %v", err)
		}
		if len(got) != 2 || got[0].Seq != 1 || got[1].Seq != 3 {
			t.Fatalf("read %v, want seqs 1 and 3", got)
		}
	}
	var m dto.Metric
	s.metrics.rejected.WithLabelValues("damaged-outbox-entry").Write(&m)
	if n := m.GetCounter().GetValue(); n != 1 {
		t.Fatalf("damaged entries counted %v times, want once", n)
	}
	if err := s.AckOutbox(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.OutboxDepth(); n != 0 {
		t.Fatalf("outbox depth %d after the entries around the damaged one were acknowledged", n)
	}
}
