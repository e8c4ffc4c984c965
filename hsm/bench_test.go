package hsm_test

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"path/filepath"
	"testing"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/hsm/uri"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/internal/testtpm"
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
	for _, bk := range benchBackends {
		b.Run(bk.name, func(b *testing.B) {
			be := openBench(b, bk.uri(b))
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

// benchBackends names each backend by its URI, initialised and opened as
// signerd does.
var benchBackends = []struct {
	name string
	uri  func(b *testing.B) string
}{
	{"software", func(b *testing.B) string { return "software:dir=" + filepath.Join(b.TempDir(), "k") }},
	{"pkcs11-softhsm2", func(b *testing.B) string { return testhsm.Token(b, "bench") }},
	{"tpm-swtpm", func(b *testing.B) string { return testtpm.Start(b).URI("") }},
	{"tpm-swtpm-pcr16", func(b *testing.B) string { return testtpm.Start(b).URI("pcrs=16") }},
}

func openBench(b *testing.B, u string) hsm.Backend {
	ctx := context.Background()
	if err := uri.Init(ctx, u, nil); err != nil {
		b.Fatal(err)
	}
	be, err := uri.Open(ctx, u, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	return be
}

// BenchmarkIdentitySign measures one identity-key signature (every round
// message a node sends carries one).
func BenchmarkIdentitySign(b *testing.B) {
	d := sha256.Sum256([]byte("round message"))
	for _, bk := range benchBackends[:3] {
		b.Run(bk.name, func(b *testing.B) {
			id, err := openBench(b, bk.uri(b)).Identity(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := id.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
