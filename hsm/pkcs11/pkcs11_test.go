package pkcs11_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/hsm/pkcs11"
	"github.com/hwsigner/signer/internal/secret"
	"github.com/hwsigner/signer/internal/testhsm"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		uri, token, object, module, pin string
		wantErr                         bool
	}{
		{uri: "pkcs11:token=node0;object=share-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/credentials/signerd.service/hsm-pin",
			token: "node0", object: "share-kek", module: "/usr/lib/softhsm/libsofthsm2.so", pin: "file:/run/credentials/signerd.service/hsm-pin"},
		{uri: "pkcs11:token=my%20token?module-path=/m.so&pin-source=env:HSM_PIN", token: "my token", object: "share-kek", module: "/m.so", pin: "env:HSM_PIN"},
		{uri: "pkcs11:token=a;pin-value=1234?module-path=/m.so&pin-source=env:X", wantErr: true},
		{uri: "pkcs11:token=a?module-path=/m.so&pin-value=1234", wantErr: true},
		{uri: "pkcs11:object=x?module-path=/m.so&pin-source=env:X", wantErr: true},
		{uri: "pkcs11:token=a?pin-source=env:X", wantErr: true},
		{uri: "tpm:device=/dev/tpmrm0", wantErr: true},
		{uri: "pkcs11:token=a;bogus=1?module-path=/m.so&pin-source=env:X", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.uri, func(t *testing.T) {
			cfg, err := pkcs11.ParseURI(tc.uri)
			if tc.wantErr {
				if !errors.Is(err, hsm.ErrBadURI) {
					t.Fatalf("want ErrBadURI, got %v", err)
				}
				if strings.Contains(tc.uri, "1234") && strings.Contains(err.Error(), "1234") {
					t.Fatal("error echoes the PIN")
				}
				return
			}
			if err != nil || cfg.Token != tc.token || cfg.Object != tc.object || cfg.ModulePath != tc.module || cfg.PINSource != tc.pin {
				t.Fatalf("got %+v, %v", cfg, err)
			}
		})
	}
}

func open(t *testing.T, uri string) *pkcs11.Backend {
	t.Helper()
	cfg, err := pkcs11.ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	b, err := pkcs11.Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestSealOpenRotate(t *testing.T) {
	ctx := context.Background()
	b := open(t, testhsm.Token(t, "seal"))
	if err := b.InitKeys(ctx); err != nil {
		t.Fatal(err)
	}
	ex, se, err := b.KeyAttributes(b.ActiveKey())
	if err != nil || ex || !se {
		t.Fatalf("wrapping key attributes: extractable=%v sensitive=%v err=%v", ex, se, err)
	}
	s := hsm.NewSealer(b)
	bind := hsm.Binding{NodeID: "node0", Purpose: "share", WalletID: "w1", KeyType: "secp256k1", Epoch: 1}
	pt := make([]byte, 20<<10)
	_, _ = rand.Read(pt)
	blob, err := s.Seal(ctx, pt, bind)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, pt[:32]) {
		t.Fatal("plaintext in blob")
	}
	// Second init refuses and changes nothing.
	if err := b.InitKeys(ctx); !errors.Is(err, hsm.ErrKeyExists) {
		t.Fatalf("second init: %v", err)
	}
	got, err := s.Open(ctx, blob, bind)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("open: %v", err)
	}
	bad := []struct {
		name string
		blob []byte
		bind hsm.Binding
		want error
	}{
		{"other wallet", blob, hsm.Binding{NodeID: "node0", Purpose: "share", WalletID: "w2", KeyType: "secp256k1", Epoch: 1}, hsm.ErrBindingMismatch},
		{"other node", blob, hsm.Binding{NodeID: "node1", Purpose: "share", WalletID: "w1", KeyType: "secp256k1", Epoch: 1}, hsm.ErrBindingMismatch},
		{"other epoch", blob, hsm.Binding{NodeID: "node0", Purpose: "share", WalletID: "w1", KeyType: "secp256k1", Epoch: 2}, hsm.ErrBindingMismatch},
		{"tampered ciphertext", tamper(t, blob, func(b *hsm.Blob) { b.Ciphertext[5] ^= 1 }), bind, hsm.ErrTampered},
		{"tampered wrapped key", tamper(t, blob, func(b *hsm.Blob) { b.WrappedKey[20] ^= 1 }), bind, hsm.ErrTampered},
		{"binding edited in header", tamper(t, blob, func(b *hsm.Blob) { b.Binding.WalletID = "w2" }), hsm.Binding{NodeID: "node0", Purpose: "share", WalletID: "w2", KeyType: "secp256k1", Epoch: 1}, hsm.ErrTampered},
		{"garbage", []byte("{not json"), bind, hsm.ErrMalformedBlob},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Open(ctx, tc.blob, tc.bind); !errors.Is(err, tc.want) {
				t.Fatalf("want %v, got %v", tc.want, err)
			}
		})
	}
	// Rotation: old blobs still open, rewrap moves them, new seals use v2.
	ref, err := b.RotateKey(ctx)
	if err != nil || ref.Version != 2 {
		t.Fatalf("rotate: %v %v", ref, err)
	}
	if _, err := s.Open(ctx, blob, bind); err != nil {
		t.Fatalf("v1 blob after rotation: %v", err)
	}
	nb, changed, err := s.Rewrap(ctx, blob, bind)
	if err != nil || !changed {
		t.Fatalf("rewrap: %v", err)
	}
	if p, _ := hsm.ParseBlob(nb); p.Key.Version != 2 {
		t.Fatalf("rewrapped to v%d", p.Key.Version)
	}
	if got, err := s.Open(ctx, nb, bind); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("open rewrapped: %v", err)
	}
}

func tamper(t *testing.T, raw []byte, f func(*hsm.Blob)) []byte {
	t.Helper()
	b, err := hsm.ParseBlob(raw)
	if err != nil {
		t.Fatal(err)
	}
	c := *b
	c.Ciphertext = append([]byte(nil), b.Ciphertext...)
	c.WrappedKey = append([]byte(nil), b.WrappedKey...)
	f(&c)
	out, err := jsonMarshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestIdentity(t *testing.T) {
	ctx := context.Background()
	b := open(t, testhsm.Token(t, "ident"))
	if _, err := b.Identity(ctx); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("identity before init: %v", err)
	}
	if err := b.InitKeys(ctx); err != nil {
		t.Fatal(err)
	}
	id, err := b.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("round message"))
	sig, err := id.Sign(rand.Reader, d[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(id.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Fatal("identity signature does not verify")
	}
}

func TestOpenErrors(t *testing.T) {
	uri := testhsm.Token(t, "errs")
	cfg, _ := pkcs11.ParseURI(uri)
	pin, _ := secret.Read(cfg.PINSource)
	tests := []struct {
		name string
		mod  func(c *pkcs11.Config)
		want error
		hint string
	}{
		{"missing module", func(c *pkcs11.Config) { c.ModulePath = "/nonexistent/libpkcs11.so" }, hsm.ErrModuleNotFound, "module-path"},
		{"missing token", func(c *pkcs11.Config) { c.Token = "no-such-token" }, hsm.ErrTokenNotFound, "signerctl init"},
		{"missing pin file", func(c *pkcs11.Config) { c.PINSource = "file:/nonexistent/pin" }, hsm.ErrSecretSource, "path"},
		{"wrong PIN", func(c *pkcs11.Config) {
			p := filepath.Join(t.TempDir(), "pin")
			_ = os.WriteFile(p, []byte("wrong-pin-value"), 0o600)
			c.PINSource = "file:" + p
		}, hsm.ErrWrongPIN, "pin-source"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			tc.mod(&c)
			_, err := pkcs11.Open(context.Background(), c, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("want %v, got %v", tc.want, err)
			}
			if !strings.Contains(err.Error(), tc.hint) {
				t.Fatalf("error %q lacks hint %q", err, tc.hint)
			}
			if strings.Contains(err.Error(), string(pin)) || strings.Contains(err.Error(), "wrong-pin-value") {
				t.Fatal("error contains the PIN")
			}
		})
	}
	// Missing wrapping key: the token opens, but sealing says what to do.
	b := open(t, uri)
	if _, _, err := b.WrapKey(context.Background(), make([]byte, 32), nil); !errors.Is(err, hsm.ErrKeyNotFound) || !strings.Contains(err.Error(), "signerctl init") {
		t.Fatalf("missing wrapping key: %v", err)
	}
	// After a wrong PIN the right one still works (nothing was finalized).
	if err := b.InitKeys(context.Background()); err != nil {
		t.Fatal(err)
	}
}
