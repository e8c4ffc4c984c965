package hsm

import (
	"errors"
	"fmt"
)

// Sentinel errors. Backends wrap them with context and a hint, so callers can
// test with errors.Is and operators read what to do.
var (
	ErrWrongPIN          = errors.New("hsm: wrong PIN")
	ErrTokenNotFound     = errors.New("hsm: token not found")
	ErrModuleNotFound    = errors.New("hsm: PKCS#11 module not found")
	ErrKeyNotFound       = errors.New("hsm: wrapping key not found")
	ErrKeyExists         = errors.New("hsm: key already exists")
	ErrTampered          = errors.New("hsm: sealed blob failed authentication")
	ErrBindingMismatch   = errors.New("hsm: sealed blob belongs to another node, wallet, key type or epoch")
	ErrMalformedBlob     = errors.New("hsm: malformed sealed blob")
	ErrUnsupported       = errors.New("hsm: unsupported")
	ErrPCRMismatch       = errors.New("hsm: TPM PCR policy not satisfied")
	ErrDeviceUnavailable = errors.New("hsm: device unavailable")
	ErrBadURI            = errors.New("hsm: bad key URI")
	ErrSecretSource      = errors.New("hsm: secret source unreadable")
	ErrBackendFailure    = errors.New("hsm: backend failure")
)

// Error carries a sentinel (Kind), what was being done, and a hint for the
// operator. It never carries secret material.
type Error struct {
	Kind error  // one of the sentinels above
	Op   string // e.g. "pkcs11 login"
	Hint string // what to do about it
	Err  error  // underlying error, if any
}

func (e *Error) Error() string {
	msg := e.Op + ": " + e.Kind.Error()
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// Unwrap lets errors.Is match both the kind and the underlying error.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// Errorf builds an *Error.
func Errorf(kind error, op, hint string, err error) error {
	return &Error{Kind: kind, Op: op, Hint: hint, Err: err}
}

// Recover turns a panic inside a backend call into a typed error, so that a
// library panic (crypto11 panics on session-pool failures) never takes the
// node down. Use as: defer hsm.Recover("pkcs11 wrap", &err).
func Recover(op string, err *error) {
	if r := recover(); r != nil {
		*err = Errorf(ErrBackendFailure, op, "the backend library panicked; check the token and restart the node if it persists", fmt.Errorf("panic: %v", r))
	}
}
