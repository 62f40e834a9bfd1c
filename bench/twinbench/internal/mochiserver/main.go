package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// allowAll lets every client connect and publish, like mochi's own allow hook (whose package
// pulls in a YAML library the module does not otherwise need).
type allowAll struct{ mqtt.HookBase }

func (*allowAll) ID() string { return "allow-all" }
func (*allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (*allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (*allowAll) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }

// echo answers every client PUBLISH on a topic ending in /twin/update with a QoS 1 publish of
// the same payload on that topic + /result, from OnPublish, before mochi's PUBACK: the packets
// tether-edge exchanges for one durable twin update, with none of its work, so its rate is what
// mochi alone allows the twin path.
type echo struct {
	mqtt.HookBase
	srv *mqtt.Server
}

func (*echo) ID() string           { return "echo" }
func (*echo) Provides(b byte) bool { return b == mqtt.OnPublish }
func (e *echo) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !cl.Net.Inline && strings.HasSuffix(pk.TopicName, "/twin/update") {
		_ = e.srv.Publish(pk.TopicName+"/result", pk.Payload, false, 1)
	}
	return pk, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:1883", "address")
	flag.Parse()
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), InlineClient: true})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := srv.AddHook(&echo{srv: srv}, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "baseline", Address: *listen})); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := srv.Serve(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	srv.Close()
}
