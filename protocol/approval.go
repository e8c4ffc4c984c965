package protocol

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// ApprovalDomain prefixes the bytes an approver signs (see
// docs/canonical-encoding.md §9).
const ApprovalDomain = "hwsigner/v1/approval\n"

// MaxApprovals bounds len(approvals) in a request.
const MaxApprovals = 16

// Approval is one approver's consent to one exact request: a signature by
// the approver's key over ApprovalSigningInput, which binds the approver's
// ID, the approval's own expiry and the request's RequestDigest. Approvals
// travel in the request's "approvals" member, which the client's signature
// covers; the digest leaves out "approvals" and "signature", so approvers
// approve the request before the client signs it.
type Approval struct {
	// ApproverID names the approver in the node policy (a token).
	ApproverID string `json:"approver_id"`
	// ExpiresAt is Unix milliseconds, at most the request's expires_at.
	ExpiresAt int64 `json:"expires_at"`
	// Signature is base64 (standard, padded) over ApprovalSigningInput.
	Signature string `json:"signature"`
}

// Expires returns expires_at as a time.
func (a Approval) Expires() time.Time { return time.UnixMilli(a.ExpiresAt).UTC() }

// approvalMembers are the members of one approval, nothing else.
var approvalMembers = map[string]bool{"approver_id": true, "expires_at": true, "signature": true}

// RequestDigest returns SHA-256 over RequestDomain(op) followed by the
// canonical encoding of the request without its "approvals" and "signature"
// members: the request an approval approves. Every other member is covered
// (request_id, client_id, key_id, times, tx, ...), so an approval of one
// request never approves another.
func RequestDigest(raw []byte) ([32]byte, error) {
	obj, err := parseObject(raw)
	if err != nil {
		return [32]byte{}, err
	}
	return requestDigest(obj)
}

func requestDigest(obj map[string]any) ([32]byte, error) {
	op, err := stringMember(obj, "op")
	if err != nil {
		return [32]byte{}, err
	}
	if !ValidOp(op) {
		return [32]byte{}, fmt.Errorf("%w: %q", ErrUnknownOp, op)
	}
	rest := make(map[string]any, len(obj))
	for k, v := range obj {
		if k != "approvals" && k != "signature" {
			rest[k] = v
		}
	}
	b := append([]byte(RequestDomain(op)), appendCanonicalObject(nil, rest, "")...)
	return sha256.Sum256(b), nil
}

// ApprovalSigningInput returns the bytes an approver signs: ApprovalDomain
// followed by the canonical encoding of
// {"approver_id":…,"expires_at":…,"request_digest":"<lowercase hex>"}.
func ApprovalSigningInput(digest [32]byte, approverID string, expiresAt int64) []byte {
	obj := map[string]any{
		"approver_id":    approverID,
		"expires_at":     json.Number(fmt.Sprint(expiresAt)),
		"request_digest": hex.EncodeToString(digest[:]),
	}
	return appendCanonicalObject([]byte(ApprovalDomain), obj, "")
}

// SignApproval approves the request raw (signed or not: its "approvals" and
// "signature" members are ignored) as approverID with signer (Ed25519 or
// ECDSA P-256), until expires (truncated to milliseconds). expires must not
// be after the request's expires_at (ErrInvalidRequest); raw must be a
// request this package accepts (ErrMalformed, ErrUnknownOp).
func SignApproval(ctx context.Context, signer crypto.Signer, approverID string, expires time.Time, raw []byte) (Approval, error) {
	if err := ValidToken(approverID); err != nil {
		return Approval{}, fieldErr("approver_id", "invalid", err)
	}
	obj, err := parseObject(raw)
	if err != nil {
		return Approval{}, err
	}
	digest, err := requestDigest(obj)
	if err != nil {
		return Approval{}, err
	}
	reqExp, ok := obj["expires_at"].(json.Number)
	if !ok {
		return Approval{}, malformed("request has no integer expires_at")
	}
	limit, err := reqExp.Int64()
	if err != nil {
		return Approval{}, malformed("request expires_at: %v", err)
	}
	exp := expires.UnixMilli()
	if exp > limit {
		return Approval{}, fieldErr("expires_at", fmt.Sprintf("approval expires at %s, after the request (%s)",
			expires.UTC().Format(time.RFC3339Nano), time.UnixMilli(limit).UTC().Format(time.RFC3339Nano)), nil)
	}
	if exp <= 0 {
		return Approval{}, fieldErr("expires_at", "missing", nil)
	}
	sig, err := signBytes(ctx, signer, ApprovalSigningInput(digest, approverID, exp))
	if err != nil {
		return Approval{}, err
	}
	return Approval{ApproverID: approverID, ExpiresAt: exp, Signature: base64.StdEncoding.EncodeToString(sig)}, nil
}

// VerifyApproval checks a's signature under pub over the request whose
// RequestDigest is digest. It fails with ErrUnsupportedKey for a key that is
// neither Ed25519 nor P-256 and ErrInvalidSignature for a signature that is
// not base64 or does not verify (made for another request, by another key,
// or over another approver_id or expires_at). It does not check the clock.
func VerifyApproval(digest [32]byte, a Approval, pub crypto.PublicKey) error {
	pub, err := normalizePublicKey(pub)
	if err != nil {
		return err
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(a.Signature)
	if err != nil || len(sig) == 0 {
		return fmt.Errorf("%w: approval signature is not standard base64", ErrInvalidSignature)
	}
	if !verifyBytes(pub, ApprovalSigningInput(digest, a.ApproverID, a.ExpiresAt), sig) {
		return fmt.Errorf("%w: approval by %q does not verify over this request", ErrInvalidSignature, a.ApproverID)
	}
	return nil
}

// checkApprovalMembers enforces the shape of the "approvals" member in the
// parsed request: absent, or an array of at most MaxApprovals objects, each
// with exactly the members approver_id (a token), expires_at (a positive
// integer) and signature (a non-empty string), matched case-sensitively.
func checkApprovalMembers(obj map[string]any) error {
	v, ok := obj["approvals"]
	if !ok {
		return nil
	}
	arr, ok := v.([]any)
	if !ok {
		return fieldErr("approvals", "not an array", nil)
	}
	if len(arr) > MaxApprovals {
		return fieldErr("approvals", fmt.Sprintf("%d approvals, at most %d", len(arr), MaxApprovals), nil)
	}
	for i, e := range arr {
		field := fmt.Sprintf("approvals[%d]", i)
		a, ok := e.(map[string]any)
		if !ok {
			return fieldErr(field, "not an object", nil)
		}
		for k := range a {
			if !approvalMembers[k] {
				return fieldErr(field, fmt.Sprintf("unknown member %q", k), nil)
			}
		}
		id, ok := a["approver_id"].(string)
		if !ok {
			return fieldErr(field+".approver_id", "missing or not a string", nil)
		}
		if err := ValidToken(id); err != nil {
			return fieldErr(field+".approver_id", "invalid", err)
		}
		n, ok := a["expires_at"].(json.Number)
		if !ok {
			return fieldErr(field+".expires_at", "missing or not an integer", nil)
		}
		if ms, err := n.Int64(); err != nil || ms <= 0 {
			return fieldErr(field+".expires_at", "not a positive integer", nil)
		}
		if s, ok := a["signature"].(string); !ok || s == "" {
			return fieldErr(field+".signature", "missing or not a string", nil)
		}
	}
	return nil
}
