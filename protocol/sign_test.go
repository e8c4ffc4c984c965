package protocol

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// mutate decodes raw, applies f and re-encodes (as an attacker would).
func mutate(t *testing.T, raw []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSignVerifyRequestKeyTypes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		signer crypto.Signer
	}{
		{"ed25519", newEd25519(t)},
		{"ecdsa-p256", newP256(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			for _, req := range []Request{testSigning(), testKeygen(), testReshare()} {
				raw, err := SignRequest(ctx, tc.signer, req.Operation(), req)
				if err != nil {
					t.Fatalf("%s: SignRequest: %v", req.Operation(), err)
				}
				if err := VerifyRequest(raw, tc.signer.Public()); err != nil {
					t.Fatalf("%s: VerifyRequest: %v", req.Operation(), err)
				}
				want, _ := KeyID(tc.signer.Public())
				if req.Env().KeyID != want || req.Env().Signature == "" || req.Env().Op != req.Operation() {
					t.Fatalf("envelope not filled: %+v", req.Env())
				}
				got, err := DecodeRequest(req.Operation(), raw)
				if err != nil {
					t.Fatalf("DecodeRequest: %v", err)
				}
				if got.Env().RequestID != req.Env().RequestID {
					t.Fatalf("decoded %+v", got.Env())
				}
				// The signed output is canonical already.
				canon, err := Canonicalize(raw)
				if err != nil || string(canon) != string(raw) {
					t.Fatalf("output not canonical: %s", raw)
				}
			}
		})
	}
}

func TestVerifyRequestTampering(t *testing.T) {
	ctx := context.Background()
	signer := newEd25519(t)
	raw, err := SignRequest(ctx, signer, OpSign, testSigning())
	if err != nil {
		t.Fatal(err)
	}
	other := newP256(t)
	tests := []struct {
		name string
		raw  func() []byte
		pub  crypto.PublicKey
		want error
	}{
		{"derivation_path changed", func() []byte {
			return mutate(t, raw, func(m map[string]any) { m["derivation_path"] = []int{44, 60, 0, 0, 8} })
		}, signer.Public(), ErrInvalidSignature},
		{"derivation_path removed", func() []byte {
			return mutate(t, raw, func(m map[string]any) { delete(m, "derivation_path") })
		}, signer.Public(), ErrInvalidSignature},
		{"client_id changed", func() []byte {
			return mutate(t, raw, func(m map[string]any) { m["client_id"] = "svcB" })
		}, signer.Public(), ErrInvalidSignature},
		{"client_id emptied", func() []byte {
			return mutate(t, raw, func(m map[string]any) { m["client_id"] = "" })
		}, signer.Public(), ErrInvalidSignature},
		{"unknown extra field", func() []byte {
			return mutate(t, raw, func(m map[string]any) { m["priority"] = "high" })
		}, signer.Public(), ErrInvalidSignature},
		{"tx changed", func() []byte {
			return mutate(t, raw, func(m map[string]any) { m["tx"] = "AQ==" })
		}, signer.Public(), ErrInvalidSignature},
		{"expires_at extended", func() []byte {
			return mutate(t, raw, func(m map[string]any) { m["expires_at"] = testNow.UnixMilli() + 3600000 })
		}, signer.Public(), ErrInvalidSignature},
		{"op changed", func() []byte {
			return mutate(t, raw, func(m map[string]any) { m["op"] = OpKeygen })
		}, signer.Public(), ErrInvalidSignature},
		{"op unknown", func() []byte {
			return mutate(t, raw, func(m map[string]any) { m["op"] = "burn" })
		}, signer.Public(), ErrUnknownOp},
		{"signature removed", func() []byte {
			return mutate(t, raw, func(m map[string]any) { delete(m, "signature") })
		}, signer.Public(), ErrInvalidSignature},
		{"signature not base64", func() []byte {
			return mutate(t, raw, func(m map[string]any) { m["signature"] = "!!" })
		}, signer.Public(), ErrInvalidSignature},
		{"signature not string", func() []byte {
			return mutate(t, raw, func(m map[string]any) { m["signature"] = 5 })
		}, signer.Public(), ErrInvalidSignature},
		{"other key", func() []byte { return raw }, other.Public(), ErrInvalidSignature},
		{"float smuggled", func() []byte {
			return []byte(strings.Replace(string(raw), `"derivation_path":[44,`, `"derivation_path":[44.0,`, 1))
		}, signer.Public(), ErrMalformed},
		{"duplicate member", func() []byte {
			return []byte(strings.Replace(string(raw), `{`, `{"client_id":"svcB",`, 1))
		}, signer.Public(), ErrMalformed},
		{"not an object", func() []byte { return []byte(`[]`) }, signer.Public(), ErrMalformed},
		{"rsa key", func() []byte { return raw }, rsaPub(t), ErrUnsupportedKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyRequest(tt.raw(), tt.pub)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	// Reordering members and adding whitespace keeps the signature valid.
	reordered := mutate(t, raw, func(map[string]any) {})
	var pretty strings.Builder
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	enc := json.NewEncoder(&pretty)
	enc.SetIndent("", "\t")
	_ = enc.Encode(m)
	for _, r := range [][]byte{reordered, []byte(pretty.String())} {
		if err := VerifyRequest(r, signer.Public()); err != nil {
			t.Fatalf("re-encoded request: %v", err)
		}
	}
}

func rsaPub(t *testing.T) crypto.PublicKey {
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return &k.PublicKey
}

type stalledSigner struct{ crypto.Signer }

func (s stalledSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	select {} // an HSM that never answers
}

type lyingSigner struct{ crypto.Signer }

func (s lyingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return make([]byte, 64), nil
}

func TestSignRequestErrors(t *testing.T) {
	ctx := context.Background()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name   string
		ctx    context.Context
		signer crypto.Signer
		op     string
		req    any
		want   error
	}{
		{"p384", ctx, p384, OpSign, testSigning(), ErrUnsupportedKey},
		{"rsa", ctx, rsaKey, OpSign, testSigning(), ErrUnsupportedKey},
		{"unknown op", ctx, newEd25519(t), "burn", testSigning(), ErrUnknownOp},
		{"op mismatch", ctx, newEd25519(t), OpKeygen, testSigning(), ErrUnknownOp},
		{"invalid request", ctx, newEd25519(t), OpSign, func() any { r := testSigning(); r.Tx = r.Tx[:31]; return r }(), ErrInvalidRequest},
		{"not a request", ctx, newEd25519(t), OpSign, 42, ErrMalformed},
		{"cancelled", cancelled, newEd25519(t), OpSign, testSigning(), context.Canceled},
		{"stalled signer", func() context.Context {
			c, cancel := context.WithTimeout(ctx, 50e6)
			t.Cleanup(cancel)
			return c
		}(), stalledSigner{newEd25519(t)}, OpSign, testSigning(), context.DeadlineExceeded},
		{"lying signer", ctx, lyingSigner{newEd25519(t)}, OpSign, testSigning(), ErrInvalidSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := SignRequest(tt.ctx, tt.signer, tt.op, tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSignRequestMap(t *testing.T) {
	signer := newP256(t)
	m := map[string]any{"client_id": "svcA", "request_id": "r1", "wallet_id": "w", "future": map[string]any{"x": 1}}
	raw, err := SignRequest(context.Background(), signer, OpKeygen, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyRequest(raw, signer.Public()); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["key_id"]; ok {
		t.Fatal("caller's map modified")
	}
	tampered := mutate(t, raw, func(m map[string]any) { m["future"] = map[string]any{"x": 2} })
	if err := VerifyRequest(tampered, signer.Public()); !errors.Is(err, ErrInvalidSignature) {
		t.Fatalf("nested unknown field change: %v", err)
	}
}

func TestKeyID(t *testing.T) {
	ed := newEd25519(t)
	id1, err := KeyID(ed.Public())
	if err != nil || len(id1) != 32 || strings.ToLower(id1) != id1 {
		t.Fatalf("KeyID = %q, %v", id1, err)
	}
	pub := ed.Public()
	id2, _ := KeyID(pub)
	if id1 != id2 {
		t.Fatal("KeyID not stable")
	}
	id3, _ := KeyID(newP256(t).Public())
	if id3 == id1 {
		t.Fatal("distinct keys share an id")
	}
	if _, err := KeyID(rsaPub(t)); !errors.Is(err, ErrUnsupportedKey) {
		t.Fatalf("rsa: %v", err)
	}
}
