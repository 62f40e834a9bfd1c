package broker

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"
)

// MaxMQTTPacket is the largest packet MQTT can frame: one header byte, four length bytes and the
// largest remaining length a variable byte integer can hold.
const MaxMQTTPacket = 1 + 4 + 268_435_455

// MinPacketSize keeps MaxPacketSize large enough for an ordinary CONNECT with a client id and a
// few properties; anything smaller would refuse well-behaved clients, not attackers.
const MinPacketSize = 128

// Config holds what an operator may set on the embedded broker. Every field has a default in
// DefaultConfig and is bounded by Validate: each limit is an answer to an input from the network.
type Config struct {
	// Listen is the TCP address to listen on. Port 0 picks a free port (see Broker.Addr).
	Listen string

	// MaxPacketSize bounds every packet a client sends, header included. A packet whose fixed
	// header announces more is refused before its body is read or allocated, and the connection
	// is closed. MQTT 5 clients are told the limit in CONNACK.
	MaxPacketSize uint32

	// MaxClients bounds connected MQTT clients. The next CONNECT is answered with CONNACK
	// "server unavailable" (3.1.1, 0x03) or "server busy" (5, 0x89) and the connection is closed.
	MaxClients int

	// MaxPendingConnections is how many TCP connections may be open beyond MaxClients: clients
	// still in their CONNECT handshake, and clients about to be refused with a CONNACK. A
	// connection past MaxClients+MaxPendingConnections is closed as soon as it is accepted,
	// without an answer, so idle sockets cannot exhaust the process.
	MaxPendingConnections int

	// ConnectTimeout is how long a new connection has to deliver its CONNECT packet.
	ConnectTimeout time.Duration

	// WriteTimeout bounds every write to a client. A client that does not drain its socket for
	// this long has its connection closed, which ends its session like any other disconnect.
	WriteTimeout time.Duration

	// MaxInflight is the per-client QoS 1/2 window in both directions: the Receive Maximum
	// announced to MQTT 5 clients (a client that exceeds it is disconnected with 0x93), and the
	// number of unacknowledged messages the broker holds for a client (further QoS>0 messages to
	// that client are dropped and counted).
	MaxInflight uint16

	// MaxSubscriptionsPerClient bounds the topic filters one session holds. Filters past it are
	// refused in SUBACK (0x97 "quota exceeded" for MQTT 5, 0x80 for 3.1.1); the client stays
	// connected. The default, 1,000, lets a KubeEdge mapper that subscribes per device (delta
	// and get results) serve a few hundred devices over one connection.
	MaxSubscriptionsPerClient int

	// MaxSessions bounds the sessions the broker keeps: connected clients and the kept sessions
	// of disconnected ones (clean-session=false, or an MQTT 5 session expiry). A CONNECT that
	// would start one more is refused like one beyond MaxClients; a client resuming its own
	// session is always let in.
	MaxSessions int

	// MaxRetained bounds the retained messages. A retained PUBLISH on a new topic past it is
	// still delivered but not retained (counted as retained_limit); replacing or clearing a
	// retained message is always allowed.
	MaxRetained int

	// SessionExpiry caps how long the session of a disconnected client is kept (MQTT 5 session
	// expiry interval, and 3.1.1 clean-session=false sessions). Zero ends every session at
	// disconnect. Whole seconds only.
	SessionExpiry time.Duration

	// MaxOfflineSessionBytes bounds the payload bytes of QoS 1/2 messages kept for one
	// disconnected session, and MaxOfflineBytes those kept for all of them together. A message
	// for a disconnected session that would pass either is dropped and counted (offline_bytes).
	// MaxInflight alone bounds only the count (10,000 sessions × 1,024 messages × 256 KiB).
	MaxOfflineSessionBytes int64
	MaxOfflineBytes        int64

	// MaxPendingWrites is the per-client queue of messages waiting for that client's writer. When
	// it is full, further messages to that client are dropped and counted; publishers never
	// block on a slow subscriber. Each slot costs 8 bytes per client, allocated at CONNECT. The
	// default, 128, is ample for device traffic: the twin engine answers a client's messages one
	// at a time, each after its commit; 1024 would cost a node with 1,000 clients 7 MiB more.
	MaxPendingWrites int

	// TopicAliasMaximum is the number of inbound topic aliases an MQTT 5 client may use (0
	// disables them). Each alias holds a topic name in memory for the life of the connection.
	TopicAliasMaximum uint16

	// MaxMessageExpiry caps how long a message may wait in the broker: retained messages,
	// messages queued for offline sessions, and unacknowledged deliveries.
	MaxMessageExpiry time.Duration

	// SysTopicInterval is how often the broker refreshes its retained $SYS/broker/... topics.
	SysTopicInterval time.Duration

	// ShutdownTimeout bounds the stop: MQTT 5 clients get a DISCONNECT (0x8B) and this long to
	// read it and close; then every remaining connection is cut.
	ShutdownTimeout time.Duration
}

// DefaultConfig returns the configuration tether-edge runs with unless told otherwise.
func DefaultConfig() Config {
	return Config{
		Listen:                    "127.0.0.1:1883",
		MaxPacketSize:             256 << 10,
		MaxClients:                10_000,
		MaxPendingConnections:     1_000,
		ConnectTimeout:            10 * time.Second,
		WriteTimeout:              10 * time.Second,
		MaxInflight:               1024,
		MaxSubscriptionsPerClient: 1_000,
		MaxSessions:               10_000,
		MaxRetained:               1_000,
		SessionExpiry:             time.Hour,
		MaxPendingWrites:          128,
		MaxOfflineSessionBytes:    1 << 20,
		MaxOfflineBytes:           32 << 20,
		TopicAliasMaximum:         64,
		MaxMessageExpiry:          24 * time.Hour,
		SysTopicInterval:          30 * time.Second,
		ShutdownTimeout:           2 * time.Second,
	}
}

// ErrInvalidConfig is returned (wrapped, with the field and the reason) by Config.Validate and by
// New when a field is out of range.
var ErrInvalidConfig = errors.New("broker: invalid config")

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
}

// Validate reports the first field that is out of range, naming it and the reason.
func (c Config) Validate() error {
	if c.Listen == "" {
		return invalid("Listen", "empty")
	}
	_, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return invalid("Listen", "%q is not host:port: %v", c.Listen, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return invalid("Listen", "%q has no numeric port between 0 and 65535", c.Listen)
	}
	switch {
	case c.MaxPacketSize < MinPacketSize || c.MaxPacketSize > MaxMQTTPacket:
		return invalid("MaxPacketSize", "must be between %d and %d bytes, got %d", MinPacketSize, MaxMQTTPacket, c.MaxPacketSize)
	case c.MaxSessions < 1:
		return invalid("MaxSessions", "must be at least 1, got %d", c.MaxSessions)
	case c.MaxRetained < 0:
		return invalid("MaxRetained", "must not be negative, got %d", c.MaxRetained)
	case c.MaxClients < 1:
		return invalid("MaxClients", "must be at least 1, got %d", c.MaxClients)
	case c.MaxPendingConnections < 1:
		return invalid("MaxPendingConnections", "must be at least 1 so refused clients still get a CONNACK, got %d", c.MaxPendingConnections)
	case c.MaxClients > math.MaxInt32-c.MaxPendingConnections:
		return invalid("MaxClients", "MaxClients+MaxPendingConnections must fit in an int32, got %d+%d", c.MaxClients, c.MaxPendingConnections)
	case c.ConnectTimeout <= 0:
		return invalid("ConnectTimeout", "must be positive, got %s", c.ConnectTimeout)
	case c.WriteTimeout <= 0:
		return invalid("WriteTimeout", "must be positive, got %s", c.WriteTimeout)
	case c.MaxInflight < 1:
		return invalid("MaxInflight", "must be at least 1, got %d", c.MaxInflight)
	case c.MaxSubscriptionsPerClient < 1:
		return invalid("MaxSubscriptionsPerClient", "must be at least 1, got %d", c.MaxSubscriptionsPerClient)
	case c.SessionExpiry < 0 || c.SessionExpiry > math.MaxUint32*time.Second:
		return invalid("SessionExpiry", "must be between 0 and %ds, got %s", uint32(math.MaxUint32), c.SessionExpiry)
	case c.SessionExpiry%time.Second != 0:
		return invalid("SessionExpiry", "must be whole seconds (MQTT counts in seconds), got %s", c.SessionExpiry)
	case c.MaxPendingWrites < 1 || c.MaxPendingWrites > 1<<20:
		return invalid("MaxPendingWrites", "must be between 1 and %d, got %d", 1<<20, c.MaxPendingWrites)
	case c.MaxOfflineSessionBytes < 1 || c.MaxOfflineBytes < c.MaxOfflineSessionBytes:
		return invalid("MaxOfflineBytes", "must be at least MaxOfflineSessionBytes, which must be at least 1; got %d and %d", c.MaxOfflineBytes, c.MaxOfflineSessionBytes)
	case c.MaxMessageExpiry < time.Second:
		return invalid("MaxMessageExpiry", "must be at least 1s, got %s", c.MaxMessageExpiry)
	case c.SysTopicInterval < time.Second:
		return invalid("SysTopicInterval", "must be at least 1s, got %s", c.SysTopicInterval)
	case c.ShutdownTimeout <= 0:
		return invalid("ShutdownTimeout", "must be positive, got %s", c.ShutdownTimeout)
	}
	return nil
}
