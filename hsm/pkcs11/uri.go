package pkcs11

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hwsigner/signer/hsm"
)

// DefaultObject is the base label of the wrapping key when the URI has no
// object= attribute. Version N of the key is labelled "<object>.v<N>".
const DefaultObject = "share-kek"

// maxTokenLabel is the size of CK_TOKEN_INFO.label.
const maxTokenLabel = 32

// Config says which token and wrapping key a Backend uses. It is normally
// parsed from an RFC 7512 URI with ParseURI. It never holds a PIN, only where
// to read one.
type Config struct {
	// ModulePath is the PKCS#11 module (query attribute module-path).
	ModulePath string
	// Token is the token label (path attribute token).
	Token string
	// SlotID selects the slot (path attribute slot-id). With Token, the
	// token in that slot must carry that label.
	SlotID *uint
	// Object is the wrapping key's base label (path attribute object);
	// DefaultObject when empty.
	Object string
	// ID, when set (path attribute id), is a CKA_ID prefix: only wrapping
	// keys whose CKA_ID starts with it are used, and new versions get
	// CKA_ID = ID || 8 random bytes.
	ID []byte
	// PINSource names the user PIN: file:/path, env:NAME or cred:NAME
	// (query attribute pin-source), read with hsm.ReadSecret.
	PINSource string
}

// uriExample is shown in every URI error.
const uriExample = "e.g. pkcs11:token=node0;object=share-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/credentials/signerd.service/hsm-pin"

func badURI(format string, a ...any) error {
	return hsm.Errorf(hsm.ErrBadURI, "parse pkcs11 URI", "see RFC 7512; "+uriExample, fmt.Errorf(format, a...))
}

// errPINValue is returned for a pin-value attribute. It never repeats the
// value.
func errPINValue() error {
	return hsm.Errorf(hsm.ErrBadURI, "parse pkcs11 URI",
		"use pin-source=file:/path, env:NAME or cred:NAME (a systemd credential)",
		fmt.Errorf("pin-value is refused: a PIN must never be written in a URI, where it ends up in configuration files, logs and process listings"))
}

// ParseURI parses an RFC 7512 PKCS#11 URI such as
//
//	pkcs11:token=node0;object=share-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/credentials/signerd.service/hsm-pin
//
// Path attributes (separated by ';'): token (the token label), object (the
// wrapping key's base label, default "share-kek"), id (CKA_ID prefix, any
// bytes, percent-encoded), slot-id (decimal), type (only "secret-key").
// manufacturer, model, library-manufacturer, library-description,
// library-version, slot-description, slot-manufacturer and x-* attributes
// are accepted and ignored. Query attributes (separated by '&'): module-path
// (required, absolute) and pin-source (required: file:/path, env:NAME or
// cred:NAME; a bare absolute path or a file:/// URI means file:). Values are
// percent-decoded; '+' stays '+'. token= or slot-id= is required.
//
// pin-value is refused: a PIN never goes in a URI. Errors wrap hsm.ErrBadURI
// and never repeat attribute values that could be secret.
func ParseURI(s string) (Config, error) {
	if len(s) < len("pkcs11:") || !strings.EqualFold(s[:len("pkcs11:")], "pkcs11:") {
		return Config{}, badURI("not a pkcs11: URI")
	}
	rest := s[len("pkcs11:"):]
	if strings.ContainsRune(rest, '#') {
		return Config{}, badURI("a pkcs11: URI has no fragment ('#'); percent-encode it as %%23")
	}
	path, query, _ := strings.Cut(rest, "?")
	var cfg Config
	seen := map[string]bool{}
	for _, attr := range strings.Split(path, ";") {
		if attr == "" {
			continue
		}
		k, v, ok := strings.Cut(attr, "=")
		if k == "pin-value" {
			return Config{}, errPINValue()
		}
		if !ok {
			return Config{}, badURI("path attribute %q has no '='", k)
		}
		if seen[k] {
			return Config{}, badURI("path attribute %q appears twice", k)
		}
		seen[k] = true
		dv, err := url.PathUnescape(v)
		if err != nil {
			return Config{}, badURI("path attribute %s: bad percent-encoding", k)
		}
		switch k {
		case "token":
			if dv == "" || len(dv) > maxTokenLabel {
				return Config{}, badURI("token label must be 1 to %d bytes", maxTokenLabel)
			}
			cfg.Token = dv
		case "object":
			if dv == "" {
				return Config{}, badURI("object is empty")
			}
			cfg.Object = dv
		case "id":
			if dv == "" {
				return Config{}, badURI("id is empty")
			}
			cfg.ID = []byte(dv)
		case "slot-id":
			n, err := strconv.ParseUint(dv, 10, 64)
			if err != nil {
				return Config{}, badURI("slot-id %q is not a decimal number", dv)
			}
			u := uint(n)
			cfg.SlotID = &u
		case "type":
			if dv != "secret-key" {
				return Config{}, badURI("type=%s: the object named is the wrapping key, type=secret-key", dv)
			}
		case "serial":
			return Config{}, badURI("serial is not supported: select the token with token= (and slot-id= if labels repeat)")
		case "manufacturer", "model", "library-manufacturer", "library-description", "library-version", "slot-description", "slot-manufacturer":
			// Informational; accepted and ignored.
		default:
			if strings.HasPrefix(k, "x-") {
				continue // vendor extension, RFC 7512 §2.3
			}
			return Config{}, badURI("unknown path attribute %q", k)
		}
	}
	seen = map[string]bool{}
	if query != "" {
		for _, attr := range strings.Split(query, "&") {
			if attr == "" {
				continue
			}
			k, v, ok := strings.Cut(attr, "=")
			if k == "pin-value" {
				return Config{}, errPINValue()
			}
			if !ok {
				return Config{}, badURI("query attribute %q has no '='", k)
			}
			if seen[k] {
				return Config{}, badURI("query attribute %q appears twice", k)
			}
			seen[k] = true
			dv, err := url.PathUnescape(v)
			if err != nil {
				return Config{}, badURI("query attribute %s: bad percent-encoding", k)
			}
			switch k {
			case "module-path":
				cfg.ModulePath = dv
			case "pin-source":
				src, err := normalizePINSource(dv)
				if err != nil {
					return Config{}, err
				}
				cfg.PINSource = src
			case "module-name":
				return Config{}, badURI("module-name is not supported: give the module's absolute path with module-path=")
			default:
				if strings.HasPrefix(k, "x-") {
					continue
				}
				return Config{}, badURI("unknown query attribute %q", k)
			}
		}
	}
	if err := cfg.validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// normalizePINSource accepts file:/path, env:NAME, cred:NAME, a bare
// absolute path and file:///path.
func normalizePINSource(src string) (string, error) {
	if strings.HasPrefix(src, "/") {
		return "file:" + src, nil
	}
	kind, val, _ := strings.Cut(src, ":")
	switch kind {
	case "file":
		if strings.HasPrefix(val, "//") {
			if !strings.HasPrefix(val, "///") {
				return "", badURI("pin-source: a file URI must be local (file:/path or file:///path)")
			}
			val = val[2:]
		}
		if !strings.HasPrefix(val, "/") {
			return "", badURI("pin-source: file: needs an absolute path")
		}
		return "file:" + val, nil
	case "env", "cred":
		if val == "" {
			return "", badURI("pin-source: %s: needs a name", kind)
		}
		return src, nil
	default:
		return "", badURI("pin-source must be file:/path, env:NAME or cred:NAME")
	}
}

func (c Config) validate() error {
	if c.ModulePath == "" {
		return badURI("module-path= is required (the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so)")
	}
	if !filepath.IsAbs(c.ModulePath) {
		return badURI("module-path must be an absolute path")
	}
	if c.Token == "" && c.SlotID == nil {
		return badURI("token= (the token label) is required")
	}
	if len(c.Token) > maxTokenLabel {
		return badURI("token label must be at most %d bytes", maxTokenLabel)
	}
	if c.PINSource == "" {
		return badURI("pin-source= is required (file:/path, env:NAME or cred:NAME)")
	}
	return nil
}

func (c Config) object() string {
	if c.Object == "" {
		return DefaultObject
	}
	return c.Object
}

// String renders the configuration as a pkcs11: URI. It holds no secret
// (only where the PIN is read from), so it may be logged.
func (c Config) String() string {
	var path []string
	if c.Token != "" {
		path = append(path, "token="+escape(c.Token))
	}
	if c.SlotID != nil {
		path = append(path, "slot-id="+strconv.FormatUint(uint64(*c.SlotID), 10))
	}
	path = append(path, "object="+escape(c.object()))
	if len(c.ID) > 0 {
		path = append(path, "id="+escape(string(c.ID)))
	}
	return "pkcs11:" + strings.Join(path, ";") + "?module-path=" + escape(c.ModulePath) + "&pin-source=" + escape(c.PINSource)
}

// escape percent-encodes everything but RFC 3986 unreserved characters and
// '/' and ':', which are common in paths and harmless in both parts.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9',
			ch == '-', ch == '.', ch == '_', ch == '~', ch == '/', ch == ':':
			b.WriteByte(ch)
		default:
			fmt.Fprintf(&b, "%%%02X", ch)
		}
	}
	return b.String()
}
