package hsm_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hwsigner/signer/hsm"
)

// TestHostileSealedBlobs opens each hostile sealed blob of
// docs/hostile-input.md with a software backend and checks the error.
func TestHostileSealedBlobs(t *testing.T) {
	s := fuzzSealer(t)
	seeds := blobSeeds(t, s)
	tests := []struct {
		seed string
		want error
	}{
		{"tampered", hsm.ErrTampered},
		{"other-epoch", hsm.ErrBindingMismatch},
		{"other-backend", hsm.ErrBindingMismatch},
		{"other-key", hsm.ErrKeyNotFound},
		{"format-2", hsm.ErrMalformedBlob},
		{"no-wrapped-key", hsm.ErrMalformedBlob},
		{"not-json", hsm.ErrMalformedBlob},
		{"empty", hsm.ErrMalformedBlob},
	}
	for _, tc := range tests {
		t.Run(tc.seed, func(t *testing.T) {
			if _, err := s.Open(context.Background(), seeds[tc.seed], fuzzBinding); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if pt, err := s.Open(context.Background(), seeds["sealed"], fuzzBinding); err != nil || string(pt) != "share bytes" {
		t.Fatalf("the genuine blob: %q, %v", pt, err)
	}
}
