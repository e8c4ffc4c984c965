package protocol

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func testConfirmation() *KeyConfirmation {
	return &KeyConfirmation{
		WalletID: "wallet-1", KeyType: KeyTypeEd25519, Epoch: 2, Committee: []string{"node0", "node1", "node2"},
		Threshold: 1, PubKey: strings.Repeat("ab", 32), KeyDigest: strings.Repeat("cd", 32), Ceremony: "0123abcd",
		SealedAt: 1700000000000,
	}
}

// TestKeyConfirmationSignVerify: a confirmation verifies under its node's
// key only, every member is covered, and one naming a node outside its
// committee or outside the peer list is refused.
func TestKeyConfirmationSignVerify(t *testing.T) {
	ctx := context.Background()
	node0, node1, rogue := newP256(t), newP256(t), newP256(t)
	keys := map[string]crypto.PublicKey{"node0": node0.Public(), "node1": node1.Public()}
	c := testConfirmation()
	raw, err := SignConfirmation(ctx, node0, "node0", c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyConfirmation(raw, keys)
	if err != nil {
		t.Fatal(err)
	}
	if got.NodeID != "node0" || got.Version != ConfirmationVersion || !got.Same(c) || got.Epoch != 2 {
		t.Fatalf("verified %+v", got)
	}
	other := *got
	other.NodeID = "node1"
	if !got.Same(&other) {
		t.Fatal("confirmations that differ only in node_id are not the same")
	}
	other.KeyDigest = strings.Repeat("ce", 32)
	if got.Same(&other) {
		t.Fatal("confirmations of different digests are the same")
	}

	forged := *testConfirmation()
	forgedRaw, err := SignConfirmation(ctx, rogue, "node1", &forged) // node1's name, rogue's key
	if err != nil {
		t.Fatal(err)
	}
	outside := *testConfirmation()
	outside.Committee = []string{"node1", "node2"}
	outsideRaw, err := signUnchecked(ctx, node0, "node0", &outside)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		raw  []byte
		want error
	}{
		{"forged by a key that is not node1's", forgedRaw, ErrInvalidSignature},
		{"unknown node", mutate(t, raw, func(m map[string]any) { m["node_id"] = "node9"; m["committee"] = []any{"node9", "node1"} }), ErrUnknownNode},
		{"node outside its committee", outsideRaw, ErrNotInCommittee},
		{"epoch changed", mutate(t, raw, func(m map[string]any) { m["epoch"] = 3 }), ErrInvalidSignature},
		{"digest changed", mutate(t, raw, func(m map[string]any) { m["key_digest"] = strings.Repeat("00", 32) }), ErrInvalidSignature},
		{"committee changed", mutate(t, raw, func(m map[string]any) { m["committee"] = []any{"node0", "node1"} }), ErrInvalidSignature},
		{"node_id swapped", mutate(t, raw, func(m map[string]any) { m["node_id"] = "node1" }), ErrInvalidSignature},
		{"extra member", mutate(t, raw, func(m map[string]any) { m["note"] = "x" }), ErrInvalidSignature},
		{"unsigned", mutate(t, raw, func(m map[string]any) { delete(m, "node_signature") }), ErrInvalidSignature},
		{"other version", mutate(t, raw, func(m map[string]any) { m["version"] = 2 }), ErrMalformed},
		{"short digest", mutate(t, raw, func(m map[string]any) { m["key_digest"] = "abcd" }), ErrMalformed},
		{"duplicate member", mutate(t, raw, func(m map[string]any) { m["committee"] = []any{"node0", "node0", "node1"} }), ErrMalformed},
		{"threshold too high", mutate(t, raw, func(m map[string]any) { m["threshold"] = 3 }), ErrMalformed},
		{"garbage", []byte("not json"), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := VerifyConfirmation(tt.raw, keys); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := SignConfirmation(ctx, node0, "node0", &outside); !errors.Is(err, ErrNotInCommittee) {
		t.Fatalf("signing for a committee without the node: %v", err)
	}
}

// signUnchecked signs c as SignConfirmation does, without its checks (a
// node outside the committee), as a buggy or hostile signer could.
func signUnchecked(ctx context.Context, signer crypto.Signer, nodeID string, c *KeyConfirmation) ([]byte, error) {
	c.Version, c.NodeID = ConfirmationVersion, nodeID
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	obj, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	sig, err := signBytes(ctx, signer, signingInput(ConfirmationDomain, obj, "node_signature"))
	if err != nil {
		return nil, err
	}
	obj["node_signature"] = base64.StdEncoding.EncodeToString(sig)
	return appendCanonical(nil, obj), nil
}
