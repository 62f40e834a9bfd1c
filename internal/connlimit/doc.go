// Package connlimit caps the connections an HTTP listener holds open, and answers the ones past
// the cap at once with 503 instead of leaving them in the kernel's backlog.
//
// The edge's metaserver serves plain HTTP to local clients (kubectl, informers, mappers). A
// client that opens connections and never closes them would otherwise use up the agent's file
// descriptors, which its MQTT clients and its store need too. A connection past the cap is
// accepted, sent a short "503 Service Unavailable" with Retry-After, and closed, so a client sees
// a clear answer rather than a hang; the cloud's TLS ports, which cannot answer before a
// handshake, keep theirs waiting in the backlog instead (golang.org/x/net/netutil).
package connlimit
