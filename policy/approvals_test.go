package policy

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
)

type approvalFixture struct {
	client    crypto.Signer
	approvers map[string]crypto.Signer
	pol       *Policy
}

func pemOf(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	p, err := keyfile.MarshalPublicKeyPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newApprovalFixture: svcA signs; 2 of alice (Ed25519), bob (P-256) and
// carol (Ed25519) approve svcA's signatures; dave approves svcA's wallet
// "vault" alone, on top of that.
func newApprovalFixture(t *testing.T) approvalFixture {
	t.Helper()
	f := approvalFixture{client: newEd25519(t), approvers: map[string]crypto.Signer{
		"alice": newEd25519(t), "bob": newP256(t), "carol": newEd25519(t), "dave": newP256(t), "erin": newEd25519(t),
	}}
	cfg := Config{Clients: []ClientConfig{{Name: "A", PublicKey: pemOf(t, f.client.Public()), ClientIDs: []string{"svcA"}, Ops: []string{"keygen", "sign", "reshare"}}}}
	for _, id := range []string{"alice", "bob", "carol", "dave", "erin"} {
		cfg.Approvers = append(cfg.Approvers, ApproverConfig{ID: id, PublicKey: pemOf(t, f.approvers[id].Public())})
	}
	cfg.Approvals = []ApprovalRule{
		{ClientID: "svcA", Ops: []string{"sign"}, Required: 2, Approvers: []string{"alice", "bob", "carol"}},
		{ClientID: "svcA", Ops: []string{"sign", "reshare"}, Wallets: []string{"vault"}, Required: 1, Approvers: []string{"dave"}},
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.pol = p
	return f
}

func testRequest(wallet, requestID string, now time.Time) *protocol.SigningRequest {
	r := &protocol.SigningRequest{
		Envelope: protocol.Envelope{ClientID: "svcA", RequestID: requestID},
		WalletID: wallet, KeyType: protocol.KeyTypeEd25519, TxID: "tx-1", Tx: []byte("pay 1"),
	}
	r.SetTimes(now, 5*time.Minute)
	return r
}

func TestCheckApprovals(t *testing.T) {
	ctx := context.Background()
	f := newApprovalFixture(t)
	now := time.Now()
	// approve signs approvals of r (as built so far) by the named approvers.
	approve := func(r protocol.Request, exp time.Time, ids ...string) []protocol.Approval {
		t.Helper()
		raw, err := protocol.SignRequest(ctx, f.client, r.Operation(), r)
		if err != nil {
			t.Fatal(err)
		}
		var out []protocol.Approval
		for _, id := range ids {
			key := f.approvers[id]
			if key == nil {
				key = newEd25519(t) // a key the policy does not know
			}
			a, err := protocol.SignApproval(ctx, key, id, exp, raw)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, a)
		}
		return out
	}
	exp := now.Add(4 * time.Minute)
	other := testRequest("w1", "req-other", now)
	forOther := approve(other, exp, "bob")
	expired := approve(testRequest("w1", "req-expired", now), now.Add(-time.Second), "alice", "bob")
	tests := []struct {
		name    string
		req     *protocol.SigningRequest
		attach  func(r *protocol.SigningRequest) []protocol.Approval
		want    error
		reason  string // a part of the error text
		counted []string
	}{
		{"2 of 3", testRequest("w1", "r1", now), func(r *protocol.SigningRequest) []protocol.Approval { return approve(r, exp, "alice", "carol") }, nil, "", []string{"alice", "carol"}},
		{"3 of 3", testRequest("w1", "r2", now), func(r *protocol.SigningRequest) []protocol.Approval { return approve(r, exp, "carol", "bob", "alice") }, nil, "", []string{"alice", "bob", "carol"}},
		{"no rule: keygen", nil, nil, nil, "", nil},
		{"missing", testRequest("w1", "r3", now), func(*protocol.SigningRequest) []protocol.Approval { return nil }, ErrApprovalRequired, "carries no approvals; counted: none", nil},
		{"one of 2", testRequest("w1", "r4", now), func(r *protocol.SigningRequest) []protocol.Approval { return approve(r, exp, "bob") }, ErrApprovalRequired, "1 distinct approvers counted: [bob]", []string{"bob"}},
		{"same approver twice", testRequest("w1", "r5", now), func(r *protocol.SigningRequest) []protocol.Approval {
			return append(approve(r, exp, "alice"), approve(r, exp.Add(-time.Second), "alice")...)
		}, ErrApprovalRequired, "1 distinct approvers counted: [alice]", []string{"alice"}},
		{"unknown approver", testRequest("w1", "r6", now), func(r *protocol.SigningRequest) []protocol.Approval { return approve(r, exp, "alice", "mallory") }, ErrApprovalInvalid, "approvals[1] (mallory): unknown approver; counted before it: [alice]", nil},
		{"approver of another rule", testRequest("w1", "r7", now), func(r *protocol.SigningRequest) []protocol.Approval { return approve(r, exp, "alice", "dave") }, ErrApprovalInvalid, "approvals[1] (dave): not an approver", nil},
		{"approver of no rule", testRequest("w1", "r8", now), func(r *protocol.SigningRequest) []protocol.Approval { return approve(r, exp, "erin", "alice") }, ErrApprovalInvalid, "approvals[0] (erin): not an approver", nil},
		{"for another request", testRequest("w1", "r9", now), func(r *protocol.SigningRequest) []protocol.Approval {
			return append(approve(r, exp, "alice"), forOther...)
		}, ErrApprovalInvalid, "approvals[1] (bob): not an approval of this request", nil},
		{"replayed into a new request", testRequest("w1", "req-expired-2", now), func(*protocol.SigningRequest) []protocol.Approval { return forOther }, ErrApprovalInvalid, "not an approval of this request", nil},
		{"expired", testRequest("w1", "req-expired", now), func(*protocol.SigningRequest) []protocol.Approval { return expired }, ErrApprovalInvalid, "approvals[0] (alice): expired at", nil},
		{"outlives the request", testRequest("w1", "r10", now), func(r *protocol.SigningRequest) []protocol.Approval {
			a := approve(r, exp, "alice", "bob")
			a[1].ExpiresAt = r.ExpiresAt + 1 // the approver cannot sign this (SignApproval refuses); the node refuses it before the signature
			return a
		}, ErrApprovalInvalid, "approvals[1] (bob): expires at", nil},
		{"signature of another approver", testRequest("w1", "r11", now), func(r *protocol.SigningRequest) []protocol.Approval {
			a := approve(r, exp, "alice", "bob")
			a[1].ApproverID = "carol"
			return a
		}, ErrApprovalInvalid, "approvals[1] (carol): not an approval of this request", nil},
		{"wallet rule needs dave too", testRequest("vault", "r12", now), func(r *protocol.SigningRequest) []protocol.Approval { return approve(r, exp, "alice", "bob") }, ErrApprovalRequired, "approvals[1] (1 of [dave]); 0 distinct approvers counted: [alice bob]", []string{"alice", "bob"}},
		{"wallet rule met", testRequest("vault", "r13", now), func(r *protocol.SigningRequest) []protocol.Approval { return approve(r, exp, "dave", "alice", "bob") }, nil, "", []string{"alice", "bob", "dave"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var req protocol.Request = tc.req
			if tc.req == nil {
				req = &protocol.KeygenRequest{Envelope: protocol.Envelope{ClientID: "svcA", RequestID: "kg"}, WalletID: "w1"}
				req.Env().SetTimes(now, time.Minute)
			} else {
				tc.req.Approvals = tc.attach(tc.req)
			}
			raw, err := protocol.SignRequest(ctx, f.client, req.Operation(), req)
			if err != nil {
				t.Fatal(err)
			}
			decoded, err := protocol.DecodeRequest(req.Operation(), raw)
			if err != nil {
				t.Fatal(err)
			}
			counted, err := f.pol.CheckApprovals(decoded, raw, now)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("reason %q does not say %q", err, tc.reason)
			}
			if fmt.Sprint(counted) != fmt.Sprint(tc.counted) {
				t.Fatalf("counted %v, want %v", counted, tc.counted)
			}
		})
	}
	if !f.pol.RequiresApproval("svcA", "sign", "w1") || f.pol.RequiresApproval("svcA", "keygen", "w1") ||
		!f.pol.RequiresApproval("svcA", "reshare", "vault") || f.pol.RequiresApproval("svcB", "sign", "w1") {
		t.Fatal("RequiresApproval")
	}
}

// TestApprovalsPolicyInvalid: every bad approvers or approvals entry is
// refused with ErrInvalid.
func TestApprovalsPolicyInvalid(t *testing.T) {
	client, alice, bob := newEd25519(t), newEd25519(t), newP256(t)
	base := func() Config {
		return Config{
			Clients: []ClientConfig{{Name: "A", PublicKey: pemOf(t, client.Public()), ClientIDs: []string{"svcA"}, Ops: []string{"sign"}}},
			Approvers: []ApproverConfig{
				{ID: "alice", PublicKey: pemOf(t, alice.Public())},
				{ID: "bob", PublicKey: pemOf(t, bob.Public())},
			},
			Approvals: []ApprovalRule{{ClientID: "svcA", Ops: []string{"sign"}, Required: 2, Approvers: []string{"alice", "bob"}}},
		}
	}
	if _, err := New(base()); err != nil {
		t.Fatalf("base config: %v", err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		reason string
	}{
		{"approver id not a token", func(c *Config) { c.Approvers[0].ID = "al ice" }, "approvers[0]"},
		{"approver id twice", func(c *Config) { c.Approvers[1].ID = "alice" }, "listed twice"},
		{"approver key twice", func(c *Config) { c.Approvers[1].PublicKey = c.Approvers[0].PublicKey }, "already belongs to approver alice"},
		{"approver key is a client key", func(c *Config) { c.Approvers[0].PublicKey = c.Clients[0].PublicKey }, "cannot approve its own requests"},
		{"approver key unparsable", func(c *Config) { c.Approvers[0].PublicKey = "junk" }, "public_key"},
		{"rule client id invalid", func(c *Config) { c.Approvals[0].ClientID = "svc*" }, "client_id"},
		{"rule without ops", func(c *Config) { c.Approvals[0].Ops = nil }, "ops empty"},
		{"rule unknown op", func(c *Config) { c.Approvals[0].Ops = []string{"burn"} }, "unknown op"},
		{"rule bad wallet", func(c *Config) { c.Approvals[0].Wallets = []string{"w.1"} }, "wallets"},
		{"rule without approvers", func(c *Config) { c.Approvals[0].Approvers = nil }, "approvers empty"},
		{"rule unknown approver", func(c *Config) { c.Approvals[0].Approvers = []string{"alice", "zed"} }, `"zed" is not in approvers`},
		{"rule approver twice", func(c *Config) { c.Approvals[0].Approvers = []string{"alice", "alice"} }, "listed twice"},
		{"required zero", func(c *Config) { c.Approvals[0].Required = 0 }, "required 0"},
		{"required above K", func(c *Config) { c.Approvals[0].Required = 3 }, "required 3, want 1..2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			tc.change(&cfg)
			_, err := New(cfg)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("got %v, want ErrInvalid saying %q", err, tc.reason)
			}
		})
	}
	// The YAML form of docs/client-policy.md parses, unknown fields refused.
	yamlDoc := fmt.Sprintf("clients:\n  - name: A\n    public_key: %q\n    client_ids: [svcA]\n    ops: [sign]\n"+
		"approvers:\n  - id: alice\n    public_key: %q\n  - id: bob\n    public_key: %q\n"+
		"approvals:\n  - client_id: svcA\n    ops: [sign]\n    wallets: [treasury]\n    required: 2\n    approvers: [alice, bob]\n",
		pemOf(t, client.Public()), pemOf(t, alice.Public()), pemOf(t, bob.Public()))
	p, err := Parse([]byte(yamlDoc))
	if err != nil {
		t.Fatalf("yaml: %v", err)
	}
	if !p.RequiresApproval("svcA", "sign", "treasury") || p.RequiresApproval("svcA", "sign", "other") {
		t.Fatal("wallet-scoped rule")
	}
	if _, err := Parse([]byte(strings.Replace(yamlDoc, "required: 2", "required: 2\n    quorum: 1", 1))); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown field: %v", err)
	}
}
