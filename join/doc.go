// Package join owns the join protocol: how an edge node with a token becomes a node with a
// certificate. The Server runs on the cloud's join port; Join is the client the edge agent calls.
//
// # Protocol
//
//  1. The edge fetches GET /ca.crt without verifying the server (it has nothing to verify with
//     yet) and keeps the certificate whose pki.CertHash equals the hash in its token. No match is
//     ErrCAMismatch, and nothing else is sent: the token's secret never reaches a server that has
//     not proved it holds the operator's CA.
//  2. Over a new connection that trusts only that CA, it sends POST /v1/join with
//     {"token", "nodeName", "labels", "csr"}.
//  3. The server checks, in order: the body (at most Config.MaxBodyBytes, one JSON object with
//     exactly the known fields and types), the token's form and its CA hash, the node name, the
//     labels, the token against Tokens (known, secret matches, not expired, bound to this name
//     or a fleet token), then the CSR (pki.SignCSR). Only when all pass does it call
//     Nodes.Register and answer 200 {"certificate", "ca"}; a refused join registers nothing.
//  4. The edge checks the certificate is for its key and name and issued by the pinned CA, and
//     the caller saves it with pki.SaveNodeIdentity. The token is not needed again.
//
// Every refusal is a JSON body {"code", "message"} with a status from the table in errors.go;
// the client turns it into an *Error.
//
// # Serving
//
// The cloud serves Handler over HTTPS with a certificate from (*pki.CA).IssueServer and no client
// certificate (a joining node has none); HTTPServer builds such an *http.Server with timeouts, so
// slow or idle clients cannot hold connections open on a port that faces the internet.
//
// # Concurrency
//
// A Server is immutable after NewServer and serves requests concurrently; Tokens and Nodes must
// be safe for concurrent use. Join keeps no state between calls.
//
// # Caveats
//
//   - Secrets: the server logs the token ID, never the token or its secret, and never the raw
//     request. Error messages never quote the token.
//   - A fleet token lets whoever holds it get a certificate for any node name that is not taken
//     by policy in Tokens/Nodes, including an existing node's. Prefer node-bound tokens; keep
//     fleet tokens short-lived.
//   - There is no rate limit: guessing a token (~82 bits of secret) is hopeless, and a flood is
//     bounded per request by the body limit and timeouts. Put a rate limit in front if needed.
//   - The label apps.kubeedge.io/belonging-to is refused at join: NodeGroups own it, and a node
//     must not place itself into a group.
package join
