package attest

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	decredecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"github.com/hwsigner/signer/protocol"
)

func TestVerifySignature(t *testing.T) {
	ec, err := secp256k1.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := secp256k1.GeneratePrivateKey()
	edPub, ed, _ := ed25519.GenerateKey(rand.Reader)
	otherEdPub, otherEd, _ := ed25519.GenerateKey(rand.Reader)
	digest := sha256.Sum256([]byte("tx"))
	msg := []byte{0, 0, 'm'}

	ecRes := func(key *secp256k1.PrivateKey, pub []byte) *protocol.Result {
		c := decredecdsa.SignCompact(key, digest[:], true)
		r := &protocol.Result{Op: protocol.OpSign, ResultType: protocol.ResultSuccess, KeyType: protocol.KeyTypeSecp256k1, PubKey: hex.EncodeToString(pub)}
		if err := r.SetECDSASignature(c[1:33], c[33:], int(c[0]-31)); err != nil {
			t.Fatal(err)
		}
		return r
	}
	edRes := func(key ed25519.PrivateKey, pub ed25519.PublicKey) *protocol.Result {
		r := &protocol.Result{Op: protocol.OpSign, ResultType: protocol.ResultSuccess, KeyType: protocol.KeyTypeEd25519, PubKey: hex.EncodeToString(pub)}
		_ = r.SetEdDSASignature(ed25519.Sign(key, msg))
		return r
	}
	ecPub := ec.PubKey().SerializeCompressed()
	tests := []struct {
		name string
		res  *protocol.Result
		msg  []byte
		ok   bool
	}{
		{"secp256k1", ecRes(ec, ecPub), digest[:], true},
		{"secp256k1 uncompressed pub_key", ecRes(ec, ec.PubKey().SerializeUncompressed()), digest[:], true},
		{"secp256k1 other message", ecRes(ec, ecPub), make([]byte, 32), false},
		{"secp256k1 signed by another key than pub_key", ecRes(other, ecPub), digest[:], false},
		{"secp256k1 garbage signature", func() *protocol.Result {
			r := ecRes(ec, ecPub)
			r.R = "00" + r.R[2:]
			r.Signature = r.R + r.S
			return r
		}(), digest[:], false},
		{"ed25519", edRes(ed, edPub), msg, true},
		{"ed25519 other message", edRes(ed, edPub), msg[1:], false},
		{"ed25519 signed by another key than pub_key", edRes(otherEd, edPub), msg, false},
		{"ed25519 valid under another pub_key", edRes(otherEd, otherEdPub), msg, true}, // pub_key is what t+1 attest
		{"no pub_key", func() *protocol.Result { r := edRes(ed, edPub); r.PubKey = ""; return r }(), msg, false},
		{"pub_key not hex", func() *protocol.Result { r := edRes(ed, edPub); r.PubKey = "zz"; return r }(), msg, false},
		{"not a sign result", func() *protocol.Result { r := edRes(ed, edPub); r.Op = protocol.OpReshare; return r }(), msg, false},
		{"error result", func() *protocol.Result { r := edRes(ed, edPub); r.SetError(protocol.CodeTimeout, "t"); return r }(), msg, false},
		{"unknown key type", func() *protocol.Result { r := edRes(ed, edPub); r.KeyType = "p256"; return r }(), msg, false},
		{"nil", nil, msg, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifySignature(tc.res, tc.msg)
			if (err == nil) != tc.ok {
				t.Fatalf("%v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrVerify) {
				t.Fatalf("%v does not wrap ErrVerify", err)
			}
		})
	}
}
