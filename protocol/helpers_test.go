package protocol

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"
)

func newEd25519(t testing.TB) crypto.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func newP256(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var testNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testEnvelope(clientID, requestID string) Envelope {
	e := Envelope{ClientID: clientID, RequestID: requestID}
	e.SetTimes(testNow, 5*time.Minute)
	return e
}

func testSigning() *SigningRequest {
	return &SigningRequest{
		Envelope:       testEnvelope("svcA", "req-1"),
		WalletID:       "wallet-1",
		KeyType:        KeyTypeSecp256k1,
		TxID:           "tx-1",
		Tx:             append([]byte{0, 0}, make([]byte, 30)...),
		DerivationPath: []uint32{44, 60, 0, 0, 7},
	}
}

func testKeygen() *KeygenRequest {
	return &KeygenRequest{Envelope: testEnvelope("svcA", "req-2"), WalletID: "wallet-2"}
}

func testReshare() *ReshareRequest {
	return &ReshareRequest{
		Envelope:     testEnvelope("", "req-3"),
		WalletID:     "wallet-3",
		KeyType:      KeyTypeEd25519,
		SessionID:    "sess-1",
		NodeIDs:      []string{"node0", "node1", "node2"},
		NewThreshold: 1,
	}
}
