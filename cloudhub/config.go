package cloudhub

import (
	"errors"
	"fmt"
	"time"

	"github.com/tetherhub/tether/protocol"
)

// Config configures the hub.
type Config struct {
	// Listen is the hub's TLS websocket address.
	Listen string
	// Heartbeat is the interval edges are told to ping at. A node silent for two intervals (at
	// least one interval and WriteTimeout: wsframe.SilenceLimit) is dropped as dead.
	Heartbeat time.Duration
	// HandshakeTimeout bounds the TLS handshake, the upgrade and the wait for Hello, and, after a
	// restart, how long a node to be caught up from inside the history waits for its replay.
	HandshakeTimeout time.Duration
	// WriteTimeout is the deadline of every network write.
	WriteTimeout time.Duration
	// MaxMessage bounds one websocket message read from an edge.
	MaxMessage int64
	// MaxFrame is how many bytes of messages the writer packs into one websocket message.
	MaxFrame int
	// Window is how many data messages may be unacknowledged per node.
	Window int
	// SlowTimeout: a node whose window stays full this long is disconnected; it reconnects and
	// catches up from its cursor, which costs what it missed and nothing more.
	SlowTimeout time.Duration
	// MaxPending is how many distinct keys may wait for a node before the hub stops tracking
	// them one by one and resets the node instead (sends its whole view once).
	MaxPending int
	// Progress is how often an idle node is told that its view is complete through the
	// current revision, which keeps its cursor near the head.
	Progress time.Duration
	// History is how many changes the hub remembers for incremental catch-up. A node whose
	// cursor is older is reset.
	History int
	// GracePeriod is how long a node may be disconnected before the cloud reports it NotReady
	// (so that a cloud restart or a quick reconnect does not flap it).
	GracePeriod time.Duration
	// StatusInterval is how often the Node's lastHeartbeatTime is written while connected. It
	// is not how the cloud knows a node is up (the session is, and with several replicas the
	// holder's lease), so it can be long: like the kubelet's node status report (5 minutes
	// unless something changed), it keeps timestamp writes from taking the store's capacity —
	// 10,000 nodes at one a minute are 167 writes a second, and each is a change every API
	// watcher and the watch cache take in.
	StatusInterval time.Duration
	// SharedStore says other replicas serve nodes from the same store (etcd): the hub then also
	// times the nodes that joined or connected through another replica after it started, so it
	// marks them NotReady should that replica die (watchElsewhere). With a store of its own every
	// node is either connected here or timed since it left.
	SharedStore bool
	// ReadBuffer and WriteBuffer are the websocket buffer sizes. Write buffers are pooled, so
	// only writing sessions hold one; the read buffer is held by every connection.
	ReadBuffer, WriteBuffer int
	// ReportQueue is how many reports may wait for the store per node before reading stops.
	ReportQueue int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Listen:           "0.0.0.0:10000",
		Heartbeat:        15 * time.Second,
		HandshakeTimeout: 10 * time.Second,
		WriteTimeout:     10 * time.Second,
		MaxMessage:       4 << 20,
		MaxFrame:         64 << 10,
		Window:           512,
		SlowTimeout:      30 * time.Second,
		MaxPending:       65536,
		Progress:         5 * time.Second,
		History:          100_000,
		GracePeriod:      40 * time.Second,
		StatusInterval:   5 * time.Minute,
		ReadBuffer:       512,
		WriteBuffer:      16 << 10,
		ReportQueue:      1024,
	}
}

// MaxWindow is the largest Window: a frame's data messages, with the control messages sent
// beside them, stay under protocol.MaxFrameMessages.
const MaxWindow = 16384

// MinMaxMessage is the smallest Config.MaxMessage: room for a frame carrying the largest report
// an edge may queue (protocol.MaxReportPayload) beside its other messages. With less, such a
// report would fail its frame at every resend and hold back every report behind it.
const MinMaxMessage = protocol.MaxReportPayload + 64<<10

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	var errs []error
	pos := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("cloudhub: %s must be positive, got %s", name, d))
		}
	}
	pos("heartbeat", c.Heartbeat)
	pos("handshake timeout", c.HandshakeTimeout)
	pos("write timeout", c.WriteTimeout)
	pos("slow timeout", c.SlowTimeout)
	pos("progress interval", c.Progress)
	pos("grace period", c.GracePeriod)
	pos("status interval", c.StatusInterval)
	if c.Listen == "" {
		errs = append(errs, errors.New("cloudhub: listen address is empty"))
	}
	if c.MaxMessage < MinMaxMessage {
		errs = append(errs, fmt.Errorf("cloudhub: max message must be at least %d, got %d", MinMaxMessage, c.MaxMessage))
	}
	if c.MaxFrame < 1024 {
		errs = append(errs, fmt.Errorf("cloudhub: max frame must be at least 1024, got %d", c.MaxFrame))
	}
	if c.Window < 1 || c.MaxPending < 1 || c.History < 1 || c.ReportQueue < 1 {
		errs = append(errs, fmt.Errorf("cloudhub: window, max pending, history and report queue must be at least 1"))
	}
	if c.Window > MaxWindow {
		errs = append(errs, fmt.Errorf("cloudhub: window must be at most %d (an edge refuses frames of more than %d messages), got %d", MaxWindow, protocol.MaxFrameMessages, c.Window))
	}
	if c.ReadBuffer < 128 || c.WriteBuffer < 128 {
		errs = append(errs, fmt.Errorf("cloudhub: buffers must be at least 128 bytes"))
	}
	return errors.Join(errs...)
}
