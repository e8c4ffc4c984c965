package client

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	decredecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"github.com/hwsigner/signer/protocol"
)

func TestVerifyECDSA(t *testing.T) {
	key, _ := walletKeys("verify")
	other, _ := walletKeys("other")
	msg := digest("hello")
	compact := decredecdsa.SignCompact(key, msg, true)
	r, s, rec := compact[1:33], compact[33:], int(compact[0]-31)

	// The same signature with S replaced by N-S (high S) and the recovery
	// id's parity flipped still verifies: the helper does not demand low S.
	var sScalar secp256k1.ModNScalar
	sScalar.SetByteSlice(s)
	sScalar.Negate()
	hb := sScalar.Bytes()
	highS := hb[:]

	comp, uncomp := key.PubKey().SerializeCompressed(), key.PubKey().SerializeUncompressed()
	tests := []struct {
		name   string
		pub    []byte
		digest []byte
		r, s   []byte
		rec    int
		ok     bool
	}{
		{"compressed", comp, msg, r, s, rec, true},
		{"uncompressed", uncomp, msg, r, s, rec, true},
		{"high s", comp, msg, r, highS, rec ^ 1, true},
		{"wrong recovery", comp, msg, r, s, rec ^ 1, false},
		{"recovery out of range", comp, msg, r, s, 4, false},
		{"wrong digest", comp, digest("other"), r, s, rec, false},
		{"other key", other.PubKey().SerializeCompressed(), msg, r, s, rec, false},
		{"short digest", comp, msg[:31], r, s, rec, false},
		{"zero r", comp, msg, make([]byte, 32), s, rec, false},
		{"r too large", comp, msg, append([]byte{1}, r...), s, rec, false},
		{"s overflow", comp, msg, r, hexBytes(t, "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"), rec, false},
		{"bad key", []byte{2, 1, 2}, msg, r, s, rec, false},
	}
	for _, tt := range tests {
		err := VerifyECDSA(tt.pub, tt.digest, tt.r, tt.s, tt.rec)
		if (err == nil) != tt.ok {
			t.Errorf("%s: %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrVerify) {
			t.Errorf("%s: %v does not wrap ErrVerify", tt.name, err)
		}
	}
}

func hexBytes(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyEd25519(t *testing.T) {
	_, key := walletKeys("verify")
	msg := []byte{0, 0, 1, 2} // leading zero bytes are part of the message
	sig := ed25519.Sign(key, msg)
	pub := key.Public().(ed25519.PublicKey)
	tests := []struct {
		name          string
		pub, msg, sig []byte
		ok            bool
	}{
		{"ok", pub, msg, sig, true},
		{"leading zeros dropped", pub, msg[2:], sig, false},
		{"short sig", pub, msg, sig[:63], false},
		{"short key", pub[:31], msg, sig, false},
		{"flipped bit", pub, msg, append(append([]byte{}, sig[:10]...), append([]byte{sig[10] ^ 1}, sig[11:]...)...), false},
	}
	for _, tt := range tests {
		if err := VerifyEd25519(tt.pub, tt.msg, tt.sig); (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

func TestVerifySignResult(t *testing.T) {
	ec, ed := walletKeys("w")
	tx := digest("tx")
	compact := decredecdsa.SignCompact(ec, tx, true)
	res := &protocol.Result{ResultType: protocol.ResultSuccess, KeyType: protocol.KeyTypeSecp256k1}
	if err := res.SetECDSASignature(compact[1:33], compact[33:], int(compact[0]-31)); err != nil {
		t.Fatal(err)
	}
	if err := VerifySignResult(res, ec.PubKey().SerializeCompressed(), tx); err != nil {
		t.Fatal(err)
	}
	bad := *res
	bad.Signature = bad.S + bad.R
	if err := VerifySignResult(&bad, ec.PubKey().SerializeCompressed(), tx); !errors.Is(err, ErrVerify) {
		t.Fatalf("signature not r||s: %v", err)
	}
	edRes := &protocol.Result{ResultType: protocol.ResultSuccess, KeyType: protocol.KeyTypeEd25519}
	_ = edRes.SetEdDSASignature(ed25519.Sign(ed, []byte("m")))
	if err := VerifySignResult(edRes, ed.Public().(ed25519.PublicKey), []byte("m")); err != nil {
		t.Fatal(err)
	}
	edRes.SetError(protocol.CodeTimeout, "t")
	if err := VerifySignResult(edRes, ed.Public().(ed25519.PublicKey), []byte("m")); !errors.Is(err, ErrVerify) {
		t.Fatalf("error result verified: %v", err)
	}
}
