package relay

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hwsigner/signer/internal/secret"
)

// minTokenLen: shorter bearer tokens are refused at start (guessable).
const minTokenLen = 16

// tokenSet maps SHA-256 hashes of bearer tokens to clientIDs. Tokens are
// never kept in clear; lookups hash the presented token and compare it with
// every stored hash in constant time.
type tokenSet struct {
	entries []tokenEntry
}

type tokenEntry struct {
	hash     [sha256.Size]byte
	clientID string
}

// add reads source (one token per line; '#' comments and blank lines
// skipped) and binds each token to clientID. A token bound to two clients is
// an error.
func (s *tokenSet) add(clientID, source string) error {
	raw, err := secret.Read(source)
	if err != nil {
		return fmt.Errorf("client %s token_source: %w", clientID, err)
	}
	defer secret.Zero(raw)
	n := 0
	for _, line := range strings.Split(string(raw), "\n") {
		tok := strings.TrimSpace(line)
		if tok == "" || strings.HasPrefix(tok, "#") {
			continue
		}
		if len(tok) < minTokenLen || strings.ContainsAny(tok, " \t") {
			return fmt.Errorf("client %s: a token is shorter than %d characters or contains blanks", clientID, minTokenLen)
		}
		h := sha256.Sum256([]byte(tok))
		if other, ok := s.lookupHash(h); ok {
			return fmt.Errorf("client %s: a token is also configured for client %s; each token is bound to one clientID", clientID, other)
		}
		s.entries = append(s.entries, tokenEntry{hash: h, clientID: clientID})
		n++
	}
	if n == 0 {
		return fmt.Errorf("client %s: token_source holds no token", clientID)
	}
	return nil
}

// lookupHash compares h with every entry (no early exit, constant time per
// comparison) and returns the matching clientID.
func (s *tokenSet) lookupHash(h [sha256.Size]byte) (string, bool) {
	found := -1
	for i := range s.entries {
		if subtle.ConstantTimeCompare(h[:], s.entries[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return s.entries[found].clientID, true
}

var errNoToken = errors.New("missing or malformed Authorization: Bearer header")

// authenticate returns the clientID of the request's bearer token.
func (s *tokenSet) authenticate(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", errNoToken
	}
	id, ok := s.lookupHash(sha256.Sum256([]byte(strings.TrimSpace(tok))))
	if !ok {
		return "", errors.New("unknown bearer token")
	}
	return id, nil
}
