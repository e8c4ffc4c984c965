package protocol

import "time"

// Operations.
const (
	OpKeygen  = "keygen"
	OpSign    = "sign"
	OpReshare = "reshare"
)

// Key types.
const (
	KeyTypeSecp256k1 = "secp256k1"
	KeyTypeEd25519   = "ed25519"
)

// Limits enforced by Validate, DecodeRequest, VerifyRequest and VerifyResult.
const (
	// MaxMessageSize bounds a raw request or result (NATS's default
	// max_payload is also 1 MiB).
	MaxMessageSize = 1 << 20
	// MaxTxSize bounds an ed25519 message (secp256k1 takes exactly a
	// 32-byte digest).
	MaxTxSize = 64 << 10
	// DigestSize is the length of a secp256k1 signing digest.
	DigestSize = 32
	// MaxRequestTTL bounds expires_at - created_at.
	MaxRequestTTL = 24 * time.Hour
	// MaxDerivationDepth bounds len(derivation_path) (BIP32 depth is a byte).
	MaxDerivationDepth = 255
	// HardenedOffset: derivation indices must be below it (non-hardened).
	HardenedOffset = 1 << 31
	// MaxNodeIDs bounds the size of a reshare committee.
	MaxNodeIDs = 64
	// MaxNetworkCodeLen bounds network_internal_code.
	MaxNetworkCodeLen = 64
	// MaxNesting bounds JSON nesting depth.
	MaxNesting = 32
)

// Domain-separation prefixes of the signed bytes (see
// docs/canonical-encoding.md).
const (
	requestDomainPrefix = "hwsigner/v1/request/"
	ResultDomain        = "hwsigner/v1/result\n"
)

// RequestDomain returns the prefix of the bytes a client signs for op:
// "hwsigner/v1/request/<op>\n".
func RequestDomain(op string) string { return requestDomainPrefix + op + "\n" }

// ValidOp reports whether op is keygen, sign or reshare.
func ValidOp(op string) bool {
	return op == OpKeygen || op == OpSign || op == OpReshare
}

// ValidKeyType reports whether kt is secp256k1 or ed25519.
func ValidKeyType(kt string) bool {
	return kt == KeyTypeSecp256k1 || kt == KeyTypeEd25519
}

// DefaultKeyTypes is what a keygen request with empty key_types creates.
func DefaultKeyTypes() []string { return []string{KeyTypeSecp256k1, KeyTypeEd25519} }
