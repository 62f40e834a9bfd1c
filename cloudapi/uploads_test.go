package cloudapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/store/boltstore"
)

// startUploads runs the uploads service, configured by cfg, over a real bbolt store (edit
// adjusts its config), behind a test server; all are stopped when the test ends.
func startUploads(t *testing.T, cfg UploadsConfig, edit func(*boltstore.Config)) (*Uploads, *httptest.Server, *boltstore.Store) {
	t.Helper()
	bcfg := boltstore.DefaultConfig(filepath.Join(t.TempDir(), "cloud.db"))
	if edit != nil {
		edit(&bcfg)
	}
	b, err := boltstore.Open(bcfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	u := NewUploads(b, cfg, time.Now, zerolog.Nop(), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	go u.Run(ctx)
	srv := httptest.NewServer(u)
	t.Cleanup(func() {
		srv.Close()
		cancel()
		b.Close()
	})
	return u, srv, b
}

// TestFollowerThatStopsReadingIsCutOff: a client following the upload stream that stops
// reading is cut off after WriteTimeout, instead of holding its goroutine, and the store's
// buffer of events for it, for as long as it keeps the connection open.
func TestFollowerThatStopsReadingIsCutOff(t *testing.T) {
	cfg := DefaultUploadsConfig()
	cfg.WriteTimeout = 300 * time.Millisecond
	u, srv, _ := startUploads(t, cfg, nil)
	ctx := context.Background()

	// More than the socket buffers hold, so the server's writes block.
	payload := []byte(strings.Repeat("x", 64<<10))
	for i := 1; i <= 300; i++ {
		if err := u.Apply(ctx, "edge-1", &protocol.Report{Kind: protocol.ReportUpload, Seq: uint64(i), Subject: "$hw/events/upload/a",
			Time: time.Now().UnixMilli(), Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s?after=0&follow=true HTTP/1.1\r\nHost: x\r\n\r\n", UploadsPath)
	status, err := bufio.NewReader(conn).ReadString('\n') // the status line, then read no more
	if err != nil || !strings.Contains(status, "200") {
		t.Fatalf("status %q, %v", status, err)
	}
	streams := func() float64 {
		var m dto.Metric
		u.followers.Write(&m)
		return m.GetGauge().GetValue()
	}
	deadline := time.Now().Add(10 * time.Second)
	for streams() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a follower that stopped reading still holds its stream after 10 s (write timeout %s)", cfg.WriteTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStreamFromBeforeTheHistory: a reader whose cursor the store's history no longer reaches
// gets every retained upload, in order, read one at a time from the store (the list that finds
// them keeps no values: up to Retain uploads of any size would not fit in memory), then the ones
// stored after the list.
func TestStreamFromBeforeTheHistory(t *testing.T) {
	u, srv, b := startUploads(t, DefaultUploadsConfig(), func(c *boltstore.Config) { c.History = 10 })
	ctx := context.Background()
	const n = 40
	applyUploads(t, u, n)
	if c, _ := b.Compacted(ctx); c < 2 {
		t.Fatalf("the history was not compacted (compacted %d); the test's premise is wrong", c)
	}
	resp, err := http.Get(srv.URL + UploadsPath + "?after=0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := uploadPayloads(resp.Body)
	if len(got) != n || got[0] != "p1" || got[n-1] != fmt.Sprintf("p%d", n) {
		t.Fatalf("got %d uploads %v, want p1 … p%d in order", len(got), got, n)
	}
}

// TestRetentionKeepsTheNewest: retention deletes the oldest uploads beyond Retain and records
// what it deleted, so a reader from before it gets 410 and a reader from the mark gets exactly
// the uploads kept, in order.
func TestRetentionKeepsTheNewest(t *testing.T) {
	cfg := DefaultUploadsConfig()
	cfg.Retain = 5
	u, srv, _ := startUploads(t, cfg, nil)
	ctx := context.Background()
	const n = 12
	applyUploads(t, u, n)
	if err := u.prune(ctx); err != nil {
		t.Fatal(err)
	}
	mark, err := u.prunedThrough(ctx)
	if err != nil || mark == 0 {
		t.Fatalf("retention recorded no mark (%d, %v)", mark, err)
	}
	resp, err := http.Get(srv.URL + UploadsPath + "?after=0")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone {
		t.Fatalf("a reader from before retention got %d, want 410", resp.StatusCode)
	}
	resp, err = http.Get(srv.URL + UploadsPath + "?after=" + strconv.FormatInt(mark, 10))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := uploadPayloads(resp.Body)
	if fmt.Sprint(got) != "[p8 p9 p10 p11 p12]" {
		t.Fatalf("kept %v, want the newest five, p8 … p12", got)
	}
}

// applyUploads stores uploads 1 … n from edge-1, with payloads "p1" … "pn".
func applyUploads(t *testing.T, u *Uploads, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		if err := u.Apply(context.Background(), "edge-1", &protocol.Report{Kind: protocol.ReportUpload, Seq: uint64(i), Subject: "$hw/events/upload/a",
			Time: time.Now().UnixMilli(), Payload: fmt.Appendf(nil, "p%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// uploadPayloads reads an uploads stream to its end and returns the payloads, in order.
func uploadPayloads(body io.Reader) []string {
	var got []string
	dec := json.NewDecoder(body)
	for {
		var up Upload
		if err := dec.Decode(&up); err != nil {
			return got
		}
		got = append(got, string(up.Payload))
	}
}
