package protocol

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// SignRequest fills the envelope's op and key_id (from signer.Public()),
// validates the request, signs its canonical encoding and returns the signed
// request as canonical JSON, ready to publish. req is a *KeygenRequest,
// *SigningRequest, *ReshareRequest (any pointer to a struct embedding
// Envelope also works), or a map[string]any for hand-built requests (tests,
// other fields); a map is signed as is, without validation. On success the
// envelope's Signature is set too.
func SignRequest(ctx context.Context, signer crypto.Signer, op string, req any) ([]byte, error) {
	if !ValidOp(op) {
		return nil, fmt.Errorf("%w: %q", ErrUnknownOp, op)
	}
	if signer == nil {
		return nil, fmt.Errorf("%w: nil signer", ErrUnsupportedKey)
	}
	keyID, err := KeyID(signer.Public())
	if err != nil {
		return nil, err
	}
	var raw []byte
	var env *Envelope
	switch r := req.(type) {
	case map[string]any:
		m := make(map[string]any, len(r)+2)
		for k, v := range r {
			m[k] = v
		}
		m["op"], m["key_id"] = op, keyID
		delete(m, "signature")
		if raw, err = json.Marshal(m); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	case interface{ Env() *Envelope }:
		if typed, ok := req.(Request); ok && typed.Operation() != op {
			return nil, fmt.Errorf("%w: %T is a %s request, not %s", ErrUnknownOp, req, typed.Operation(), op)
		}
		env = r.Env()
		env.Op, env.KeyID, env.Signature = op, keyID, ""
		if typed, ok := req.(Request); ok {
			if err := typed.Validate(); err != nil {
				return nil, err
			}
		}
		if raw, err = json.Marshal(req); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	default:
		return nil, fmt.Errorf("%w: cannot sign a %T (embed protocol.Envelope and pass a pointer)", ErrMalformed, req)
	}
	obj, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	sig, err := signBytes(ctx, signer, signingInput(RequestDomain(op), obj, "signature"))
	if err != nil {
		return nil, err
	}
	enc := base64.StdEncoding.EncodeToString(sig)
	if env != nil {
		env.Signature = enc
	}
	obj["signature"] = enc
	return appendCanonical(nil, obj), nil
}

// VerifyRequest checks the signature of a received raw request against pub.
// It canonicalises the received bytes, so every member is covered, including
// members this version does not know. It fails with ErrMalformed or
// ErrTooLarge for unacceptable JSON, ErrUnsupportedKey for a key type other
// than Ed25519 and ECDSA P-256, ErrUnknownOp for a bad "op", and
// ErrInvalidSignature when key_id does not name pub or the signature is
// missing, malformed or wrong. It checks neither the fields nor the clock:
// see DecodeRequest and Envelope.CheckTime.
func VerifyRequest(raw []byte, pub crypto.PublicKey) error {
	pub, err := normalizePublicKey(pub)
	if err != nil {
		return err
	}
	obj, err := parseObject(raw)
	if err != nil {
		return err
	}
	op, err := stringMember(obj, "op")
	if err != nil {
		return err
	}
	if !ValidOp(op) {
		return fmt.Errorf("%w: %q", ErrUnknownOp, op)
	}
	want, err := KeyID(pub)
	if err != nil {
		return err
	}
	if got, _ := obj["key_id"].(string); got != want {
		return fmt.Errorf("%w: key_id %q does not name the verifying key %s", ErrInvalidSignature, got, want)
	}
	if err := verifyMember(obj, "signature", pub, RequestDomain(op)); err != nil {
		return err
	}
	return nil
}

// verifyMember verifies the base64 signature in obj[member] over domain and
// the canonical encoding of obj without that member.
func verifyMember(obj map[string]any, member string, pub crypto.PublicKey, domain string) error {
	enc, ok := obj[member].(string)
	if !ok || enc == "" {
		return fmt.Errorf("%w: %q missing or not a string", ErrInvalidSignature, member)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(enc)
	if err != nil {
		return fmt.Errorf("%w: %q is not standard base64", ErrInvalidSignature, member)
	}
	if !verifyBytes(pub, signingInput(domain, obj, member), sig) {
		return fmt.Errorf("%w: verification failed", ErrInvalidSignature)
	}
	return nil
}

// DecodeRequest parses a raw request of operation op (the operation of the
// subject it arrived on). It enforces the size limit and the canonical JSON
// rules (ErrTooLarge, ErrMalformed: the returned Request is nil), then runs
// Validate and checks that the envelope's op equals op and that a signature
// is present (a *FieldError wrapping ErrInvalidRequest: the Request is
// returned with the error, so that a node can verify the signature and answer
// BAD_REQUEST on the right subject). It does not verify the signature.
func DecodeRequest(op string, raw []byte) (Request, error) {
	req, err := NewRequest(op)
	if err != nil {
		return nil, err
	}
	obj, err := decodeTyped(raw, req)
	if err != nil {
		return nil, err
	}
	if err := req.Validate(); err != nil {
		return req, err
	}
	if err := checkApprovalMembers(obj); err != nil {
		return req, err
	}
	if r, ok := req.(*SigningRequest); ok {
		// encoding/json accepts line breaks and non-zero padding bits in
		// base64, so other strings than the one signed could stand for Tx.
		if s, _ := obj["tx"].(string); s != base64.StdEncoding.EncodeToString(r.Tx) {
			return req, fieldErr("tx", "not canonical base64 (standard alphabet, padded, no line breaks, unused bits zero)", nil)
		}
	}
	if req.Env().Signature == "" {
		return req, fieldErr("signature", "missing", nil)
	}
	return req, nil
}
