package protocol

import "fmt"

// MaxTokenLen is the maximum length of clientID, walletID, txID, sessionID,
// requestID and nodeID.
const MaxTokenLen = 64

// ValidToken reports whether s may be used as an identifier that becomes a
// NATS subject token or a consumer-name suffix: 1-64 characters of
// [A-Za-z0-9_-]. The error wraps ErrInvalidToken.
func ValidToken(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty", ErrInvalidToken)
	}
	if len(s) > MaxTokenLen {
		return fmt.Errorf("%w: %d characters, at most %d", ErrInvalidToken, len(s), MaxTokenLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: character %q at offset %d", ErrInvalidToken, c, i)
		}
	}
	return nil
}

// validClientID accepts "" (legacy client) or a valid token.
func validClientID(s string) error {
	if s == "" {
		return nil
	}
	return ValidToken(s)
}
