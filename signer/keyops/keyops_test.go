package keyops

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/hsm/uri"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/internal/testtpm"
	"github.com/hwsigner/signer/signer/store"
)

// A store full of sealed values (shares, pre-params, a secret) is rotated on
// each hardware backend: every value moves to v2 and still opens.
func TestRotateMovesEverything(t *testing.T) {
	tests := []struct {
		name string
		uri  func(t *testing.T) string
	}{
		{"pkcs11", func(t *testing.T) string { return testhsm.Token(t, "rot") }},
		{"tpm", func(t *testing.T) string { return testtpm.Start(t).URI("pcrs=16") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			u := tc.uri(t)
			if err := uri.Init(ctx, u, nil); err != nil {
				t.Fatal(err)
			}
			b, err := uri.Open(ctx, u, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			st, err := store.Open(filepath.Join(t.TempDir(), "node.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			s := hsm.NewSealer(b)

			type item struct {
				bind hsm.Binding
				pt   string
				get  func() []byte
			}
			var items []item
			for i := 0; i < 3; i++ {
				w := fmt.Sprint("w", i)
				bind := hsm.Binding{NodeID: "n0", Purpose: "share", WalletID: w, KeyType: "ed25519", Epoch: 1}
				blob, err := s.Seal(ctx, []byte("share "+w), bind)
				if err != nil {
					t.Fatal(err)
				}
				if err := st.PutShare(store.WalletMeta{WalletID: w, KeyType: "ed25519", Epoch: 1, Threshold: 1, Committee: []string{"n0", "n1"}}, blob); err != nil {
					t.Fatal(err)
				}
				items = append(items, item{bind, "share " + w, func() []byte { _, raw, _ := st.Share(w, "ed25519"); return raw }})
			}
			id, _ := st.NextPoolID()
			pbind := hsm.Binding{NodeID: "n0", Purpose: "preparams", Epoch: id}
			pblob, _ := s.Seal(ctx, []byte("preparams"), pbind)
			if err := st.PushPreParams(id, pblob); err != nil {
				t.Fatal(err)
			}
			sbind := hsm.Binding{NodeID: "n0", Purpose: "secret", WalletID: "nats"}
			sblob, _ := s.Seal(ctx, []byte("secret"), sbind)
			if err := st.PutSecret("nats", sblob); err != nil {
				t.Fatal(err)
			}
			items = append(items, item{sbind, "secret", func() []byte { raw, _ := st.Secret("nats"); return raw }})

			calls := 0
			from, to, moved, err := Rotate(ctx, b.(Rotator), st, func(int) { calls++ })
			if err != nil {
				t.Fatal(err)
			}
			if from.Version != 1 || to.Version != 2 || moved != 5 || calls != 5 {
				t.Fatalf("rotate %s -> %s moved %d (progress %d), want v1 -> v2, 5", from, to, moved, calls)
			}
			for _, it := range items {
				raw := it.get()
				pb, err := hsm.ParseBlob(raw)
				if err != nil || pb.Key != to {
					t.Fatalf("%s: on %v (%v)", it.bind.WalletID, pb, err)
				}
				if pt, err := s.Open(ctx, raw, it.bind); err != nil || string(pt) != it.pt {
					t.Fatalf("%s: open after rotate: %v", it.bind.WalletID, err)
				}
			}
			_, raw, err := st.PopPreParams()
			if err != nil {
				t.Fatal(err)
			}
			if pt, err := s.Open(ctx, raw, pbind); err != nil || string(pt) != "preparams" {
				t.Fatalf("pre-params after rotate: %v", err)
			}
			// Nothing left to move: a second rewrap is a no-op.
			if n, err := Rewrap(ctx, b, st, nil); err != nil || n != 0 {
				t.Fatalf("second rewrap moved %d: %v", n, err)
			}
		})
	}
}
