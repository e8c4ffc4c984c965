package devcluster_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
)

// TestApprovals runs a 2-of-3 cluster whose policy requires 2 of alice
// (Ed25519), bob (P-256) and carol (Ed25519) to approve svcA's signatures.
// Every refusal comes from every node, on svcA's subject, with the stable
// code and the approvers counted in the reason; a request approved by two
// distinct approvers signs.
func TestApprovals(t *testing.T) {
	testhsm.Setup(t)
	keys := newKeys(t)
	_, alice, _ := ed25519.GenerateKey(rand.Reader)
	bob, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, carol, _ := ed25519.GenerateKey(rand.Reader)
	_, mallory, _ := ed25519.GenerateKey(rand.Reader) // in no policy
	approvers := map[string]crypto.Signer{"alice": alice, "bob": bob, "carol": carol, "mallory": mallory}
	var cfg policy.Config
	for name, k := range keys {
		cfg.Clients = append(cfg.Clients, policy.ClientConfig{Name: name, PublicKey: pemString(t, k.signer.Public()), ClientIDs: k.ids, Ops: []string{"keygen", "sign", "reshare"}})
	}
	for _, id := range []string{"alice", "bob", "carol"} {
		cfg.Approvers = append(cfg.Approvers, policy.ApproverConfig{ID: id, PublicKey: pemString(t, approvers[id].Public())})
	}
	cfg.Approvals = []policy.ApprovalRule{{ClientID: "svcA", Ops: []string{"sign"}, Required: 2, Approvers: []string{"alice", "bob", "carol"}}}
	pol, err := policy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := startWithPolicy(t, 3, 1, pol, func(string) string { return testhsm.Token(t, "node") })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl := newClient(t, c, keys["svcA"])
	seen := collect(t, c, cl)
	const wallet, kt = "w-approved", protocol.KeyTypeEd25519

	// Keygen needs no approval (no rule covers it).
	kres, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: wallet, KeyTypes: []string{kt}})
	if err != nil {
		t.Fatalf("keygen: %v", err)
	}
	walletPub := mustHex(t, kres.EdDSAPubKey)

	prepare := func(txID string) *protocol.SigningRequest {
		t.Helper()
		r, err := cl.PrepareSign(client.SignParams{WalletID: wallet, KeyType: kt, TxID: txID, Tx: []byte("pay " + txID)})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// approve is what `signerctl approve` does with the request file.
	approve := func(r *protocol.SigningRequest, exp time.Time, ids ...string) []protocol.Approval {
		t.Helper()
		raw, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var out []protocol.Approval
		for _, id := range ids {
			a, err := protocol.SignApproval(ctx, approvers[id], id, exp, raw)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, a)
		}
		return out
	}
	soon := func() time.Time { return time.Now().Add(time.Minute) }
	other := prepare("tx-other")
	forOther := approve(other, soon(), "alice", "bob")

	refusals := []struct {
		name   string
		txID   string
		attach func(r *protocol.SigningRequest) []protocol.Approval
		code   string
		reason string
	}{
		{"missing", "tx-none", func(*protocol.SigningRequest) []protocol.Approval { return nil }, protocol.CodeApprovalRequired, "carries no approvals; counted: none"},
		{"one of two", "tx-one", func(r *protocol.SigningRequest) []protocol.Approval { return approve(r, soon(), "carol") }, protocol.CodeApprovalRequired, "1 distinct approvers counted: [carol]"},
		{"same approver twice", "tx-twice", func(r *protocol.SigningRequest) []protocol.Approval {
			return append(approve(r, soon(), "alice"), approve(r, soon().Add(time.Second), "alice")...)
		}, protocol.CodeApprovalRequired, "1 distinct approvers counted: [alice]"},
		{"unknown approver", "tx-unknown", func(r *protocol.SigningRequest) []protocol.Approval { return approve(r, soon(), "alice", "mallory") }, protocol.CodeApprovalInvalid, "approvals[1] (mallory): unknown approver; counted before it: [alice]"},
		{"for another request", "tx-moved", func(*protocol.SigningRequest) []protocol.Approval { return forOther }, protocol.CodeApprovalInvalid, "approvals[0] (alice): not an approval of this request"},
		{"expired", "tx-expired", func(r *protocol.SigningRequest) []protocol.Approval {
			return append(approve(r, soon(), "bob"), approve(r, time.Now().Add(-time.Second), "carol")...)
		}, protocol.CodeApprovalInvalid, "approvals[1] (carol): expired at"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			r := prepare(tc.txID)
			checkRefused(t, ctx, cl, seen, r, tc.attach(r), tc.code, tc.reason)
		})
	}

	// 2 of 3 (an Ed25519 and a P-256 approver) sign. The approvals expire
	// soon, so that the replay below comes after they expired.
	r := prepare("tx-approved")
	approvalsExpire := time.Now().Add(20 * time.Second)
	approvals := approve(r, approvalsExpire, "alice", "bob")
	start := time.Now()
	res, err := cl.SubmitApprovedAndWait(ctx, r, approvals)
	if err != nil {
		t.Fatalf("approved sign: %v", err)
	}
	if err := client.VerifyEd25519(walletPub, r.Tx, mustHex(t, res.Signature)); err != nil {
		t.Fatalf("approved signature: %v", err)
	}
	t.Logf("2-of-3 approved signature in %s", time.Since(start).Round(time.Millisecond))

	// The same approvals replayed into a new request (new request_id, same
	// transaction) approve nothing.
	t.Run("replayed into a new request", func(t *testing.T) {
		again := prepare("tx-approved")
		checkRefused(t, ctx, cl, seen, again, approvals, protocol.CodeApprovalInvalid, "approvals[0] (alice): not an approval of this request")
	})

	// The approved request itself sent again (the same signed bytes under
	// another Nats-Msg-Id) once its approvals expired: every node answers
	// REPLAYED, the journal's answer, not an approval error, so a retry
	// under the same request_id still gets the original outcome.
	t.Run("replayed after its approvals expired", func(t *testing.T) {
		raw, err := protocol.SignRequest(ctx, keys["svcA"].signer, protocol.OpSign, r)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return time.Now().After(approvalsExpire) })
		subj, err := routing.RequestSubject(protocol.OpSign, wallet)
		if err != nil {
			t.Fatal(err)
		}
		newRawRequests(t, c).publish(ctx, subj, "replay-"+r.RequestID, raw)
		replayed := func() map[string]protocol.Result {
			out := map[string]protocol.Result{}
			for _, res := range seen.of(r.RequestID) {
				if res.ErrorCode != "" {
					out[res.NodeID] = res
				}
			}
			return out
		}
		waitFor(t, func() bool { return len(replayed()) == len(c.NodeIDs) })
		for node, res := range replayed() {
			if res.ErrorCode != protocol.CodeReplayed {
				t.Errorf("%s answered the replay %s %q, want REPLAYED", node, res.ErrorCode, res.ErrorReason)
			}
		}
	})
}

// checkRefused submits r with approvals and checks that the client's
// decision and every node's own result is code, with reason in it.
func checkRefused(t *testing.T, ctx context.Context, cl *client.Client, seen *collected, r *protocol.SigningRequest, approvals []protocol.Approval, code, reason string) {
	t.Helper()
	_, err := cl.SubmitApprovedAndWait(ctx, r, approvals)
	var re *client.ResultError
	if !errors.As(err, &re) || re.Code != code || !strings.Contains(re.Reason, reason) {
		t.Fatalf("got %v, want %s saying %q", err, code, reason)
	}
	for node, res := range seen.await(t, r.RequestID, 3) {
		if res.ErrorCode != code || !strings.Contains(res.ErrorReason, reason) || res.ClientID != "svcA" {
			t.Errorf("%s answered %s %q on %q, want %s", node, res.ErrorCode, res.ErrorReason, res.ClientID, code)
		}
	}
}

func pemString(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	p, err := keyfile.MarshalPublicKeyPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
