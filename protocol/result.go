package protocol

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Result types.
const (
	ResultSuccess = "success"
	ResultError   = "error"
)

// Result is what a node publishes on the client's result subject, for every
// operation. Binary values are lowercase hex.
type Result struct {
	Op          string `json:"op"`
	ResultType  string `json:"result_type"`
	ErrorCode   string `json:"error_code,omitempty"`
	ErrorReason string `json:"error_reason,omitempty"`
	IsTimeout   bool   `json:"is_timeout"`

	// Ids of the request.
	RequestID string `json:"request_id"`
	ClientID  string `json:"client_id"`
	WalletID  string `json:"wallet_id,omitempty"`
	TxID      string `json:"tx_id,omitempty"`
	SessionID string `json:"session_id,omitempty"`
	KeyType   string `json:"key_type,omitempty"`
	// KeyID is the requesting client key's id (KeyID of its public key),
	// so that a client can tell a result for another key from its own.
	KeyID string `json:"key_id,omitempty"`

	// Keygen: public keys (secp256k1 compressed SEC1, ed25519 32 bytes).
	ECDSAPubKey string `json:"ecdsa_pub_key,omitempty"`
	EdDSAPubKey string `json:"eddsa_pub_key,omitempty"`

	// Sign: R and S are 32 bytes each, zero-padded (secp256k1). Signature
	// is R||S for secp256k1 and the 64-byte signature for ed25519.
	R                 string `json:"r,omitempty"`
	S                 string `json:"s,omitempty"`
	SignatureRecovery int    `json:"signature_recovery"`
	Signature         string `json:"signature,omitempty"`

	// Reshare.
	PubKey       string `json:"pub_key,omitempty"`
	NewThreshold int    `json:"new_threshold,omitempty"`

	// NodeID published the result; NodeSignature is its identity key's
	// signature (base64) over ResultDomain and the canonical encoding of
	// every other member.
	NodeID        string `json:"node_id"`
	NodeSignature string `json:"node_signature,omitempty"`
}

// NewResult returns a success result carrying req's ids.
func NewResult(req Request) *Result {
	env := req.Env()
	res := &Result{
		Op:         req.Operation(),
		ResultType: ResultSuccess,
		RequestID:  env.RequestID,
		ClientID:   env.ClientID,
		KeyID:      env.KeyID,
	}
	switch r := req.(type) {
	case *KeygenRequest:
		res.WalletID = r.WalletID
	case *SigningRequest:
		res.WalletID, res.TxID, res.KeyType = r.WalletID, r.TxID, r.KeyType
	case *ReshareRequest:
		res.WalletID, res.SessionID, res.KeyType = r.WalletID, r.SessionID, r.KeyType
		res.NewThreshold = r.NewThreshold
	}
	return res
}

// SetError turns r into an error result. IsTimeout is set for CodeTimeout.
func (r *Result) SetError(code, reason string) {
	r.ResultType = ResultError
	r.ErrorCode = code
	r.ErrorReason = reason
	r.IsTimeout = code == CodeTimeout
}

// Succeeded reports whether the result type is success.
func (r *Result) Succeeded() bool { return r.ResultType == ResultSuccess }

// SetECDSASignature fills R, S (32-byte zero-padded hex), Signature (R||S)
// and SignatureRecovery from big-endian r and s of at most 32 bytes.
func (r *Result) SetECDSASignature(rb, sb []byte, recovery int) error {
	rh, err := hexScalar(rb)
	if err != nil {
		return fmt.Errorf("r: %w", err)
	}
	sh, err := hexScalar(sb)
	if err != nil {
		return fmt.Errorf("s: %w", err)
	}
	if recovery < 0 || recovery > 3 {
		return fmt.Errorf("protocol: recovery id %d, want 0..3", recovery)
	}
	r.R, r.S, r.Signature, r.SignatureRecovery = rh, sh, rh+sh, recovery
	return nil
}

// SetEdDSASignature fills Signature with a 64-byte ed25519 signature.
func (r *Result) SetEdDSASignature(sig []byte) error {
	if len(sig) != 64 {
		return fmt.Errorf("protocol: ed25519 signature of %d bytes, want 64", len(sig))
	}
	r.Signature = hex.EncodeToString(sig)
	return nil
}

func hexScalar(b []byte) (string, error) {
	for len(b) > 32 && b[0] == 0 {
		b = b[1:]
	}
	if len(b) > 32 {
		return "", fmt.Errorf("protocol: scalar of %d bytes, want at most 32", len(b))
	}
	var buf [32]byte
	copy(buf[32-len(b):], b)
	return hex.EncodeToString(buf[:]), nil
}

// SignResult sets res.NodeID, signs the result with the node's identity key
// and returns it as canonical JSON, ready to publish. res.NodeSignature is
// set too.
func SignResult(ctx context.Context, signer crypto.Signer, nodeID string, res *Result) ([]byte, error) {
	if err := ValidToken(nodeID); err != nil {
		return nil, fmt.Errorf("protocol: node id: %w", err)
	}
	if res == nil {
		return nil, fmt.Errorf("%w: nil result", ErrMalformed)
	}
	res.NodeID, res.NodeSignature = nodeID, ""
	raw, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	obj, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	sig, err := signBytes(ctx, signer, signingInput(ResultDomain, obj, "node_signature"))
	if err != nil {
		return nil, err
	}
	res.NodeSignature = base64.StdEncoding.EncodeToString(sig)
	obj["node_signature"] = res.NodeSignature
	return appendCanonical(nil, obj), nil
}

// VerifyResult parses a raw result and checks its node signature against
// nodeKeys (node ID -> identity public key). It fails with ErrUnknownNode
// when node_id is not in nodeKeys, ErrInvalidSignature when the signature is
// missing or wrong, and ErrMalformed or ErrTooLarge for unacceptable JSON.
func VerifyResult(raw []byte, nodeKeys map[string]crypto.PublicKey) (*Result, error) {
	var res Result
	obj, err := decodeTyped(raw, &res)
	if err != nil {
		return nil, err
	}
	pub, ok := nodeKeys[res.NodeID]
	if !ok || res.NodeID == "" {
		return nil, fmt.Errorf("%w: %q", ErrUnknownNode, res.NodeID)
	}
	if pub, err = normalizePublicKey(pub); err != nil {
		return nil, err
	}
	if err := verifyMember(obj, "node_signature", pub, ResultDomain); err != nil {
		return nil, fmt.Errorf("node %s: %w", res.NodeID, err)
	}
	return &res, nil
}

// DecodeResult parses a raw result WITHOUT verifying its node signature
// (logging, relays that pass results through unchanged).
func DecodeResult(raw []byte) (*Result, error) {
	var res Result
	if _, err := decodeTyped(raw, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
