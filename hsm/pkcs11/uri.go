package pkcs11

import (
	"fmt"
	"strconv"

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
	attrs, err := hsm.SplitURI(s, "pkcs11")
	if err != nil {
		return bad("%v", err)
	}
	cfg := Config{Object: "share-kek"}
	for _, a := range attrs {
		k, dv := a.Key, a.Value
		switch {
		case k == "pin-value":
			return bad("pin-value is refused: a PIN never goes in a URI; use pin-source=file:/path, env:NAME or cred:NAME")
		case !a.Query && k == "token":
			cfg.Token = dv
		case !a.Query && k == "object":
			cfg.Object = dv
		case !a.Query && k == "slot-id":
			n, err := strconv.Atoi(dv)
			if err != nil {
				return bad("slot-id %q is not a number", dv)
			}
			cfg.SlotID = &n
		case !a.Query && (k == "manufacturer" || k == "model" || k == "serial" || k == "library-description" || k == "library-manufacturer" || k == "library-version" || k == "id" || k == "type"):
			// accepted and ignored
		case a.Query && k == "module-path":
			cfg.ModulePath = dv
		case a.Query && k == "pin-source":
			cfg.PINSource = dv
		case a.Query:
			return bad("unknown query attribute %q", k)
		default:
			return bad("unknown path attribute %q", k)
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
