// Package keyops runs the operator's key operations on a stopped node: rotate
// the hardware wrapping key and move every sealed value in the node's store to
// the new version.
package keyops

import (
	"context"
	"fmt"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/signer/store"
)

// Rewrap moves every sealed value in st (shares, pre-params, secrets) to w's
// active key version, without decrypting anything outside the sealing layer.
// Values already on the active version are left alone, so an interrupted run
// can simply be run again. progress, if not nil, is called after each value
// that moved. It returns how many values moved.
func Rewrap(ctx context.Context, w hsm.Wrapper, st *store.Store, progress func(moved int)) (int, error) {
	s := hsm.NewSealer(w)
	moved := 0
	n, err := st.RewrapAll(func(raw []byte) ([]byte, bool, error) {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		blob, err := hsm.ParseBlob(raw)
		if err != nil {
			return nil, false, err
		}
		out, changed, err := s.Rewrap(ctx, raw, blob.Binding)
		if err == nil && changed {
			moved++
			if progress != nil {
				progress(moved)
			}
		}
		return out, changed, err
	})
	if err != nil {
		return n, fmt.Errorf("rewrap %s to %s: %w (values already moved stay moved; run `signerctl key rewrap` again)", st.Path(), w.ActiveKey(), err)
	}
	return n, nil
}

// Rotator is a backend whose wrapping key can be rotated.
type Rotator interface {
	hsm.Wrapper
	hsm.Rotator
}

// Rotate creates a new wrapping-key version, makes it active and rewraps the
// store to it. Older versions stay in the hardware, so a blob missed by an
// interrupted rewrap still opens.
func Rotate(ctx context.Context, r Rotator, st *store.Store, progress func(moved int)) (from, to hsm.KeyRef, moved int, err error) {
	from = r.ActiveKey()
	to, err = r.RotateKey(ctx)
	if err != nil {
		return from, from, 0, fmt.Errorf("rotate %s: %w", from, err)
	}
	moved, err = Rewrap(ctx, r, st, progress)
	return from, to, moved, err
}
