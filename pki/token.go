package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// TokenPrefix names the join token format and its version; a future format gets a new prefix, so
// an old edge refuses a new token clearly instead of misreading it.
const TokenPrefix = "tether1"

const (
	tokenIDLen     = 6
	tokenSecretLen = 16
	hashHexLen     = 2 * sha256.Size
	// maxTokenLen is far above a real token's length (96) and only bounds the work ParseToken does.
	maxTokenLen = 256

	tokenAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	redacted      = "<redacted>"
)

// Token is a join token: the hash of the CA the node must pin, an ID naming the token, and the
// secret that proves the node holds it. Its text form (String) is
//
//	tether1.<64 hex of the CA hash>.<ID>.<secret>
//
// Formatting a Token with fmt (%v, %s, ...) or encoding/json gives Redacted, so a token handed to
// a logger does not leak its secret; call String for the full token.
type Token struct {
	CAHash string // "sha256:<64 hex>", as (*CA).Hash returns it
	ID     string // 6 characters of [a-z0-9]
	Secret string // 16 characters of [a-z0-9]
}

// NewToken returns a token for the CA with hash caHash (as (*CA).Hash returns it) with a random ID
// and secret from crypto/rand.
func NewToken(caHash string) (Token, error) {
	if !validHash(caHash) {
		return Token{}, fmt.Errorf("pki: CA hash must be %q and 64 lowercase hex characters", HashPrefix)
	}
	id, err := randomString(tokenIDLen)
	if err != nil {
		return Token{}, err
	}
	secret, err := randomString(tokenSecretLen)
	if err != nil {
		return Token{}, err
	}
	return Token{CAHash: caHash, ID: id, Secret: secret}, nil
}

// String returns the full token, secret included: for the operator's terminal and the edge's
// --token, never for logs.
func (t Token) String() string {
	return TokenPrefix + "." + strings.TrimPrefix(t.CAHash, HashPrefix) + "." + t.ID + "." + t.Secret
}

// Redacted returns the token for logs: the format, the first 8 hex characters of the CA hash,
// the ID, and no secret.
func (t Token) Redacted() string {
	h := strings.TrimPrefix(t.CAHash, HashPrefix)
	if len(h) > 8 {
		h = h[:8] + "…"
	}
	return TokenPrefix + "." + h + "." + t.ID + "." + redacted
}

// Format makes every fmt verb print Redacted, so a token in a log line or an error message
// formatted with fmt cannot leak the secret. String is the one explicit way to the secret.
func (t Token) Format(f fmt.State, _ rune) {
	_, _ = f.Write([]byte(t.Redacted()))
}

// MarshalJSON encodes the token as its Redacted string, for the same reason as Format: a logger
// that JSON-encodes a value must not leak the secret. There is deliberately no UnmarshalJSON;
// send String and read it with ParseToken.
func (t Token) MarshalJSON() ([]byte, error) {
	return json.Marshal(t.Redacted())
}

// ParseToken parses the text form of a token. Surrounding whitespace (a newline from a file or
// terminal) is ignored; anything else that is not exactly the tether1 form is an error wrapping
// ErrMalformedToken that says which part is wrong without quoting the input.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, fmt.Errorf("%w: empty", ErrMalformedToken)
	}
	if len(s) > maxTokenLen {
		return Token{}, fmt.Errorf("%w: %d characters, a token has %d", ErrMalformedToken, len(s),
			len(TokenPrefix)+hashHexLen+tokenIDLen+tokenSecretLen+3)
	}
	parts := strings.Split(s, ".")
	if parts[0] != TokenPrefix {
		return Token{}, fmt.Errorf("%w: it does not start with %q; create one with tether-cloud token create",
			ErrMalformedToken, TokenPrefix+".")
	}
	if len(parts) != 4 {
		return Token{}, fmt.Errorf("%w: want 4 dot-separated parts (%s.<CA hash>.<ID>.<secret>), got %d",
			ErrMalformedToken, TokenPrefix, len(parts))
	}
	hash, id, secret := parts[1], parts[2], parts[3]
	if !isLowerHex(hash, hashHexLen) {
		return Token{}, fmt.Errorf("%w: the CA hash must be %d lowercase hex characters", ErrMalformedToken, hashHexLen)
	}
	if !isTokenChars(id, tokenIDLen) {
		return Token{}, fmt.Errorf("%w: the token ID must be %d characters of a-z and 0-9", ErrMalformedToken, tokenIDLen)
	}
	if !isTokenChars(secret, tokenSecretLen) {
		return Token{}, fmt.Errorf("%w: the token secret must be %d characters of a-z and 0-9", ErrMalformedToken, tokenSecretLen)
	}
	return Token{CAHash: HashPrefix + hash, ID: id, Secret: secret}, nil
}

// SecretDigest returns the hex SHA-256 of secret, what the cloud stores instead of the secret. A
// plain hash suffices (no salt, no slow KDF): the secret is ~82 random bits, not a password, so
// there is no dictionary to precompute.
func SecretDigest(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// SecretMatches reports whether secret hashes to digest, in time that does not depend on where
// they differ.
func SecretMatches(digest, secret string) bool {
	return subtle.ConstantTimeCompare([]byte(SecretDigest(secret)), []byte(digest)) == 1
}

func validHash(h string) bool {
	rest, ok := strings.CutPrefix(h, HashPrefix)
	return ok && isLowerHex(rest, hashHexLen)
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func isTokenChars(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// randomString returns n characters of tokenAlphabet, each uniformly chosen. Bytes of 252 and up
// are discarded because 256 is not a multiple of 36, and keeping them would favour a-d.
func randomString(n int) (string, error) {
	const limit = 256 - 256%len(tokenAlphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("pki: random token: %w", err)
		}
		for _, b := range buf {
			if int(b) >= limit {
				continue
			}
			out = append(out, tokenAlphabet[int(b)%len(tokenAlphabet)])
			if len(out) == n {
				break
			}
		}
	}
	return string(out), nil
}
