// Command tether-edge runs on every edge host: it joins the cloud once, keeps the node's slice of
// the fleet's state in bbolt, serves it on the local metaserver, runs the MQTT broker devices talk
// to, and sends reports up through a durable outbox.
package main
