package protocol

import (
	"errors"
	"fmt"
)

// Sentinel errors; every error returned by this package wraps one of them, so
// callers test with errors.Is.
var (
	// ErrInvalidToken: an ID is not 1-64 characters of [A-Za-z0-9_-].
	ErrInvalidToken = errors.New("protocol: invalid token")
	// ErrInvalidRequest: a request field fails validation (see FieldError).
	ErrInvalidRequest = errors.New("protocol: invalid request")
	// ErrMalformed: the input is not JSON this protocol accepts (syntax,
	// non-object, duplicate member, float, out-of-range integer, invalid
	// UTF-8, non-ASCII member name, nesting too deep, wrong member type).
	ErrMalformed = errors.New("protocol: malformed message")
	// ErrTooLarge: the message exceeds MaxMessageSize.
	ErrTooLarge = errors.New("protocol: message too large")
	// ErrInvalidSignature: the signature is missing, malformed, made by
	// another key, or does not verify.
	ErrInvalidSignature = errors.New("protocol: invalid signature")
	// ErrUnsupportedKey: the key is neither Ed25519 nor ECDSA P-256.
	ErrUnsupportedKey = errors.New("protocol: unsupported key type")
	// ErrUnknownOp: the operation is not keygen, sign or reshare, or does
	// not match the one expected.
	ErrUnknownOp = errors.New("protocol: unknown or mismatched operation")
	// ErrUnknownNode: a result names a node that is not in the peer list.
	ErrUnknownNode = errors.New("protocol: unknown node")
	// ErrExpired: the request's expires_at has passed.
	ErrExpired = errors.New("protocol: request expired")
	// ErrNotYetValid: the request's created_at lies in the future beyond
	// the allowed clock skew.
	ErrNotYetValid = errors.New("protocol: request not yet valid")
)

// FieldError reports which request field failed validation and why. It
// matches ErrInvalidRequest with errors.Is, and unwraps to the underlying
// cause (for example ErrInvalidToken).
type FieldError struct {
	Field  string // JSON member name, e.g. "wallet_id" or "derivation_path[2]"
	Reason string
	Err    error // underlying cause, may be nil
}

func (e *FieldError) Error() string {
	msg := fmt.Sprintf("protocol: invalid request: %s: %s", e.Field, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is makes errors.Is(err, ErrInvalidRequest) true for every FieldError.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidRequest }

// Unwrap returns the underlying cause.
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field, reason string, err error) error {
	return &FieldError{Field: field, Reason: reason, Err: err}
}
