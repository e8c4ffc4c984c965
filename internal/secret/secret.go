// Package secret reads secrets (an HSM PIN, a relay bearer-token list, a
// webhook key) from the source an operator names, and zeroes the buffers
// that held them. A secret is never taken literally from a URI, a config
// file or a command line: a source only says where the secret is.
//
// The package is internal: every reader of secrets is a command or library
// of this module, and the source syntax is documented where operators write
// it (key URIs, the relay config), not as a public API.
package secret

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrSource: a secret source is malformed, missing, unreadable or empty.
// Every error returned by Read wraps it.
var ErrSource = errors.New("secret: source unreadable")

// Error reports what was being read, why it failed and what the operator can
// do about it. It names the source (a path, a variable or credential name)
// but never carries the secret itself.
type Error struct {
	Op   string // e.g. "read secret file /etc/signerd/hsm-pin"
	Hint string // what to do about it
	Err  error  // underlying error, if any
}

func (e *Error) Error() string {
	msg := e.Op + ": " + ErrSource.Error()
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// Unwrap lets errors.Is match ErrSource and the underlying error.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrSource, e.Err}
	}
	return []error{ErrSource}
}

func fail(op, hint string, err error) error {
	return &Error{Op: op, Hint: hint, Err: err}
}

// Read reads a secret from a source:
//
//	file:/path     the file's content
//	env:NAME       the environment variable NAME
//	cred:NAME      the systemd credential NAME ($CREDENTIALS_DIRECTORY/NAME)
//
// Trailing CR and LF bytes are removed; an empty secret is an error. Errors
// are *Error, wrapping ErrSource. The caller owns the returned buffer and
// should Zero it after use. Read zeroes its own intermediate copy (the
// string of an environment variable cannot be cleared).
func Read(source string) ([]byte, error) {
	kind, val, ok := strings.Cut(source, ":")
	if !ok || val == "" {
		return nil, fail("read secret", "use file:/path, env:NAME or cred:NAME", fmt.Errorf("source %q has no scheme", redact(source)))
	}
	var b []byte
	switch kind {
	case "file":
		data, err := os.ReadFile(val)
		if err != nil {
			return nil, fail("read secret file "+val, "check the path and that the node's user may read it", err)
		}
		b = data
	case "env":
		v, ok := os.LookupEnv(val)
		if !ok {
			return nil, fail("read secret from environment", "set the variable "+val, fmt.Errorf("variable %s is not set", val))
		}
		b = []byte(v)
	case "cred":
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return nil, fail("read systemd credential "+val, "run under systemd with LoadCredential= or LoadCredentialEncrypted=", errors.New("CREDENTIALS_DIRECTORY is not set"))
		}
		if strings.ContainsRune(val, '/') {
			return nil, fail("read systemd credential", "a credential name has no slash", fmt.Errorf("bad credential name %q", val))
		}
		data, err := os.ReadFile(filepath.Join(dir, val))
		if err != nil {
			return nil, fail("read systemd credential "+val, "check the unit's LoadCredential= line", err)
		}
		b = data
	default:
		return nil, fail("read secret", "use file:/path, env:NAME or cred:NAME", fmt.Errorf("unknown source kind %q", kind))
	}
	trimmed := bytes.TrimRight(b, "\r\n")
	out := make([]byte, len(trimmed))
	copy(out, trimmed)
	Zero(b)
	if len(out) == 0 {
		return nil, fail("read secret", "the source is empty", fmt.Errorf("empty secret from %s", kind))
	}
	return out, nil
}

// redact shows at most the first four bytes of a source without a scheme:
// an operator may have pasted the secret itself where its source belongs.
func redact(s string) string {
	if len(s) > 8 {
		return s[:4] + "…"
	}
	return "…"
}

// Zero overwrites b with zeros.
func Zero(b []byte) { clear(b) }
