package client

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
)

// TestSubmitApproved: a prepared request carries its final op, client_id,
// key_id and times, so approvals made over it verify in the request the
// client signs and publishes; requests that were not prepared are refused.
func TestSubmitApproved(t *testing.T) {
	e := newEnv(t)
	key, approver := edSigner(t), edSigner(t)
	startFakeNode(t, e.ctx, e.js, "node0", e.identity, policyFor(t, binding{key, []string{"svcA"}}))
	c := e.newClient(t, key, WithClientID("svcA"))
	keyID, _ := protocol.KeyID(key.Public())

	if _, err := c.CreateWalletAndWait(e.ctx, "w1", protocol.KeyTypeEd25519); err != nil {
		t.Fatal(err)
	}
	r, err := c.PrepareSign(SignParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, TxID: "tx-1", Tx: []byte("pay")})
	if err != nil {
		t.Fatal(err)
	}
	if r.Op != protocol.OpSign || r.ClientID != "svcA" || r.KeyID != keyID || r.RequestID == "" || r.CreatedAt == 0 || r.Signature != "" {
		t.Fatalf("prepared request %+v", r.Envelope)
	}
	unsigned, _ := json.Marshal(r)
	a, err := protocol.SignApproval(e.ctx, approver, "alice", r.Expires(), unsigned)
	if err != nil {
		t.Fatal(err)
	}
	// Capture what is published.
	subj, _ := routing.RequestSubject(protocol.OpSign, "w1")
	sub, err := natstest.Connect(t, e.srv).SubscribeSync(subj)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.SubmitApprovedAndWait(e.ctx, r, []protocol.Approval{a})
	if err != nil || !res.Succeeded() {
		t.Fatalf("approved sign: %+v %v", res, err)
	}
	// What was published carries the approval, and it verifies there.
	msg, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got, err := protocol.DecodeRequest(protocol.OpSign, msg.Data)
	if err != nil || len(got.Env().Approvals) != 1 || got.Env().Approvals[0] != a {
		t.Fatalf("published request %v: %v", got, err)
	}
	d, _ := protocol.RequestDigest(msg.Data)
	if err := protocol.VerifyApproval(d, a, approver.Public()); err != nil {
		t.Fatalf("approval in the published request: %v", err)
	}

	tests := []struct {
		name string
		req  protocol.Request
	}{
		{"nil", nil},
		{"not prepared", (SignParams{WalletID: "w1", KeyType: protocol.KeyTypeEd25519, TxID: "t", Tx: []byte("x")}).request()},
		{"no times", &protocol.SigningRequest{Envelope: protocol.Envelope{RequestID: "r1"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.SubmitApproved(e.ctx, tc.req, nil); !errors.Is(err, protocol.ErrInvalidRequest) {
				t.Fatalf("SubmitApproved: %v", err)
			}
			if _, err := c.SubmitApprovedAndWait(e.ctx, tc.req, nil); !errors.Is(err, protocol.ErrInvalidRequest) {
				t.Fatalf("SubmitApprovedAndWait: %v", err)
			}
		})
	}
}
