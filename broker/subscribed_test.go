package broker

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMatchFilter(t *testing.T) {
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/+", "a/b", true},
		{"a/+", "a/", true}, // an empty level is a level
		{"a/+", "a", false},
		{"a/+", "a/b/c", false},
		{"+/+", "a/b", true},
		{"a/#", "a", true}, // "#" includes the parent level
		{"a/#", "a/b/c", true},
		{"a/#", "ab", false},
		{"#", "a/b", true},
		{"$hw/events/device/+/+/twin/update", "$hw/events/device/ns/d/twin/update", true},
		{"$hw/events/device/+/+/twin/update", "$hw/events/device/d/twin/update", false},
		{"$hw/events/device/+/+/twin/update", "$hw/events/device/ns/d/twin/update/result", false},
		{"$hw/events/upload/#", "$hw/events/upload/ns/d/x", true},
		{"#", "$hw/events", false}, // [MQTT-4.7.2-1]
		{"+/events", "$hw/events", false},
		{"SYS/dis/upload_records", "SYS/dis/upload_records", true},
	} {
		if got := matchFilter(c.filter, c.topic); got != c.want {
			t.Errorf("matchFilter(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

// TestTopicSubscribed: a Topic's answer follows subscriptions; a client that holds its SUBACK
// is seen at once, however often the topic was asked about before.
func TestTopicSubscribed(t *testing.T) {
	b := startBroker(t, nil)
	if _, err := b.Topic("a/+"); !errors.Is(err, ErrInvalidTopic) {
		t.Fatalf("Topic with a wildcard: %v, want ErrInvalidTopic", err)
	}
	topic, err := b.Topic("dev/1/result")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if topic.Subscribed() {
			t.Fatal("subscribed before anyone subscribed")
		}
	}
	c := dialPaho3(t, b.addr, "c")
	subscribe3(t, c, "dev/+/result", 0) // returns once the SUBACK is in
	if !topic.Subscribed() {
		t.Fatal("not subscribed after the SUBACK")
	}
	if tok := c.Unsubscribe("dev/+/result"); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	if topic.Subscribed() {
		t.Fatal("subscribed after the UNSUBACK")
	}
	subscribe3(t, c, "dev/1/#", 0)
	if !topic.Subscribed() {
		t.Fatal("not subscribed through dev/1/#")
	}
	c.Disconnect(100) // clean session: its subscriptions end with it
	waitFor(t, "the subscription to end with its session", func() bool { return !topic.Subscribed() })
}

// TestHandledTopicReachesSubscribers: a consumer's topic nobody subscribes to skips mochi's
// forwarding, and once a client subscribes to it, it gets the next message.
func TestHandledTopicReachesSubscribers(t *testing.T) {
	b := startBroker(t, nil)
	handled := make(chan string, 4)
	if err := b.Handle("dev/+/update", func(topic string, payload []byte) error { handled <- string(payload); return nil }); err != nil {
		t.Fatal(err)
	}
	pub := dialPaho3(t, b.addr, "pub")
	publish3(t, pub, "dev/1/update", 1, "nobody listens")
	if got := recvString(t, handled); got != "nobody listens" {
		t.Fatalf("handler got %q", got)
	}
	sub := dialPaho3(t, b.addr, "sub")
	ch := subscribe3(t, sub, "dev/1/update", 1)
	publish3(t, pub, "dev/1/update", 1, "now someone does")
	expectMsg(t, ch, "dev/1/update", "now someone does")
	if got := recvString(t, handled); got != "now someone does" {
		t.Fatalf("handler got %q", got)
	}
}

func recvString(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(waitLong):
		t.Fatal("nothing received")
	}
	return ""
}

// TestSubscribedForgetsLongTopics: a topic longer than any KubeEdge device topic is asked about
// each time, not remembered: the memory holds up to 65,536 topics, and at 64 KiB each (a device
// publishing to long made-up topics) that was 4 GiB.
func TestSubscribedForgetsLongTopics(t *testing.T) {
	var s subscribed
	asked := 0
	scan := func(string) bool { asked++; return false }
	long := strings.Repeat("d", maxSubscribedTopicBytes+1)
	s.get(long, scan)
	s.get(long, scan)
	if _, kept := s.topics.Load(long); kept || asked != 2 {
		t.Fatalf("a %d-byte topic: remembered %v, asked %d times; want asked each time", len(long), kept, asked)
	}
	s.get("$hw/events/device/ns/d/twin/update", scan)
	s.get("$hw/events/device/ns/d/twin/update", scan)
	if asked != 3 {
		t.Fatalf("a device topic was asked %d times in all, want once more", asked-2)
	}
}
