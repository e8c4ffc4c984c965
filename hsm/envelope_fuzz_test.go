package hsm_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/hsm/softkey"
)

// fuzzBinding is what the seeds are sealed to.
var fuzzBinding = hsm.Binding{NodeID: "node0", Purpose: "share", WalletID: "w-1", KeyType: "secp256k1", Epoch: 1}

// fuzzPlaintexts are the only plaintexts sealed under the fixed key.
var fuzzPlaintexts = [][]byte{[]byte("share bytes"), []byte("x")}

// fuzzSealer is a software backend whose wrapping key is fixed, so that the
// committed seeds open in every run.
func fuzzSealer(t testing.TB) *hsm.Sealer {
	dir := t.TempDir()
	key := sha256.Sum256([]byte("fuzz software kek"))
	if err := os.WriteFile(filepath.Join(dir, "share-kek.v1.key"), key[:], 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := softkey.Open(nil, dir, "share-kek")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return hsm.NewSealer(b)
}

func blobSeeds(t testing.TB, s *hsm.Sealer) map[string][]byte {
	ctx := context.Background()
	seal := func(pt []byte, b hsm.Binding) []byte {
		raw, err := s.Seal(ctx, pt, b)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	good := seal(fuzzPlaintexts[0], fuzzBinding)
	other := fuzzBinding
	other.Epoch = 2
	flip := bytes.Replace(good, []byte(`"ciphertext":"`), []byte(`"ciphertext":"AAAA`), 1)
	return map[string][]byte{
		"sealed":           good,
		"sealed-short":     seal(fuzzPlaintexts[1], fuzzBinding),
		"other-epoch":      seal(fuzzPlaintexts[0], other),
		"tampered":         flip,
		"format-2":         bytes.Replace(good, []byte(`"format":1`), []byte(`"format":2`), 1),
		"other-backend":    bytes.Replace(good, []byte(`"backend":"software"`), []byte(`"backend":"pkcs11"`), 1),
		"other-key":        bytes.Replace(good, []byte(`"version":1`), []byte(`"version":7`), 1),
		"no-wrapped-key":   []byte(`{"format":1,"backend":"software","key":{"label":"share-kek","version":1},"binding":{},"wrapped_key":"","nonce":"AAAAAAAAAAAAAAAA","ciphertext":"AAAAAAAAAAAAAAAAAAAAAA=="}`),
		"not-json":         []byte("\x00\x01sealed"),
		"empty":            {},
		"huge-format":      []byte(`{"format":1e999}`),
		"newline-base64":   bytes.Replace(good, []byte(`"nonce":"`), []byte(`"nonce":"\n`), 1),
		"case-folded-keys": []byte(strings.ReplaceAll(string(good), `"binding"`, `"BINDING"`)),
	}
}

// FuzzOpenBlob feeds arbitrary bytes to ParseBlob and Sealer.Open (software
// backend): no panic, every error is a typed hsm error, and a blob opens only
// when it is authentic: sealed under this key to this binding, giving back
// one of the plaintexts that were sealed. A blob never opens under another
// binding. Sealing the input as plaintext and opening it gives it back.
func FuzzOpenBlob(f *testing.F) {
	s := fuzzSealer(f)
	seeds := blobSeeds(f, s)
	if os.Getenv("WRITE_FUZZ_SEEDS") != "" {
		dir := filepath.Join("testdata", "fuzz", "FuzzOpenBlob")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			f.Fatal(err)
		}
		for name, b := range seeds {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644); err != nil {
				f.Fatal(err)
			}
		}
	}
	for _, b := range seeds {
		f.Add(b)
	}
	ctx := context.Background()
	other := fuzzBinding
	other.WalletID = "w-2"
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, perr := hsm.ParseBlob(raw)
		if perr != nil && !errors.Is(perr, hsm.ErrMalformedBlob) {
			t.Fatalf("ParseBlob error is not ErrMalformedBlob: %v", perr)
		}
		if perr == nil && (b.Format != hsm.FormatVersion || len(b.Nonce) != 12 || len(b.WrappedKey) == 0) {
			t.Fatalf("ParseBlob accepted %+v", b)
		}
		pt, err := s.Open(ctx, raw, fuzzBinding)
		if err != nil {
			typed := false
			for _, kind := range []error{hsm.ErrMalformedBlob, hsm.ErrBindingMismatch, hsm.ErrTampered, hsm.ErrKeyNotFound} {
				typed = typed || errors.Is(err, kind)
			}
			if !typed {
				t.Fatalf("Open error is not a typed hsm error: %v", err)
			}
		} else {
			known := false
			for _, p := range fuzzPlaintexts {
				known = known || bytes.Equal(p, pt)
			}
			if !known || perr != nil || b.Binding != fuzzBinding {
				t.Fatalf("opened an inauthentic blob: %q", pt)
			}
		}
		if _, err := s.Open(ctx, raw, other); err == nil {
			t.Fatal("a blob opened under another binding")
		}
		if _, _, err := s.Rewrap(ctx, raw, fuzzBinding); err != nil && pt != nil {
			t.Fatalf("Rewrap refused a blob that opens: %v", err)
		}
		sealed, err := s.Seal(ctx, raw, fuzzBinding)
		if err != nil {
			t.Fatal(err)
		}
		back, err := s.Open(ctx, sealed, fuzzBinding)
		if err != nil || !bytes.Equal(back, raw) {
			t.Fatalf("seal/open round trip: %v", err)
		}
	})
}
