package hsm

import "github.com/hwsigner/signer/internal/secret"

// Zero overwrites b with zeros.
//
// Deprecated: use secret.Zero.
func Zero(b []byte) { secret.Zero(b) }
