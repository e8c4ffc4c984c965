// Package hsm seals the node's secrets (threshold shares, Paillier pre-params,
// anything else it keeps) under a key that never leaves hardware, and gives the
// node an identity signing key that lives in the same hardware.
//
// One small interface, Wrapper, is implemented once per backend: PKCS#11
// (package hsm/pkcs11), TPM 2.0 (hsm/tpm) and an explicitly insecure software
// backend for development (hsm/softkey). Package hsm/uri opens a backend from
// its URI. The envelope format (Sealer) is shared by all of them: each blob is
// AES-256-GCM under a fresh data key, and only the data key is wrapped by the
// hardware.
package hsm

import (
	"context"
	"crypto"
	"fmt"
)

// KeyRef names one version of a backend's wrapping key. It is recorded in
// every blob, so that a blob sealed before a rotation still opens.
type KeyRef struct {
	Label   string `json:"label"`
	Version uint32 `json:"version"`
}

func (k KeyRef) String() string { return fmt.Sprintf("%s/v%d", k.Label, k.Version) }

// Wrapper wraps and unwraps 32-byte data keys under a key held by hardware.
// Implementations are safe for concurrent use.
type Wrapper interface {
	// Backend names the backend ("pkcs11", "tpm", "software").
	Backend() string
	// ActiveKey is the wrapping key version that new blobs use.
	ActiveKey() KeyRef
	// WrapKey wraps dataKey under the active key; aad is bound to the result
	// where the backend supports it.
	WrapKey(ctx context.Context, dataKey, aad []byte) (KeyRef, []byte, error)
	// UnwrapKey recovers a data key wrapped under ref.
	UnwrapKey(ctx context.Context, ref KeyRef, wrapped, aad []byte) ([]byte, error)
	// Close releases the backend's sessions and handles.
	Close() error
}

// Rotator is a Wrapper whose key can be rotated: RotateKey creates a new
// version and makes it active. Older versions stay usable for UnwrapKey.
type Rotator interface {
	RotateKey(ctx context.Context) (KeyRef, error)
}

// IdentityProvider gives the node's identity key: an ECDSA P-256 key generated
// inside the hardware, used to sign round messages and results.
type IdentityProvider interface {
	Identity(ctx context.Context) (crypto.Signer, error)
}

// Backend is everything a node needs from its hardware.
type Backend interface {
	Wrapper
	Rotator
	IdentityProvider
}
