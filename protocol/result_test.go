package protocol

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"
)

func TestSignVerifyResult(t *testing.T) {
	ctx := context.Background()
	node0, node1 := newP256(t), newP256(t)
	keys := map[string]crypto.PublicKey{"node0": node0.Public(), "node1": node1.Public()}

	res := NewResult(testSigning())
	if err := res.SetECDSASignature([]byte{1}, []byte{0, 0, 2}, 1); err != nil {
		t.Fatal(err)
	}
	raw, err := SignResult(ctx, node0, "node0", res)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyResult(raw, keys)
	if err != nil {
		t.Fatal(err)
	}
	if got.R != strings.Repeat("00", 31)+"01" || got.S != strings.Repeat("00", 31)+"02" || got.Signature != got.R+got.S {
		t.Fatalf("r/s not zero-padded: %+v", got)
	}
	if got.RequestID != "req-1" || got.ClientID != "svcA" || got.WalletID != "wallet-1" || got.TxID != "tx-1" ||
		got.Op != OpSign || got.NodeID != "node0" || !got.Succeeded() || got.SignatureRecovery != 1 {
		t.Fatalf("result %+v", got)
	}

	tests := []struct {
		name string
		raw  []byte
		keys map[string]crypto.PublicKey
		want error
	}{
		{"unknown node", raw, map[string]crypto.PublicKey{"node1": node1.Public()}, ErrUnknownNode},
		{"key of another node", raw, map[string]crypto.PublicKey{"node0": node1.Public()}, ErrInvalidSignature},
		{"result_type flipped", mutate(t, raw, func(m map[string]any) { m["result_type"] = ResultError }), keys, ErrInvalidSignature},
		{"client_id changed", mutate(t, raw, func(m map[string]any) { m["client_id"] = "svcB" }), keys, ErrInvalidSignature},
		{"node_id swapped", mutate(t, raw, func(m map[string]any) { m["node_id"] = "node1" }), keys, ErrInvalidSignature},
		{"extra field", mutate(t, raw, func(m map[string]any) { m["note"] = "x" }), keys, ErrInvalidSignature},
		{"unsigned", mutate(t, raw, func(m map[string]any) { delete(m, "node_signature") }), keys, ErrInvalidSignature},
		{"no node id", mutate(t, raw, func(m map[string]any) { delete(m, "node_id") }), keys, ErrUnknownNode},
		{"garbage", []byte("{"), keys, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := VerifyResult(tt.raw, tt.keys); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := SignResult(ctx, node0, "node.0", res); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("bad node id: %v", err)
	}
}

func TestResultHelpers(t *testing.T) {
	res := NewResult(testReshare())
	if res.SessionID != "sess-1" || res.NewThreshold != 1 || res.ClientID != "" || res.Op != OpReshare {
		t.Fatalf("%+v", res)
	}
	res.SetError(CodeTimeout, "deadline")
	if res.Succeeded() || !res.IsTimeout || res.ErrorCode != CodeTimeout {
		t.Fatalf("%+v", res)
	}
	if err := res.SetECDSASignature(make([]byte, 33), []byte{1}, 0); err != nil {
		t.Fatalf("33-byte r with a leading zero: %v", err) // stripped to 32
	}
	if err := res.SetECDSASignature(append([]byte{1}, make([]byte, 32)...), []byte{1}, 0); err == nil {
		t.Fatal("oversized r accepted")
	}
	if err := res.SetECDSASignature([]byte{1}, []byte{1}, 4); err == nil {
		t.Fatal("recovery 4 accepted")
	}
	if err := res.SetEdDSASignature(make([]byte, 63)); err == nil {
		t.Fatal("63-byte ed25519 signature accepted")
	}
	for _, c := range ErrorCodes() {
		if !KnownErrorCode(c) {
			t.Fatal(c)
		}
	}
	if KnownErrorCode("NOPE") {
		t.Fatal("unknown code known")
	}
}
