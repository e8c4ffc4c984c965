// Package uri opens a sealing backend from its URI: one scheme per backend.
//
//	pkcs11:token=node0;object=share-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/path
//	tpm:device=/dev/tpmrm0;object=share-kek?pcrs=7
//	tpm:host=127.0.0.1;port=2321   (swtpm, for tests and CI)
//	software:dir=/var/lib/signerd/insecure-keys   (INSECURE, development only)
package uri

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/hsm/pkcs11"
	"github.com/hwsigner/signer/hsm/softkey"
	"github.com/hwsigner/signer/hsm/tpm"
)

// Initer is a backend whose keys can be created by `signerctl init`.
type Initer interface {
	InitKeys(ctx context.Context) error
}

// Open opens the backend named by u.
func Open(ctx context.Context, u string, logger *slog.Logger) (hsm.Backend, error) {
	scheme, _, _ := strings.Cut(u, ":")
	switch scheme {
	case "pkcs11":
		cfg, err := pkcs11.ParseURI(u)
		if err != nil {
			return nil, err
		}
		return pkcs11.Open(ctx, cfg, logger)
	case "software":
		dir, err := softwareDir(u)
		if err != nil {
			return nil, err
		}
		b, err := softkey.Open(logger, dir, "share-kek")
		if err != nil {
			return nil, err
		}
		return b, nil
	case "tpm":
		cfg, err := tpm.ParseURI(u)
		if err != nil {
			return nil, err
		}
		return tpm.Open(ctx, cfg, logger)
	default:
		return nil, hsm.Errorf(hsm.ErrBadURI, "open key backend", "use pkcs11:..., tpm:... or software:dir=... (development only)", fmt.Errorf("unknown scheme %q", scheme))
	}
}

// Init creates the backend's wrapping and identity keys, refusing to
// overwrite existing ones.
func Init(ctx context.Context, u string, logger *slog.Logger) error {
	if strings.HasPrefix(u, "software:") {
		dir, err := softwareDir(u)
		if err != nil {
			return err
		}
		return softkey.Init(dir, "share-kek")
	}
	b, err := Open(ctx, u, logger)
	if err != nil {
		return err
	}
	defer b.Close()
	in, ok := b.(Initer)
	if !ok {
		return hsm.Errorf(hsm.ErrUnsupported, "init keys", "", nil)
	}
	return in.InitKeys(ctx)
}

func softwareDir(u string) (string, error) {
	rest := strings.TrimPrefix(u, "software:")
	dir, ok := strings.CutPrefix(rest, "dir=")
	if !ok || dir == "" {
		return "", hsm.Errorf(hsm.ErrBadURI, "parse software URI", "use software:dir=/path", fmt.Errorf("%q", u))
	}
	return dir, nil
}
