package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/syncbuf"
	"github.com/tetherhub/tether/sim/mapper"
	"github.com/tetherhub/tether/twin"
)

// Device twins end to end: real tether-cloud and tether-edge processes, real MQTT clients (the
// simulated mapper on paho, mosquitto_pub and mosquitto_sub), Device.status read from the cloud
// API.

func twinModelObj(name string) map[string]any {
	return map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel", "metadata": meta(name),
		"spec": map[string]any{"protocol": "modbus", "properties": []any{
			map[string]any{"name": "temperature", "type": "INT", "accessMode": "ReadWrite", "minimum": "0", "maximum": "100", "unit": "celsius"},
			map[string]any{"name": "humidity", "type": "FLOAT", "accessMode": "ReadOnly"},
			map[string]any{"name": "mode", "type": "STRING", "accessMode": "ReadWrite"},
			map[string]any{"name": "power", "type": "BOOLEAN", "accessMode": "ReadWrite"},
		}}}
}

// twinDeviceObj is a v1beta1 Device with desired values (property, value, ...).
func twinDeviceObj(name, node, model string, desired ...string) map[string]any {
	props := []any{}
	for i := 0; i < len(desired); i += 2 {
		props = append(props, map[string]any{"name": desired[i], "reportCycle": 1000, "reportToCloud": true,
			"desired": map[string]any{"value": desired[i+1]}})
	}
	return map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "metadata": meta(name),
		"spec": map[string]any{"nodeName": node, "deviceModelRef": map[string]any{"name": model},
			"protocol": map[string]any{"protocolName": "modbus"}, "properties": props}}
}

// deviceStatus is what the tests read of Device.status.
type deviceStatus struct {
	Twins          []twin.StatusTwin `json:"twins"`
	State          string            `json:"state"`
	LastOnlineTime string            `json:"lastOnlineTime"`
}

func (s deviceStatus) reported(prop string) (string, bool) {
	for _, st := range s.Twins {
		if st.PropertyName == prop && st.Reported != nil {
			return st.Reported.Value, true
		}
	}
	return "", false
}

func (s deviceStatus) observedDesired(prop string) string {
	for _, st := range s.Twins {
		if st.PropertyName == prop && st.ObservedDesired != nil {
			return st.ObservedDesired.Value
		}
	}
	return ""
}

// apiServer is the cloud's API or an edge's metaserver.
type apiServer interface{ url(path string) string }

func getDeviceStatus(t *testing.T, c apiServer, name string) deviceStatus {
	t.Helper()
	code, body := do(t, http.MethodGet, c.url(paths["devices"]+"/"+name), "", nil)
	if code != http.StatusOK {
		t.Fatalf("GET device %s: %d %s", name, code, body)
	}
	var obj struct {
		Status deviceStatus `json:"status"`
	}
	if err := json.Unmarshal(body, &obj); err != nil {
		t.Fatal(err)
	}
	return obj.Status
}

// waitReported waits until the cloud (or an edge) shows exactly want (property → reported
// value, "" for none) for device name.
func waitReported(t *testing.T, c apiServer, name string, want map[string]string) deviceStatus {
	t.Helper()
	var st deviceStatus
	deadline := time.Now().Add(30 * time.Second)
	for {
		st = getDeviceStatus(t, c, name)
		ok := true
		for p, v := range want {
			got, has := st.reported(p)
			if (v == "" && has) || (v != "" && got != v) {
				ok = false
			}
		}
		if ok {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s: status %s, want reported %v", name, mustJSON(st), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mqttURL(e *edge) string { return "tcp://" + e.mqtt }

func newMapper(t *testing.T, e *edge, edit func(*mapper.Config), devices ...string) *mapper.Mapper {
	t.Helper()
	cfg := mapper.DefaultConfig(mqttURL(e), devices...)
	cfg.Node = e.name
	if edit != nil {
		edit(&cfg)
	}
	var m *mapper.Mapper
	waitFor(t, 20*time.Second, "mapper connects to "+e.name, func() bool {
		var err error
		m, err = mapper.Connect(context.Background(), cfg)
		return err == nil
	})
	t.Cleanup(m.Close)
	return m
}

// mosquittoSub starts mosquitto_sub on topic for count messages and returns once the edge's
// broker holds its subscription; wait returns the messages once the broker has dropped it again.
func mosquittoSub(t *testing.T, e *edge, topic string, count int) (wait func() []string) {
	t.Helper()
	subs := func() float64 { return metric(t, e.url("/metrics"), "tether_edge_mqtt_subscriptions") }
	before := subs()
	host, port, _ := net.SplitHostPort(e.mqtt)
	cmd := exec.Command("mosquitto_sub", "-h", host, "-p", port, "-q", "1", "-t", topic, "-C", strconv.Itoa(count), "-W", "20", "-v")
	var out bytes.Buffer
	cmd.Stdout = &out
	stderr := &syncbuf.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	// Nothing published before the broker holds the subscription reaches it.
	waitFor(t, 10*time.Second, "subscription registered", func() bool { return subs() >= before+1 })
	return func() []string {
		t.Helper()
		if err := <-done; err != nil {
			t.Fatalf("mosquitto_sub %s: %v: %s", topic, err, stderr.String())
		}
		// The broker drops the subscription after the client has gone; the next mosquittoSub
		// counts from after that, or the removal and its own subscription cancel out.
		waitFor(t, 10*time.Second, "the finished subscriber's subscription dropped", func() bool { return subs() <= before })
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			// -v prints "topic payload".
			_, payload, _ := strings.Cut(l, " ")
			lines = append(lines, payload)
		}
		return lines
	}
}

func mosquittoPub(t *testing.T, e *edge, topic, payload string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(e.mqtt)
	out, err := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-t", topic, "-m", payload).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub %s: %v: %s", topic, err, out)
	}
}

// TestTwinRoundTrip: desired set through the cloud API → delta at a mapper → the mapper reports
// actual → Device.status in the cloud; state; membership; and mosquitto clients on the raw
// topics, including bad input that must change nothing.
func TestTwinRoundTrip(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-1")
	mustDo(t, http.MethodPost, c.url(paths["devicemodels"]), twinModelObj("thermo-model"))
	mustDo(t, http.MethodPost, c.url(paths["devices"]), twinDeviceObj("thermo", "edge-1", "thermo-model", "temperature", "22"))
	waitNames(t, e.url(paths["devices"]), q("thermo")...)

	var mu sync.Mutex
	var added, removed []string
	deltas := make(chan mapper.Delta, 64)
	m := newMapper(t, e, func(cfg *mapper.Config) {
		cfg.FollowDesired = true
		cfg.OnDelta = func(d mapper.Delta) {
			select {
			case deltas <- d:
			default:
			}
		}
		cfg.OnMembership = func(u twin.MembershipUpdatedMsg) {
			mu.Lock()
			defer mu.Unlock()
			for _, d := range u.Added {
				added = append(added, d.ID)
			}
			for _, d := range u.Removed {
				removed = append(removed, d.ID)
			}
		}
	}, ns+"/thermo", ns+"/second")
	ctx := context.Background()
	// The mapper connected after the first delta went out: it asks for the twin, as mappers do
	// at start, and the answer holds the expected value; its next report makes the delta again.
	g, err := m.Get(ctx, ns+"/thermo")
	if err != nil {
		t.Fatal(err)
	}
	if e := g.Twin["temperature"]; e == nil || e.Expected == nil || *e.Expected.Value != "22" {
		t.Fatalf("twin/get: %s", mustJSON(g.Twin))
	}
	if _, err := m.Report(ctx, ns+"/thermo", map[string]string{"temperature": "19", "humidity": "40.5"}); err != nil {
		t.Fatal(err)
	}
	st := waitReported(t, c, "thermo", map[string]string{"temperature": "22", "humidity": "40.5"})
	if st.observedDesired("temperature") != "22" {
		t.Fatalf("observedDesired: %s", mustJSON(st))
	}

	// Desired changed in the cloud: the delta reaches the mapper, which follows it.
	mustDo(t, http.MethodPatch, c.url(paths["devices"]+"/thermo"),
		`{"spec":{"properties":[{"name":"temperature","reportCycle":1000,"reportToCloud":true,"desired":{"value":"25"}}]}}`)
	waitFor(t, 20*time.Second, "delta 25 at the mapper", func() bool {
		for {
			select {
			case d := <-deltas:
				if d.Values["temperature"] == "25" {
					return true
				}
			default:
				return false
			}
		}
	})
	st = waitReported(t, c, "thermo", map[string]string{"temperature": "25"})
	if st.observedDesired("temperature") != "25" {
		t.Fatalf("observedDesired after the change: %s", mustJSON(st))
	}

	// State.
	res, err := m.SetState(ctx, ns+"/thermo", "online")
	if err != nil || res.Device.State != "online" || res.Device.LastOnlineTime == "" {
		t.Fatalf("state result: %+v, %v", res, err)
	}
	waitFor(t, 20*time.Second, "status.state online", func() bool {
		s := getDeviceStatus(t, c, "thermo")
		return s.State == "online" && s.LastOnlineTime == res.Device.LastOnlineTime
	})
	// A status update through the edge at the version the edge serves (as client-go's
	// UpdateStatus sends it) goes through, although the reports above moved the Device's version
	// in the cloud without sending it down; before, it was a 409 on every retry.
	_, raw := do(t, http.MethodGet, e.url(paths["devices"]+"/thermo"), "", nil)
	var edgeCopy map[string]any
	if err := json.Unmarshal(raw, &edgeCopy); err != nil {
		t.Fatal(err)
	}
	if code, body := do(t, http.MethodPut, e.url(paths["devices"]+"/thermo/status"), "application/json", mustJSON(edgeCopy)); code != http.StatusOK {
		t.Fatalf("status update through the edge at its version: %d %s", code, body)
	}
	// One replica needs no report fence, and writes none.
	if _, body := do(t, http.MethodGet, c.url(paths["devices"]+"/thermo"), "", nil); strings.Contains(string(body), "report-epoch") {
		t.Fatalf("a cloud on its embedded store wrote a report epoch: %s", body)
	}

	// mosquitto on the raw topics: a good update, bad ones, a null that deletes.
	results := mosquittoSub(t, e, "$hw/events/device/"+ns+"/thermo/twin/update/result", 7)
	upd := "$hw/events/device/" + ns + "/thermo/twin/update"
	mosquittoPub(t, e, upd, `{"event_id":"m1","timestamp":1,"twin":{"mode":{"actual":{"value":"eco"}}}}`)
	mosquittoPub(t, e, upd, `{"event_id":"m2","twin":{"temperature":{"actual":{"value":"warm"}}}}`)
	mosquittoPub(t, e, upd, `not json`)
	mosquittoPub(t, e, upd, `{"event_id":"m4","twin":{"power":{"actual":{"value":true}}}}`)
	mosquittoPub(t, e, upd, `{"event_id":"m5","twin":{"bad key!":{"actual":{"value":"1"}}}}`)
	mosquittoPub(t, e, upd, `{"event_id":"m6","twin":{"mode":{"actual":{"value":"`+strings.Repeat("x", 513)+`"}}}}`)
	mosquittoPub(t, e, upd, `{"event_id":"m7","twin":{"humidity":null}}`)
	got := results()
	wantCodes := []int{0, 400, 400, 400, 400, 400, 0}
	for i, line := range got {
		var r twin.ErrorMsg
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("result %d: %v: %s", i, err, line)
		}
		if r.Code != wantCodes[i] {
			t.Errorf("result %d: code %d, want %d: %s", i, r.Code, wantCodes[i], line)
		}
	}
	// 404 for a device the node does not have.
	ghost := mosquittoSub(t, e, "$hw/events/device/"+ns+"/ghost/twin/update/result", 1)
	mosquittoPub(t, e, "$hw/events/device/"+ns+"/ghost/twin/update", `{"event_id":"g","twin":{"mode":{"actual":{"value":"x"}}}}`)
	if r := ghost(); !strings.Contains(r[0], `"code":404`) {
		t.Fatalf("unknown device: %s", r[0])
	}
	// The good updates arrived; the bad ones changed nothing; the null deleted humidity.
	waitReported(t, c, "thermo", map[string]string{"mode": "eco", "temperature": "25", "humidity": "", "power": ""})

	// Membership: a second device is added, then the first removed.
	mustDo(t, http.MethodPost, c.url(paths["devices"]), twinDeviceObj("second", "edge-1", "thermo-model"))
	waitFor(t, 20*time.Second, "membership added", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(fmt.Sprint(added), ns+"/second")
	})
	mg, err := m.Membership(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range mg.Devices {
		ids = append(ids, d.ID)
	}
	if fmt.Sprint(ids) != fmt.Sprint([]string{ns + "/second", ns + "/thermo"}) {
		t.Fatalf("membership/get: %v", ids)
	}
	mustDo(t, http.MethodDelete, c.url(paths["devices"]+"/thermo"), nil)
	waitFor(t, 20*time.Second, "membership removed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(fmt.Sprint(removed), ns+"/thermo")
	})
	var re *mapper.ResultError
	if _, err := m.Report(ctx, ns+"/thermo", map[string]string{"mode": "x"}); !errors.As(err, &re) || re.Code != 404 {
		t.Fatalf("report for a removed device: %v", err)
	}
	e.stop()
	c.stop()
}

// uploadLine is one line of the upload stream.
type uploadLine struct {
	Cursor  string `json:"cursor"`
	Node    string `json:"node"`
	Topic   string `json:"topic"`
	Seq     uint64 `json:"seq"`
	Time    string `json:"time"`
	Payload []byte `json:"payload"`
}

func readUploads(t *testing.T, c *cloud, query string) []uploadLine {
	t.Helper()
	code, body := do(t, http.MethodGet, c.url("/tether/v1/uploads"+query), "", nil)
	if code != http.StatusOK {
		t.Fatalf("uploads%s: %d %s", query, code, body)
	}
	var out []uploadLine
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l uploadLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("upload line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// TestTwinOutageAndKill: with the cloud stopped, devices keep reporting and get results and
// deltas; the agent is killed (-9) while reports and uploads are in flight and restarted; when
// the cloud returns, Device.status holds exactly the latest acknowledged value of every
// property, and every acknowledged upload arrived once and in order.
func TestTwinOutageAndKill(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-k")
	const devices = 4
	mustDo(t, http.MethodPost, c.url(paths["devicemodels"]), twinModelObj("m"))
	var ids []string
	for i := range devices {
		name := fmt.Sprint("dev", i)
		mustDo(t, http.MethodPost, c.url(paths["devices"]), twinDeviceObj(name, "edge-k", "m", "temperature", "50"))
		ids = append(ids, ns+"/"+name)
	}
	waitNames(t, e.url(paths["devices"]), q("dev0", "dev1", "dev2", "dev3")...)

	c.stop()

	// Reporters: one mapper per device, reporting temperature and humidity as fast as results
	// come. lastAcked is what a success result confirmed; inflight what was sent and not answered.
	type ack struct{ acked, inflight int }
	var mu sync.Mutex
	state := map[string]*ack{}
	deltaCount := 0
	var uploadsAcked [2][]int
	uploadInflight := [2]int{-1, -1}
	topics := [2]string{"$hw/events/upload/" + ns + "/dev0", "SYS/dis/upload_records"}
	run := func(ctx context.Context, start int) *sync.WaitGroup {
		var wg sync.WaitGroup
		for _, id := range ids {
			m := newMapper(t, e, func(cfg *mapper.Config) {
				cfg.Timeout = 5 * time.Second
				cfg.OnDelta = func(d mapper.Delta) {
					mu.Lock()
					deltaCount++
					mu.Unlock()
				}
			}, id)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := start; ctx.Err() == nil; i++ {
					mu.Lock()
					if state[id] == nil {
						state[id] = &ack{}
					}
					state[id].inflight = i
					mu.Unlock()
					_, err := m.Report(context.Background(), id, map[string]string{"temperature": fmt.Sprint(i % 100), "humidity": fmt.Sprint(i, ".5")})
					if err != nil {
						return // the agent is gone
					}
					mu.Lock()
					state[id].acked = i
					mu.Unlock()
				}
			}()
		}
		for k := range topics {
			m := newMapper(t, e, func(cfg *mapper.Config) { cfg.Timeout = 5 * time.Second })
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := start; ctx.Err() == nil; i++ {
					mu.Lock()
					uploadInflight[k] = i
					mu.Unlock()
					if err := m.Upload(context.Background(), topics[k], fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
						return
					}
					mu.Lock()
					uploadsAcked[k] = append(uploadsAcked[k], i)
					mu.Unlock()
				}
			}()
		}
		return &wg
	}

	// Phase 1: cloud down, devices report; results and deltas keep coming.
	ctx1, stop1 := context.WithCancel(context.Background())
	wg := run(ctx1, 1)
	waitFor(t, 30*time.Second, "reports and deltas while the cloud is down", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if state[id] == nil || state[id].acked < 30 {
				return false
			}
		}
		return deltaCount > 10 && len(uploadsAcked[0]) > 20 && len(uploadsAcked[1]) > 20
	})
	// Phase 2: kill -9 while reports and uploads are in flight.
	e.kill()
	stop1()
	wg.Wait()
	mu.Lock()
	killed := map[string]ack{}
	for id, a := range state {
		killed[id] = *a
	}
	upKilled := [2][]int{append([]int(nil), uploadsAcked[0]...), append([]int(nil), uploadsAcked[1]...)}
	upInflight := uploadInflight
	deltas := deltaCount
	mu.Unlock()
	if httpOK(e.url("/healthz")) {
		t.Fatal("the agent still answers after kill -9")
	}

	t.Logf("killed with reports %v, uploads acknowledged %d+%d (in flight %v), deltas %d",
		killed, len(upKilled[0]), len(upKilled[1]), upInflight, deltas)

	// Phase 3: the agent restarts, cloud still down: every acknowledged value survived.
	e.restart(t)
	check := newMapper(t, e, nil, ids...)
	for _, id := range ids {
		g, err := check.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		k := killed[id]
		got, _ := strconv.ParseFloat(*g.Twin["humidity"].Actual.Value, 64)
		if int(got) != k.acked && int(got) != k.inflight {
			t.Fatalf("%s after kill -9: humidity %v, acknowledged %d (in flight %d)", id, got, k.acked, k.inflight)
		}
	}
	// More reports and uploads after the restart, still offline; then the cloud returns.
	ctx2, stop2 := context.WithCancel(context.Background())
	wg = run(ctx2, 100_000)
	waitFor(t, 30*time.Second, "reports after the restart", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if state[id].acked < 100_010 {
				return false
			}
		}
		return len(uploadsAcked[0]) > len(upKilled[0])+10 && len(uploadsAcked[1]) > len(upKilled[1])+10
	})
	stop2()
	wg.Wait()
	if n := metric(t, e.url("/metrics"), "tether_edge_twin_outbox_coalesced_total"); n == 0 {
		t.Fatal("no report was coalesced while the cloud was down")
	}
	mu.Lock()
	final := map[string]int{}
	for id, a := range state {
		final[id] = a.acked
	}
	acked := uploadsAcked
	mu.Unlock()
	// The edge's own API shows the latest values while the cloud is away, and then the cloud does.
	showsFinal := func(srv apiServer) {
		t.Helper()
		for _, id := range ids {
			name := strings.TrimPrefix(id, ns+"/")
			st := waitReported(t, srv, name, map[string]string{"temperature": fmt.Sprint(final[id] % 100), "humidity": fmt.Sprint(final[id], ".5")})
			if st.observedDesired("temperature") != "50" || st.State != "" {
				t.Fatalf("%s: status %s", id, mustJSON(st))
			}
		}
	}
	showsFinal(e)
	c.start(t)
	showsFinal(c)

	// Uploads: every acknowledged one exactly once, each publisher's in order; the one in
	// flight at the kill at most once.
	var lines []uploadLine
	waitFor(t, 30*time.Second, "every acknowledged upload in the cloud", func() bool {
		lines = readUploads(t, c, "?after=0")
		seen := map[string]bool{}
		for _, l := range lines {
			seen[l.Topic+string(l.Payload)] = true
		}
		for k := range topics {
			for _, n := range acked[k] {
				if !seen[topics[k]+fmt.Sprintf(`{"n":%d}`, n)] {
					return false
				}
			}
		}
		return true
	})
	t.Logf("%d uploads in the cloud; %d and %d acknowledged", len(lines), len(acked[0]), len(acked[1]))
	for k, topic := range topics {
		var got []int
		for _, l := range lines {
			if l.Topic != topic {
				continue
			}
			var p struct{ N int }
			json.Unmarshal(l.Payload, &p)
			got = append(got, p.N)
			if l.Node != "edge-k" {
				t.Fatalf("upload from node %q", l.Node)
			}
		}
		// Strictly increasing: in order, none twice. Every acknowledged upload is there; the only
		// other one allowed is the one in flight at the kill (stored before its PUBACK was lost).
		ok := map[int]bool{upInflight[k]: true}
		for _, n := range acked[k] {
			ok[n] = true
		}
		for i, n := range got {
			if i > 0 && n <= got[i-1] {
				t.Fatalf("%s: upload %d after %d", topic, n, got[i-1])
			}
			if !ok[n] {
				t.Fatalf("%s: upload %d was never acknowledged nor in flight at the kill", topic, n)
			}
		}
		if len(got) < len(acked[k]) || len(got) > len(acked[k])+1 {
			t.Fatalf("%s: %d uploads in the cloud, %d acknowledged", topic, len(got), len(acked[k]))
		}
	}
	// Cursors only grow, and resuming from one gives exactly what follows it.
	for i := 1; i < len(lines); i++ {
		a, _ := strconv.ParseInt(lines[i-1].Cursor, 10, 64)
		b, _ := strconv.ParseInt(lines[i].Cursor, 10, 64)
		if b <= a {
			t.Fatalf("cursor %d after %d", b, a)
		}
	}
	mid := len(lines) / 2
	rest := readUploads(t, c, "?after="+lines[mid].Cursor)
	if len(rest) != len(lines)-mid-1 || rest[0].Cursor != lines[mid+1].Cursor {
		t.Fatalf("resume after %s: %d lines, want %d", lines[mid].Cursor, len(rest), len(lines)-mid-1)
	}
	e.stop()
	c.stop()
}

// TestUploadStreamFollow: a follower sees uploads as they are stored and resumes from its cursor
// without loss or repetition.
func TestUploadStreamFollow(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-u")
	m := newMapper(t, e, nil)
	ctx := context.Background()
	for i := range 5 {
		if err := m.Upload(ctx, "$hw/events/upload/a", fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	reqCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, c.url("/tether/v1/uploads?after=0&follow=true"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("content type %q", ct)
	}
	lines := make(chan uploadLine, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var l uploadLine
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				lines <- l
			}
		}
		close(lines)
	}()
	next := func() uploadLine {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			return l
		case <-time.After(20 * time.Second):
			t.Fatal("no upload on the stream")
		}
		return uploadLine{}
	}
	var last uploadLine
	for i := range 5 {
		if last = next(); string(last.Payload) != fmt.Sprint(i) || last.Topic != "$hw/events/upload/a" || last.Node != "edge-u" {
			t.Fatalf("line %d: %+v", i, last)
		}
	}
	// Live: published after the stream started.
	if err := m.Upload(ctx, "SYS/dis/upload_records", []byte("live")); err != nil {
		t.Fatal(err)
	}
	if l := next(); string(l.Payload) != "live" || l.Topic != "SYS/dis/upload_records" {
		t.Fatalf("live line: %+v", l)
	}
	cancel()
	// Resume from the fifth: only "live" follows.
	got := readUploads(t, c, "?after="+last.Cursor)
	if len(got) != 1 || string(got[0].Payload) != "live" {
		t.Fatalf("resume: %+v", got)
	}
	if code, _ := do(t, http.MethodGet, c.url("/tether/v1/uploads?after=abc"), "", nil); code != http.StatusBadRequest {
		t.Fatalf("bad cursor: %d", code)
	}
	if code, _ := do(t, http.MethodGet, c.url("/tether/v1/uploads?after=999999999"), "", nil); code != http.StatusGone {
		t.Fatalf("cursor ahead of the store: %d", code)
	}
	e.stop()
	c.stop()
}

// TestUploadBeyondBoundsRefused: an upload the cloud would never accept (its topic longer than
// a report's subject may be) is answered and refused by the agent, not queued, where it would
// fail its frame at every resend and hold back every report after it: real mosquitto_pub
// clients (MQTT 3.1.1 and 5) publish it, and an upload sent after it still reaches the cloud.
func TestUploadBeyondBoundsRefused(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-b")
	m := newMapper(t, e, nil)
	host, port, _ := net.SplitHostPort(e.mqtt)
	long := "$hw/events/upload/" + strings.Repeat("x", 600)
	for _, version := range []string{"mqttv311", "mqttv5"} {
		out, err := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-V", version, "-q", "1", "-t", long, "-m", "big").CombinedOutput()
		t.Logf("mosquitto_pub -V %s: %v %q", version, err, strings.TrimSpace(string(out)))
		switch {
		case version == "mqttv311" && err != nil:
			t.Fatalf("MQTT 3.1.1: mosquitto_pub %v: %s (want its PUBACK)", err, out)
		case version == "mqttv5" && !strings.Contains(string(out), "Implementation specific error"):
			t.Fatalf("MQTT 5: mosquitto_pub said %q, want PUBACK 0x83 reported", out)
		}
	}
	if n := metric(t, e.url("/metrics"), `tether_edge_twin_uploads_total{result="refused"}`); n != 2 {
		t.Fatalf("%v uploads refused, want 2", n)
	}
	if err := m.Upload(ctxT(t, 10*time.Second), "$hw/events/upload/after", []byte("after")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := readUploads(t, c, "?after=0")
		if len(got) == 1 && got[0].Topic == "$hw/events/upload/after" && string(got[0].Payload) == "after" {
			break
		}
		if len(got) > 1 || time.Now().After(deadline) {
			t.Fatalf("uploads in the cloud: %+v; want the one sent after the refused ones", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.stop()
	c.stop()
}

// TestMQTTHostileAgainstAgent sends the real agent the truncated MQTT 5 SUBSCRIBE that panics
// mochi v2.7.9 and a packet announcing 256 MB: each sender is dropped, a mapper connected all
// along keeps its session and is still answered, and the agent lives.
func TestMQTTHostileAgainstAgent(t *testing.T) {
	c := newCloud(t)
	e := newEdge(t, c, "edge-h")
	mustDo(t, http.MethodPost, c.url(paths["devicemodels"]), twinModelObj("m"))
	mustDo(t, http.MethodPost, c.url(paths["devices"]), twinDeviceObj("d", "edge-h", "m"))
	waitNames(t, e.url(paths["devices"]), q("d")...)
	m := newMapper(t, e, nil, ns+"/d")
	ctx := context.Background()
	if _, err := m.Report(ctx, ns+"/d", map[string]string{"temperature": "1"}); err != nil {
		t.Fatal(err)
	}

	expectDropped := func(what string, hello, attack []byte) {
		t.Helper()
		nc, err := net.Dial("tcp", e.mqtt)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Write(hello); err != nil {
			t.Fatal(err)
		}
		ack := make([]byte, 4)
		if _, err := io.ReadFull(nc, ack); err != nil || ack[0] != 0x20 {
			t.Fatalf("%s: no CONNACK: % x, %v", what, ack, err)
		}
		if _, err := nc.Write(attack); err != nil {
			t.Fatal(err)
		}
		// Whatever else CONNACK carried, then the end of the connection.
		if _, err := io.Copy(io.Discard, nc); err != nil && !isClosed(err) {
			t.Fatalf("%s: connection not closed: %v", what, err)
		}
	}
	connect5 := []byte{0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x03, 'b', 'a', 'd'}
	connect4 := []byte{0x10, 0x0f, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x03, 'b', 'i', 'g'}
	for range 3 {
		expectDropped("truncated MQTT 5 SUBSCRIBE", connect5, []byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, 0x61})
		expectDropped("256 MB PUBLISH", connect4, []byte{0x30, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x01, 'a'})
	}
	// The socket closes (mochi's deferred clean-up) before the broker counts the panic it
	// contained, so the count may trail the client's EOF by a moment.
	waitFor(t, 5*time.Second, "3 panics contained", func() bool {
		return metric(t, e.url("/metrics"), "tether_edge_mqtt_panics_total") >= 3
	})
	if n := metric(t, e.url("/metrics"), "tether_edge_mqtt_panics_total"); n != 3 {
		t.Fatalf("panics contained: %v, want 3", n)
	}
	// The mapper's connection and session are untouched: it is answered on its subscriptions
	// without reconnecting (it cannot: it does not reconnect).
	if _, err := m.Report(ctx, ns+"/d", map[string]string{"temperature": "2"}); err != nil {
		t.Fatalf("bystander after the attacks: %v", err)
	}
	if !httpOK(e.url("/healthz")) || e.exited() {
		t.Fatal("the agent died")
	}
	waitReported(t, c, "d", map[string]string{"temperature": "2"})
	e.stop()
	c.stop()
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "connection reset")
}
