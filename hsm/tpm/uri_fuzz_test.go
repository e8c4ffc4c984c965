package tpm

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hwsigner/signer/hsm"
)

// FuzzParseURI feeds arbitrary strings to the tpm: URI parser: no panic,
// every error is ErrBadURI, an accepted URI names exactly one of a device and
// a TCP address, a valid object label, an owner NV index and sorted distinct
// PCRs 0-23, and Config.String renders it as a URI that parses back to the
// same config. Seeds: testdata/fuzz/FuzzParseURI.
func FuzzParseURI(f *testing.F) {
	f.Add("tpm:device=/dev/tpmrm0;object=share-kek?pcrs=7")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := ParseURI(s)
		if err != nil {
			if !errors.Is(err, hsm.ErrBadURI) {
				t.Fatalf("error is not ErrBadURI: %v", err)
			}
			return
		}
		if (cfg.Device == "") == (cfg.Addr == "") {
			t.Fatalf("%q: want exactly one of device and address: %+v", s, cfg)
		}
		if cfg.Object == "" || strings.ContainsAny(cfg.Object, "|/") || cfg.NVIndex < 0x01000000 || cfg.NVIndex > 0x013FFFFF {
			t.Fatalf("%q: accepted %+v", s, cfg)
		}
		if !slices.IsSorted(cfg.PCRs) || len(slices.Compact(slices.Clone(cfg.PCRs))) != len(cfg.PCRs) || (len(cfg.PCRs) > 0 && cfg.PCRs[len(cfg.PCRs)-1] > 23) {
			t.Fatalf("%q: PCRs %v", s, cfg.PCRs)
		}
		again, err := ParseURI(cfg.String())
		if err != nil || !reflect.DeepEqual(again, cfg) {
			t.Fatalf("%q renders as %q, which parses to %+v (%v), not %+v", s, cfg.String(), again, err, cfg)
		}
	})
}
