package pkcs11_test

import (
	"errors"

	"testing"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/hsm/pkcs11"
)

// FuzzParseURI feeds arbitrary strings to the PKCS#11 URI parser: no panic,
// every error is ErrBadURI, an accepted URI names a token, a module and a PIN
// source, and a pin-value attribute is never accepted. Seeds:
// testdata/fuzz/FuzzParseURI.
func FuzzParseURI(f *testing.F) {
	f.Add("pkcs11:token=node0;object=share-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/signerd/hsm-pin")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := pkcs11.ParseURI(s)
		if err != nil {
			if !errors.Is(err, hsm.ErrBadURI) {
				t.Fatalf("error is not ErrBadURI: %v", err)
			}
			return
		}
		if cfg.Token == "" || cfg.ModulePath == "" || cfg.PINSource == "" {
			t.Fatalf("accepted %q without token, module or PIN source: %+v", s, cfg)
		}
		attrs, err := hsm.SplitURI(s, "pkcs11")
		if err != nil {
			t.Fatalf("accepted %q that does not split: %v", s, err)
		}
		for _, a := range attrs {
			if a.Key == "pin-value" {
				t.Fatalf("accepted a pin-value in %q", s)
			}
		}
	})
}
