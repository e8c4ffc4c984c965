package pkcs11

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/hwsigner/signer/hsm"
)

// Config is a parsed RFC 7512 PKCS#11 URI.
type Config struct {
	ModulePath string // module-path
	Token      string // token label
	Object     string // base label of the wrapping key ("share-kek")
	PINSource  string // pin-source: file:/path, env:NAME or cred:NAME
	SlotID     *int
}

// ParseURI parses e.g.
//
//	pkcs11:token=node0;object=share-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/credentials/signerd.service/hsm-pin
//
// A PIN is never accepted inside the URI (pin-value is refused).
func ParseURI(s string) (Config, error) {
	bad := func(format string, a ...any) (Config, error) {
		return Config{}, hsm.Errorf(hsm.ErrBadURI, "parse pkcs11 URI", "see RFC 7512; e.g. pkcs11:token=node0;object=share-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/path", fmt.Errorf(format, a...))
	}
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return bad("missing pkcs11: scheme")
	}
	path, query, _ := strings.Cut(rest, "?")
	cfg := Config{Object: "share-kek"}
	for _, attr := range strings.Split(path, ";") {
		if attr == "" {
			continue
		}
		k, v, ok := strings.Cut(attr, "=")
		if !ok {
			return bad("path attribute %q has no value", k)
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			return bad("attribute %s: %v", k, err)
		}
		switch k {
		case "token":
			cfg.Token = dv
		case "object":
			cfg.Object = dv
		case "slot-id":
			n, err := strconv.Atoi(dv)
			if err != nil {
				return bad("slot-id %q is not a number", dv)
			}
			cfg.SlotID = &n
		case "pin-value":
			return bad("pin-value is refused: a PIN never goes in a URI; use pin-source=file:/path, env:NAME or cred:NAME")
		case "manufacturer", "model", "serial", "library-description", "library-manufacturer", "library-version", "id", "type":
			// accepted and ignored
		default:
			return bad("unknown path attribute %q", k)
		}
	}
	if query != "" {
		for _, attr := range strings.Split(query, "&") {
			k, v, ok := strings.Cut(attr, "=")
			if !ok {
				return bad("query attribute %q has no value", k)
			}
			dv, err := url.QueryUnescape(v)
			if err != nil {
				return bad("attribute %s: %v", k, err)
			}
			switch k {
			case "module-path":
				cfg.ModulePath = dv
			case "pin-source":
				cfg.PINSource = dv
			case "pin-value":
				return bad("pin-value is refused: a PIN never goes in a URI; use pin-source=file:/path, env:NAME or cred:NAME")
			default:
				return bad("unknown query attribute %q", k)
			}
		}
	}
	if cfg.Token == "" {
		return bad("token= is required")
	}
	if cfg.ModulePath == "" {
		return bad("module-path= is required")
	}
	if cfg.PINSource == "" {
		return bad("pin-source= is required")
	}
	return cfg, nil
}
