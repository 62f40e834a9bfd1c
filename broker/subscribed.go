package broker

import (
	"sync"
	"sync/atomic"
)

// maxSubscribedTopics bounds the topics whose answer Subscribed remembers. Past it the memory is
// dropped whole and rebuilt from the next questions: the topics asked about are a node's device
// topics, a few per device, so this is reached only by a node with tens of thousands of devices.
const maxSubscribedTopics = 1 << 16

// subscribed remembers, per topic, whether mochi's topic index had a subscriber for it: asking
// mochi costs a walk of the index and four maps per question, which on a loaded edge was a tenth
// of the agent's CPU, while the answer changes only when a client subscribes. Topic keeps one
// answer of its own the same way; this memory serves the hook, which has only a topic's name.
//
// Every remembered answer is stamped with the epoch read before mochi was asked, and an answer
// from an older epoch is asked again. The epoch moves (see hook) before and after every change
// that can add a subscription to the index: a SUBSCRIBE (OnSubscribe, then OnSubscribed, which
// mochi calls after the index holds the filters and before it writes the SUBACK) and a session
// being established (which may inherit a session's subscriptions). So once a client holds its
// SUBACK, no question asked after it can be answered from before its subscription. Changes that
// remove subscriptions (UNSUBSCRIBE, a session ending) move the epoch too, but a stale "yes" is
// harmless: the message is published to nobody, as it would have been without the question.
type subscribed struct {
	epoch  atomic.Uint64
	n      atomic.Int64 // entries in topics, roughly: it bounds the map, not an exact count
	topics sync.Map     // topic → subscribedAnswer
}

type subscribedAnswer struct {
	epoch uint64
	yes   bool
}

// changed is called around every change of the subscriptions in the index.
func (s *subscribed) changed() { s.epoch.Add(1) }

// maxSubscribedTopicBytes bounds the length of a topic Subscribed remembers: the memory holds
// up to maxSubscribedTopics topics, and a topic name can be 64 KiB. KubeEdge's longest device
// topic is under 600 bytes; a longer one is asked about each time.
const maxSubscribedTopicBytes = 1024

// get answers from memory, or asks scan and remembers its answer.
func (s *subscribed) get(topic string, scan func(string) bool) bool {
	if len(topic) > maxSubscribedTopicBytes {
		return scan(topic)
	}
	e := s.epoch.Load()
	if v, ok := s.topics.Load(topic); ok {
		if a := v.(subscribedAnswer); a.epoch == e {
			return a.yes
		}
	} else if s.n.Add(1) > maxSubscribedTopics {
		s.topics.Clear()
		s.n.Store(1)
	}
	yes := scan(topic)
	s.topics.Store(topic, subscribedAnswer{epoch: e, yes: yes})
	return yes
}
