package cloudapi

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/tetherhub/tether/protocol"
	"github.com/tetherhub/tether/store/boltstore"
)

// TestFollowerThatStopsReadingIsCutOff: a client following the upload stream that stops
// reading is cut off after WriteTimeout, instead of holding its goroutine, and the store's
// buffer of events for it, for as long as it keeps the connection open.
func TestFollowerThatStopsReadingIsCutOff(t *testing.T) {
	b, err := boltstore.Open(boltstore.DefaultConfig(filepath.Join(t.TempDir(), "cloud.db")), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cfg := DefaultUploadsConfig()
	cfg.WriteTimeout = 300 * time.Millisecond
	reg := prometheus.NewRegistry()
	u := NewUploads(b, cfg, time.Now, zerolog.Nop(), reg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go u.Run(ctx)
	srv := httptest.NewServer(u)
	defer srv.Close()

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
