package hsm

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ReadSecret reads a secret (an HSM PIN, a NATS credential) from a source:
//
//	file:/path     the file's content, trailing newline removed
//	env:NAME       the environment variable NAME
//	cred:NAME      the systemd credential NAME ($CREDENTIALS_DIRECTORY/NAME)
//
// A secret is never taken literally from a URI or command line. The caller
// owns the returned buffer and should Zero it after use.
func ReadSecret(source string) ([]byte, error) {
	kind, val, ok := strings.Cut(source, ":")
	if !ok || val == "" {
		return nil, Errorf(ErrSecretSource, "read secret", "use file:/path, env:NAME or cred:NAME", fmt.Errorf("source %q has no scheme", redactSource(source)))
	}
	var b []byte
	switch kind {
	case "file":
		data, err := os.ReadFile(val)
		if err != nil {
			return nil, Errorf(ErrSecretSource, "read secret file "+val, "check the path and that the node's user may read it", err)
		}
		b = data
	case "env":
		v, ok := os.LookupEnv(val)
		if !ok {
			return nil, Errorf(ErrSecretSource, "read secret from environment", "set the variable "+val, fmt.Errorf("variable %s is not set", val))
		}
		b = []byte(v)
	case "cred":
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return nil, Errorf(ErrSecretSource, "read systemd credential "+val, "run under systemd with LoadCredential= or LoadCredentialEncrypted=", fmt.Errorf("CREDENTIALS_DIRECTORY is not set"))
		}
		if strings.ContainsRune(val, '/') {
			return nil, Errorf(ErrSecretSource, "read systemd credential", "a credential name has no slash", fmt.Errorf("bad credential name %q", val))
		}
		data, err := os.ReadFile(filepath.Join(dir, val))
		if err != nil {
			return nil, Errorf(ErrSecretSource, "read systemd credential "+val, "check the unit's LoadCredential= line", err)
		}
		b = data
	default:
		return nil, Errorf(ErrSecretSource, "read secret", "use file:/path, env:NAME or cred:NAME", fmt.Errorf("unknown source kind %q", kind))
	}
	trimmed := bytes.TrimRight(b, "\r\n")
	out := make([]byte, len(trimmed))
	copy(out, trimmed)
	Zero(b)
	if len(out) == 0 {
		return nil, Errorf(ErrSecretSource, "read secret", "the source is empty", fmt.Errorf("empty secret from %s", kind))
	}
	return out, nil
}

func redactSource(s string) string {
	if len(s) > 8 {
		return s[:4] + "…"
	}
	return "…"
}

// Zero overwrites b with zeros.
func Zero(b []byte) {
	for i := range b {
		b[i] = 0
	}
}
