package attest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hwsigner/signer/protocol"
)

// nodeKeys are P-256 identity keys of node0..node4 and of node9 (outside
// every rule set), so that the tests feed Add real signed, verified bytes.
type nodeKeys map[string]*ecdsa.PrivateKey

func newNodeKeys(t *testing.T) nodeKeys {
	t.Helper()
	keys := nodeKeys{}
	for _, id := range []string{"node0", "node1", "node2", "node3", "node4", "node9"} {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys[id] = k
	}
	return keys
}

func (k nodeKeys) public() map[string]crypto.PublicKey {
	out := map[string]crypto.PublicKey{}
	for id, key := range k {
		out[id] = key.Public()
	}
	return out
}

// signed signs res as node and returns what protocol.VerifyResult gives
// back, with the raw bytes.
func (k nodeKeys) signed(t *testing.T, node string, res protocol.Result) (*protocol.Result, []byte) {
	t.Helper()
	raw, err := protocol.SignResult(context.Background(), k[node], node, &res)
	if err != nil {
		t.Fatal(err)
	}
	got, err := protocol.VerifyResult(raw, k.public())
	if err != nil {
		t.Fatal(err)
	}
	return got, raw
}

func base(op string) protocol.Result {
	r := protocol.Result{Op: op, ResultType: protocol.ResultSuccess, RequestID: "r1", ClientID: "svcA", KeyID: "kid1", WalletID: "w1"}
	switch op {
	case protocol.OpKeygen:
		r.ECDSAPubKey, r.EdDSAPubKey = "02aa", "bb"
	case protocol.OpSign:
		r.KeyType, r.TxID, r.Signature, r.PubKey = protocol.KeyTypeEd25519, "tx1", "5151", "bb"
	case protocol.OpReshare:
		r.KeyType, r.SessionID, r.PubKey, r.NewThreshold = protocol.KeyTypeEd25519, "s1", "bb", 1
	}
	return r
}

type change func(*protocol.Result)

func failWith(code string) change {
	return func(r *protocol.Result) { r.SetError(code, "because "+code) }
}

var (
	forgedKey   change = func(r *protocol.Result) { r.EdDSAPubKey = "cc" }
	forgedSig   change = func(r *protocol.Result) { r.Signature, r.PubKey = "6666", "cc" }
	forgedShare change = func(r *protocol.Result) { r.PubKey = "cc" }
)

type step struct {
	node   string
	change change // nil: the honest result
}

func TestCollector(t *testing.T) {
	keys := newNodeKeys(t)
	three := Rules{Nodes: []string{"node0", "node1", "node2"}, Signers: 2}
	five := Rules{Nodes: []string{"node0", "node1", "node2", "node3", "node4"}, Signers: 3}
	tests := []struct {
		name   string
		op     string
		rules  Rules
		steps  []step
		doneAt int // index of the step that decides; -1: none
		code   string
		// attesters of the decision, in order; named: nodes the error lists.
		attesters []string
		named     []string
		check     func(t *testing.T, res *protocol.Result)
	}{
		{name: "keygen: all identical", op: protocol.OpKeygen, rules: three,
			steps:  []step{{"node1", nil}, {"node2", nil}, {"node0", nil}},
			doneAt: 2, attesters: []string{"node0", "node1", "node2"}},
		{name: "keygen: two of three is not enough", op: protocol.OpKeygen, rules: three,
			steps: []step{{"node1", nil}, {"node2", nil}}, doneAt: -1},
		{name: "keygen: one member's error decides at once and is named", op: protocol.OpKeygen, rules: three,
			steps:  []step{{"node0", nil}, {"node2", failWith(protocol.CodeWalletExists)}, {"node1", nil}},
			doneAt: 1, code: protocol.CodeWalletExists, attesters: []string{"node2"}, named: []string{"node0", "node2"}},
		{name: "keygen: another public key is a mismatch naming both", op: protocol.OpKeygen, rules: three,
			steps:  []step{{"node2", forgedKey}, {"node0", nil}, {"node1", nil}},
			doneAt: 1, code: protocol.CodeResultMismatch, attesters: []string{"node0", "node2"}, named: []string{"node0", "node2"},
			check: func(t *testing.T, res *protocol.Result) {
				if res.EdDSAPubKey != "" || res.ECDSAPubKey != "" || res.NodeID != "" || res.RequestID != "r1" {
					t.Fatalf("mismatch result carries %+v", res)
				}
			}},
		{name: "keygen: node outside the set is ignored", op: protocol.OpKeygen, rules: three,
			steps:  []step{{"node9", forgedKey}, {"node0", nil}, {"node1", nil}, {"node2", nil}},
			doneAt: 3, attesters: []string{"node0", "node1", "node2"}},
		{name: "keygen: a node's second result is ignored", op: protocol.OpKeygen, rules: three,
			steps:  []step{{"node0", nil}, {"node0", forgedKey}, {"node1", nil}, {"node1", failWith(protocol.CodeInternal)}, {"node2", nil}},
			doneAt: 4, attesters: []string{"node0", "node1", "node2"}},
		{name: "sign: t+1 identical successes", op: protocol.OpSign, rules: three,
			steps: []step{{"node2", nil}, {"node0", nil}}, doneAt: 1, attesters: []string{"node0", "node2"}},
		{name: "sign: one success is never enough", op: protocol.OpSign, rules: three,
			steps: []step{{"node1", nil}}, doneAt: -1},
		{name: "sign: forged success first loses to t+1 honest", op: protocol.OpSign, rules: three,
			steps:  []step{{"node2", forgedSig}, {"node0", nil}, {"node1", nil}},
			doneAt: 2, attesters: []string{"node0", "node1"},
			check: func(t *testing.T, res *protocol.Result) {
				if res.Signature != "5151" || res.PubKey != "bb" {
					t.Fatalf("forged signature won: %+v", res)
				}
			}},
		{name: "sign: t forgers of five alone decide nothing", op: protocol.OpSign, rules: five,
			steps: []step{{"node3", forgedSig}, {"node4", forgedSig}}, doneAt: -1},
		{name: "sign: t forgers of five lose to t+1 honest", op: protocol.OpSign, rules: five,
			steps:  []step{{"node3", forgedSig}, {"node4", forgedSig}, {"node0", nil}, {"node1", nil}, {"node2", nil}},
			doneAt: 4, attesters: []string{"node0", "node1", "node2"}},
		{name: "sign: a forger's duplicates count once", op: protocol.OpSign, rules: three,
			steps: []step{{"node2", forgedSig}, {"node2", forgedSig}, {"node2", forgedSig}}, doneAt: -1},
		{name: "sign: duplicate honest result counts once", op: protocol.OpSign, rules: three,
			steps: []step{{"node0", nil}, {"node0", nil}, {"node1", nil}}, doneAt: 2, attesters: []string{"node0", "node1"}},
		{name: "sign: node outside the set cannot make up t+1", op: protocol.OpSign, rules: three,
			steps: []step{{"node9", nil}, {"node0", nil}}, doneAt: -1},
		{name: "sign: one error is not final", op: protocol.OpSign, rules: three,
			steps: []step{{"node0", failWith(protocol.CodeUnknownWallet)}}, doneAt: -1},
		{name: "sign: errors final at t+1", op: protocol.OpSign, rules: three,
			steps:  []step{{"node1", failWith(protocol.CodeUnknownWallet)}, {"node0", failWith(protocol.CodeUnknownWallet)}},
			doneAt: 1, code: protocol.CodeUnknownWallet, attesters: []string{"node0", "node1"}, named: []string{"node0", "node1"}},
		{name: "sign: most frequent error code wins", op: protocol.OpSign, rules: five,
			steps: []step{{"node0", failWith(protocol.CodeInternal)}, {"node1", failWith(protocol.CodeUnknownWallet)},
				{"node2", failWith(protocol.CodeUnknownWallet)}},
			doneAt: 2, code: protocol.CodeUnknownWallet, attesters: []string{"node1", "node2"}, named: []string{"node0", "node1", "node2"}},
		{name: "sign: error code tie goes to the lowest node id", op: protocol.OpSign, rules: three,
			steps:  []step{{"node2", failWith(protocol.CodeInternal)}, {"node1", failWith(protocol.CodeTimeout)}},
			doneAt: 1, code: protocol.CodeTimeout, attesters: []string{"node1"}, named: []string{"node1", "node2"}},
		{name: "sign: t forged errors do not decide", op: protocol.OpSign, rules: five,
			steps:  []step{{"node3", failWith(protocol.CodeUnknownWallet)}, {"node4", failWith(protocol.CodeUnknownWallet)}, {"node0", nil}, {"node1", nil}, {"node2", nil}},
			doneAt: 4, attesters: []string{"node0", "node1", "node2"}},
		{name: "sign: other request, op, client and key_id are ignored", op: protocol.OpSign, rules: three,
			steps: []step{{"node0", nil},
				{"node1", func(r *protocol.Result) { r.RequestID = "r2" }},
				{"node1", func(r *protocol.Result) { r.ClientID = "svcB" }},
				{"node1", func(r *protocol.Result) { r.KeyID = "kid2" }},
				{"node1", func(r *protocol.Result) { *r = base(protocol.OpReshare) }},
				{"node2", nil}},
			doneAt: 5, attesters: []string{"node0", "node2"}},
		{name: "sign: zero signers means a majority", op: protocol.OpSign, rules: Rules{Nodes: five.Nodes},
			steps: []step{{"node0", nil}, {"node1", nil}, {"node2", nil}}, doneAt: 2, attesters: []string{"node0", "node1", "node2"}},
		{name: "reshare: t+1 identical successes", op: protocol.OpReshare, rules: three,
			steps:  []step{{"node1", forgedShare}, {"node2", nil}, {"node0", nil}},
			doneAt: 2, attesters: []string{"node0", "node2"},
			check: func(t *testing.T, res *protocol.Result) {
				if res.PubKey != "bb" || res.NodeID != "node0" {
					t.Fatalf("reshare result %+v", res)
				}
			}},
		{name: "reshare: a forged success alone is never accepted", op: protocol.OpReshare, rules: three,
			steps: []step{{"node1", forgedShare}, {"node2", failWith(protocol.CodeCeremonyFailed)}}, doneAt: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCollector(tc.op, tc.rules)
			var d Decision
			doneAt := -1
			for i, s := range tc.steps {
				res := base(tc.op)
				if s.change != nil {
					s.change(&res)
				}
				got, raw := keys.signed(t, s.node, res)
				if dd, done := c.Add(got, raw); done {
					if doneAt >= 0 {
						t.Fatalf("decided twice, at steps %d and %d", doneAt, i)
					}
					d, doneAt = dd, i
				}
			}
			if doneAt != tc.doneAt {
				t.Fatalf("decided at step %d, want %d (%+v)", doneAt, tc.doneAt, d.Err)
			}
			if doneAt < 0 {
				d = c.Expire()
				var ae *Error
				if !errors.As(d.Err, &ae) || ae.Code != protocol.CodeTimeout || !d.Result.IsTimeout {
					t.Fatalf("expire: %+v", d)
				}
				if len(ae.Nodes) != len(uniqueNodes(tc.rules, tc.steps)) {
					t.Fatalf("expire names %v, saw %v", ae.Nodes, tc.steps)
				}
				return
			}
			checkDecision(t, keys, d, tc.code, tc.attesters, tc.named)
			if tc.check != nil {
				tc.check(t, d.Result)
			}
			// Decided once: later results are not taken, Expire repeats it.
			if _, done := c.Add(keys.signed(t, "node0", base(tc.op))); done {
				t.Fatal("Add after the decision decided again")
			}
			if e := c.Expire(); e.Err != d.Err || e.Result != d.Result {
				t.Fatalf("Expire after the decision: %+v", e)
			}
		})
	}
}

// uniqueNodes are the rule members among steps that were taken (first per
// node, matching request).
func uniqueNodes(r Rules, steps []step) []string {
	var out []string
	for _, s := range steps {
		if slices.Contains(r.Nodes, s.node) && !slices.Contains(out, s.node) {
			out = append(out, s.node)
		}
	}
	return out
}

func checkDecision(t *testing.T, keys nodeKeys, d Decision, code string, attesters, named []string) {
	t.Helper()
	var ae *Error
	switch {
	case code == "" && d.Err != nil:
		t.Fatalf("want success, got %v", d.Err)
	case code == "" && !d.Result.Succeeded():
		t.Fatalf("success decision with result %+v", d.Result)
	case code != "" && (!errors.As(d.Err, &ae) || ae.Code != code || d.Result.ErrorCode != code || d.Result.Succeeded()):
		t.Fatalf("want %s, got %v / %+v", code, d.Err, d.Result)
	}
	var got []string
	for _, raw := range d.Attestations {
		res, err := protocol.VerifyResult(raw, keys.public())
		if err != nil {
			t.Fatalf("attestation does not verify: %v", err)
		}
		got = append(got, res.NodeID)
	}
	if !slices.Equal(got, attesters) {
		t.Fatalf("attestations by %v, want %v (sorted)", got, attesters)
	}
	if code == "" {
		if d.Result.NodeID != attesters[0] {
			t.Fatalf("result of %s, want the lowest attester %s", d.Result.NodeID, attesters[0])
		}
		return
	}
	if len(ae.Nodes) != len(named) {
		t.Fatalf("error names %v, want %v", ae.Nodes, named)
	}
	for _, n := range named {
		if ae.Nodes[n] == "" || !strings.Contains(ae.Reason, n) {
			t.Fatalf("error does not name %s: %v %q", n, ae.Nodes, ae.Reason)
		}
	}
}

func TestExpire(t *testing.T) {
	keys := newNodeKeys(t)
	rules := Rules{Nodes: []string{"node0", "node1", "node2"}, Signers: 2}

	c := NewCollector(protocol.OpSign, rules)
	d := c.Expire()
	var ae *Error
	if !errors.As(d.Err, &ae) || ae.Code != protocol.CodeTimeout || !strings.Contains(ae.Reason, "no node answered") || len(d.Attestations) != 0 {
		t.Fatalf("expire with nothing seen: %+v %v", d, d.Err)
	}

	c = NewCollector(protocol.OpKeygen, rules)
	forged := base(protocol.OpKeygen)
	c.Add(keys.signed(t, "node1", base(protocol.OpKeygen)))
	forgedKey(&forged)
	c.Add(keys.signed(t, "node9", forged)) // outside the set: not "seen"
	d = c.Expire()
	if !errors.As(d.Err, &ae) || ae.Code != protocol.CodeTimeout || len(ae.Nodes) != 1 ||
		!strings.Contains(ae.Nodes["node1"], "eddsa_pub_key=bb") || !strings.Contains(ae.Reason, "node1: success") ||
		!strings.Contains(ae.Reason, "node0,node1,node2") {
		t.Fatalf("expire: %+v", ae)
	}
	if d.Result.RequestID != "r1" || d.Result.WalletID != "w1" || d.Result.ErrorCode != protocol.CodeTimeout || !d.Result.IsTimeout || len(d.Attestations) != 1 {
		t.Fatalf("expire result %+v", d.Result)
	}
	if _, done := c.Add(keys.signed(t, "node0", base(protocol.OpKeygen))); done {
		t.Fatal("Add after Expire decided")
	}
	if !ae.Retryable() {
		t.Fatal("TIMEOUT not retryable")
	}
}

// A long error_reason is cut in the summary; a success's summary names its
// public values.
func TestSummary(t *testing.T) {
	keys := newNodeKeys(t)
	c := NewCollector(protocol.OpKeygen, Rules{Nodes: []string{"node0"}})
	res := base(protocol.OpKeygen)
	res.SetError(protocol.CodeInternal, strings.Repeat("x", 5000))
	d, done := c.Add(keys.signed(t, "node0", res))
	var ae *Error
	if !done || !errors.As(d.Err, &ae) || len(ae.Error()) > 1000 || !strings.Contains(ae.Nodes["node0"], "INTERNAL") {
		t.Fatalf("%v %v", done, d.Err)
	}
}
