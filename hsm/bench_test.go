package hsm_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"path/filepath"
	"testing"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/hsm/pkcs11"
	"github.com/hwsigner/signer/hsm/softkey"
	"github.com/hwsigner/signer/internal/testhsm"
)

// BenchmarkSeal20KiB compares sealing and opening a 20 KiB blob (an ECDSA
// share is ~15 KB) with each backend against plain in-memory AES-GCM.
func BenchmarkSeal20KiB(b *testing.B) {
	ctx := context.Background()
	pt := make([]byte, 20<<10)
	_, _ = rand.Read(pt)
	bind := hsm.Binding{NodeID: "node0", Purpose: "share", WalletID: "w", KeyType: "secp256k1", Epoch: 1}

	b.Run("baseline-aesgcm", func(b *testing.B) {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		blk, _ := aes.NewCipher(key)
		g, _ := cipher.NewGCM(blk)
		nonce := make([]byte, 12)
		b.Run("seal", func(b *testing.B) {
			for b.Loop() {
				_ = g.Seal(nil, nonce, pt, nil)
			}
		})
		ct := g.Seal(nil, nonce, pt, nil)
		b.Run("open", func(b *testing.B) {
			for b.Loop() {
				if _, err := g.Open(nil, nonce, ct, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	backends := map[string]func(b *testing.B) hsm.Backend{
		"software": func(b *testing.B) hsm.Backend {
			dir := filepath.Join(b.TempDir(), "k")
			if err := softkey.Init(dir, "share-kek"); err != nil {
				b.Fatal(err)
			}
			k, err := softkey.Open(nil, dir, "share-kek")
			if err != nil {
				b.Fatal(err)
			}
			return k
		},
		"pkcs11-softhsm2": func(b *testing.B) hsm.Backend {
			cfg, err := pkcs11.ParseURI(testhsm.Token(b, "bench"))
			if err != nil {
				b.Fatal(err)
			}
			k, err := pkcs11.Open(ctx, cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := k.InitKeys(ctx); err != nil {
				b.Fatal(err)
			}
			return k
		},
	}
	for name, mk := range backends {
		b.Run(name, func(b *testing.B) {
			be := mk(b)
			defer be.Close()
			s := hsm.NewSealer(be)
			b.Run("seal", func(b *testing.B) {
				for b.Loop() {
					if _, err := s.Seal(ctx, pt, bind); err != nil {
						b.Fatal(err)
					}
				}
			})
			blob, _ := s.Seal(ctx, pt, bind)
			b.Run("open", func(b *testing.B) {
				for b.Loop() {
					if _, err := s.Open(ctx, blob, bind); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
