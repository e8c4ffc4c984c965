package uri

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/internal/testtpm"
)

// Every scheme: Init creates the keys, Open gives a working backend, a second
// Init is refused without changing anything.
func TestInitOpenEachScheme(t *testing.T) {
	tests := []struct {
		name    string
		uri     func(t *testing.T) string
		backend string
	}{
		{"pkcs11", func(t *testing.T) string { return testhsm.Token(t, "uri") }, "pkcs11"},
		{"tpm", func(t *testing.T) string { return testtpm.Start(t).URI("pcrs=16") }, "tpm"},
		{"software", func(t *testing.T) string { return "software:dir=" + filepath.Join(t.TempDir(), "keys") }, "software"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			u := tc.uri(t)
			if err := Init(ctx, u, nil); err != nil {
				t.Fatalf("init: %v", err)
			}
			if err := Init(ctx, u, nil); !errors.Is(err, hsm.ErrKeyExists) {
				t.Fatalf("second init: %v, want ErrKeyExists", err)
			}
			b, err := Open(ctx, u, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.Backend() != tc.backend || b.ActiveKey().Version != 1 {
				t.Fatalf("backend %s key %s", b.Backend(), b.ActiveKey())
			}
			s := hsm.NewSealer(b)
			bind := hsm.Binding{NodeID: "n0", Purpose: "secret"}
			blob, err := s.Seal(ctx, []byte("x"), bind)
			if err != nil {
				t.Fatal(err)
			}
			if pt, err := s.Open(ctx, blob, bind); err != nil || string(pt) != "x" {
				t.Fatalf("open: %v", err)
			}
			if _, err := b.Identity(ctx); err != nil {
				t.Fatalf("identity: %v", err)
			}
		})
	}
}

func TestOpenBadURI(t *testing.T) {
	for _, u := range []string{"", "kms:foo", "software:/tmp", "tpm:", "pkcs11:"} {
		if _, err := Open(context.Background(), u, nil); !errors.Is(err, hsm.ErrBadURI) {
			t.Errorf("%q: %v, want ErrBadURI", u, err)
		}
	}
}
