// Package pki owns tether's certificates, keys and join tokens: the cloud CA, the certificates it
// issues, a node's identity on disk, and the token format that lets a node pin the CA before it
// trusts anything the cloud says.
//
// It is a leaf package shared by the cloud and the edge and imports nothing of tether's.
//
// # Trust model
//
// One CA per cloud (ECDSA P-256, CN tether-ca, ten years), kept as ca.crt and ca.key in the cloud's
// data directory. Replicas of one cloud share theirs through a CAShare (the etcd store):
// LoadSharedCA stores the first replica's CA there and gives it to the others. The CA signs the hub's server certificate (IssueServer) and one client
// certificate per node (SignCSR). A node's identity on the hub is its certificate's subject,
// CN "node:<name>", and nothing else; NodeNameFromCert reads it back after the TLS stack has
// verified the chain. The hub's listener uses (*CA).ServerTLSConfig: TLS 1.3,
// tls.RequireAndVerifyClientCert, ClientCAs holding only this CA. A node dials with
// (*NodeIdentity).ClientTLSConfig, which trusts only the CA it pinned at join.
//
// The CA's identity is Hash: "sha256:" and the hex SHA-256 of the certificate's
// SubjectPublicKeyInfo, the same construction as kubeadm's discovery-token-ca-cert-hash, so
// openssl can compute it:
//
//	openssl x509 -in ca.crt -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum
//
// Hashing the public key rather than the whole certificate means a CA re-issued with the same
// key (say, to extend its validity) keeps its hash and every token and node stays valid.
//
// # Join tokens
//
// A token is one string an operator copies to an edge host:
//
//	tether1.<CA hash: 64 lowercase hex>.<ID: 6 of [a-z0-9]>.<secret: 16 of [a-z0-9]>
//
// "tether1" names the format and its version. The CA hash lets the edge pin the CA it downloads
// before it sends anything secret. The ID names the token in the cloud's store and in logs; the
// secret (about 82 bits from crypto/rand) proves possession and is never stored by the cloud,
// only SecretDigest of it, and never logged: log Token.Redacted or the ID. Token's fmt and JSON
// forms are redacted so a token passed to a logger by mistake does not leak; only String gives
// the full token.
//
// # Files
//
// Cloud data dir: ca.crt (0644), ca.key (0600). Edge data dir: node.crt (0644), node.key (0600),
// ca.crt (0644). Every write goes to a temporary file in the same directory, is fsynced and then
// renamed over the target, and the directory is fsynced, so a crash leaves either the old or the
// new content of each file, never a torn one.
//
// # Concurrency
//
// A *CA and a *NodeIdentity are immutable after construction and safe for concurrent use. The
// file functions assume one process owns the directory (the caller holds the data-dir lock).
//
// # Caveats
//
//   - Two files cannot be replaced atomically together. SaveNodeIdentity writes node.key before
//     node.crt and skips files whose content is unchanged, so re-signing the same key (the cheap
//     way to rotate) replaces only node.crt, in one rename. A crash between the two renames of a
//     save with a new key leaves a pair LoadNodeIdentity rejects with ErrBadIdentity; the node
//     must join again.
//   - LoadOrCreateCA never overwrites or regenerates an existing CA: a new CA orphans every node.
//     Half a CA on disk is an error for the operator to resolve from backup.
//   - Every cloud replica must use the same CA (copy ca.crt and ca.key to each replica's data dir);
//     a replica that creates its own would refuse every node the others admitted.
//   - There is no revocation list: a node is revoked by deleting its Node object, which the hub
//     checks on every connection (SPEC §3). Short node certificate validity bounds a stolen key.
package pki
