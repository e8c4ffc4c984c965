package tpm

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/hwsigner/signer/hsm"
)

// Config is a parsed tpm: URI.
type Config struct {
	// Device is the TPM character device (/dev/tpmrm0, the kernel's resource
	// manager, is the one to use). Empty when Addr is set.
	Device string
	// Addr is host:port of a TPM that speaks raw TPM 2.0 commands over TCP
	// (swtpm's --server port). Empty when Device is set.
	Addr string
	// Object is the base label of the wrapping key ("share-kek"). Each
	// version's storage key is derived from it.
	Object string
	// PCRs, when not empty, bind every data key sealed from now on to the
	// current values of these SHA-256 PCRs (TPM2_PolicyPCR).
	PCRs []uint
	// NVIndex is the owner NV index that records the active key version.
	NVIndex uint32
}

// hint for every URI error.
const uriHint = "e.g. tpm:device=/dev/tpmrm0;object=share-kek?pcrs=7 or tpm:host=127.0.0.1;port=2321 (swtpm)"

// nvBase is the start of the block of the owner NV range (0x01000000 to
// 0x013FFFFF) this package uses; the default index is nvBase plus 16 bits of
// SHA-256(object), so that two objects on one TPM do not collide.
const nvBase = 0x013A0000

// DefaultNVIndex is the NV index used for an object when the URI does not
// name one.
func DefaultNVIndex(object string) uint32 {
	h := sha256.Sum256([]byte("signerd key version|" + object))
	return nvBase | uint32(binary.BigEndian.Uint16(h[:2]))
}

// ParseURI parses a tpm: URI:
//
//	tpm:device=/dev/tpmrm0;object=share-kek?pcrs=7
//	tpm:host=127.0.0.1;port=2321;object=share-kek?pcrs=16&nv-index=0x01500001
//
// The owner hierarchy must have an empty authorization value (the Linux
// default); a TPM whose owner auth is set is refused with a clear error at use.
func ParseURI(s string) (Config, error) {
	bad := func(format string, a ...any) (Config, error) {
		return Config{}, hsm.Errorf(hsm.ErrBadURI, "parse tpm URI", uriHint, fmt.Errorf(format, a...))
	}
	attrs, err := hsm.SplitURI(s, "tpm")
	if err != nil {
		return bad("%v", err)
	}
	cfg := Config{Object: "share-kek"}
	var host, port string
	for _, a := range attrs {
		k, dv := a.Key, a.Value
		switch {
		case !a.Query && k == "device":
			cfg.Device = dv
		case !a.Query && k == "host":
			host = dv
		case !a.Query && k == "port":
			port = dv
		case !a.Query && k == "object":
			cfg.Object = dv
		case a.Query && k == "pcrs":
			pcrs, err := parsePCRs(dv)
			if err != nil {
				return bad("pcrs: %v", err)
			}
			cfg.PCRs = pcrs
		case a.Query && k == "nv-index":
			n, err := strconv.ParseUint(dv, 0, 32)
			if err != nil || n < 0x01000000 || n > 0x013FFFFF {
				return bad("nv-index %q: want an owner NV index in 0x01000000-0x013FFFFF", dv)
			}
			cfg.NVIndex = uint32(n)
		case a.Query:
			return bad("unknown query attribute %q", k)
		default:
			return bad("unknown path attribute %q", k)
		}
	}
	switch {
	case cfg.Device != "" && (host != "" || port != ""):
		return bad("give either device= or host= and port=, not both")
	case cfg.Device == "" && host == "" && port == "":
		return bad("device= (or host= and port= for swtpm) is required")
	case cfg.Device == "":
		if host == "" || port == "" {
			return bad("host= and port= go together")
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || strconv.Itoa(n) != port {
			return bad("port %q is not a TCP port", port)
		}
		cfg.Addr = net.JoinHostPort(host, port)
		if h, _, err := net.SplitHostPort(cfg.Addr); err != nil || h != host {
			return bad("host %q is not a host name or IP address", host)
		}
	}
	if cfg.Object == "" || strings.ContainsAny(cfg.Object, "|/") {
		return bad("object %q: want a non-empty label without | or /", cfg.Object)
	}
	if cfg.NVIndex == 0 {
		cfg.NVIndex = DefaultNVIndex(cfg.Object)
	}
	return cfg, nil
}

func parsePCRs(s string) ([]uint, error) {
	var out []uint
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 8)
		if err != nil || n > 23 {
			return nil, fmt.Errorf("%q is not a PCR index 0-23", f)
		}
		if !slices.Contains(out, uint(n)) {
			out = append(out, uint(n))
		}
	}
	slices.Sort(out)
	return out, nil
}

// String renders cfg back as a URI (no secrets are ever in one).
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("tpm:")
	if c.Device != "" {
		b.WriteString("device=" + escapePathValue(c.Device))
	} else {
		h, p, _ := net.SplitHostPort(c.Addr)
		b.WriteString("host=" + escapePathValue(h) + ";port=" + escapePathValue(p))
	}
	b.WriteString(";object=" + escapePathValue(c.Object))
	var q []string
	if len(c.PCRs) > 0 {
		ps := make([]string, len(c.PCRs))
		for i, p := range c.PCRs {
			ps[i] = strconv.Itoa(int(p))
		}
		q = append(q, "pcrs="+strings.Join(ps, ","))
	}
	if c.NVIndex != DefaultNVIndex(c.Object) {
		q = append(q, fmt.Sprintf("nv-index=0x%08x", c.NVIndex))
	}
	if len(q) > 0 {
		b.WriteString("?" + strings.Join(q, "&"))
	}
	return b.String()
}

// escapePathValue escapes what would end a path attribute's value or be
// unescaped by ParseURI, so that String parses back to the same Config.
var escapePathValue = strings.NewReplacer("%", "%25", ";", "%3B", "?", "%3F").Replace
