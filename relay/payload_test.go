package relay

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/protocol"
)

// testNodes returns three node identity keys and the rules of a 2-of-3
// cluster.
func testNodes(t *testing.T) (map[string]crypto.Signer, map[string]crypto.PublicKey, attest.Rules) {
	t.Helper()
	signers, pubs := map[string]crypto.Signer{}, map[string]crypto.PublicKey{}
	for _, id := range []string{"node0", "node1", "node2"} {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		signers[id], pubs[id] = k, k.Public()
	}
	return signers, pubs, attest.Rules{Nodes: []string{"node0", "node1", "node2"}, Signers: 2}
}

func signSuccess(reqID string) *protocol.Result {
	return &protocol.Result{Op: protocol.OpSign, ResultType: protocol.ResultSuccess, RequestID: reqID, ClientID: "svcA",
		KeyID: "06e3fd8fda29bb60ab59557de61edb0a", WalletID: "w1", TxID: "tx1", KeyType: protocol.KeyTypeEd25519,
		PubKey: strings.Repeat("ab", 32), Signature: strings.Repeat("cd", 64)}
}

func signed(t *testing.T, k crypto.Signer, node string, r *protocol.Result) []byte {
	t.Helper()
	cp := *r
	raw, err := protocol.SignResult(context.Background(), k, node, &cp)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// decide runs the collector over raws (verified first) and encodes the
// decision as the relay does.
func decide(t *testing.T, pubs map[string]crypto.PublicKey, rules attest.Rules, raws ...[]byte) []byte {
	t.Helper()
	col := attest.NewCollector(protocol.OpSign, rules)
	for _, raw := range raws {
		res, err := protocol.VerifyResult(raw, pubs)
		if err != nil {
			t.Fatal(err)
		}
		if d, done := col.Add(res, raw); done {
			body, err := encodeDelivery(d, protocol.Result{})
			if err != nil {
				t.Fatal(err)
			}
			return body
		}
	}
	body, err := encodeDelivery(col.Expire(), protocol.Result{Op: protocol.OpSign, RequestID: "r1", ClientID: "svcA"})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func TestDeliveryVerifies(t *testing.T) {
	keys, pubs, rules := testNodes(t)
	ok := signSuccess("r1")
	forged := signSuccess("r1")
	forged.Signature = strings.Repeat("ee", 64)
	failed := signSuccess("r1")
	failed.SetError(protocol.CodeUnknownWallet, "no such wallet")
	honest := decide(t, pubs, rules, signed(t, keys["node2"], "node2", forged), signed(t, keys["node0"], "node0", ok), signed(t, keys["node1"], "node1", ok))
	errBody := decide(t, pubs, rules, signed(t, keys["node0"], "node0", failed), signed(t, keys["node1"], "node1", failed))
	timeout := decide(t, pubs, rules, signed(t, keys["node2"], "node2", forged), signed(t, keys["node0"], "node0", ok))

	edit := func(body []byte, f func(*Delivery)) []byte {
		var d Delivery
		if err := json.Unmarshal(body, &d); err != nil {
			t.Fatal(err)
		}
		f(&d)
		b, _ := json.Marshal(d)
		return b
	}
	otherReq := signSuccess("r2")
	tests := []struct {
		name string
		body []byte
		want string // result_type/error_code, or "" for ErrNotAttested
	}{
		{"honest success despite a forged result published first", honest, "success"},
		{"attested error", errBody, "error/UNKNOWN_WALLET"},
		{"relay timeout with evidence", timeout, "error/TIMEOUT"},
		{"one attestation dropped", edit(honest, func(d *Delivery) { d.Attestations = d.Attestations[:1] }), ""},
		{"forged result with one real node signature", edit(honest, func(d *Delivery) {
			d.Result, _ = attestedResult(forged)
			d.Attestations = [][]byte{signed(t, keys["node2"], "node2", forged)}
		}), ""},
		{"result changed under the attestations", edit(honest, func(d *Delivery) {
			d.Result = bytes.Replace(d.Result, []byte(strings.Repeat("cd", 64)), []byte(strings.Repeat("ee", 64)), 1)
		}), ""},
		{"attestation tampered", edit(honest, func(d *Delivery) {
			d.Attestations[1] = bytes.Replace(d.Attestations[1], []byte(`"tx1"`), []byte(`"tx2"`), 1)
		}), ""},
		{"attestation of another request", edit(honest, func(d *Delivery) {
			d.Attestations[1] = signed(t, keys["node1"], "node1", otherReq)
		}), ""},
		{"error turned into a success", edit(errBody, func(d *Delivery) { d.Result, _ = attestedResult(ok) }), ""},
		{"success hidden as a timeout", edit(honest, func(d *Delivery) {
			r := *ok
			r.SetError(protocol.CodeTimeout, "hidden")
			d.Result, _ = attestedResult(&r)
		}), ""},
		{"garbage attestation", edit(honest, func(d *Delivery) { d.Attestations[0] = []byte("not a result") }), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := VerifyDelivery(tc.body, pubs, rules)
			if tc.want == "" {
				if !errors.Is(err, ErrNotAttested) && !errors.Is(err, protocol.ErrMalformed) {
					t.Fatalf("accepted (%v): %+v", err, res)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := res.ResultType
			if res.ErrorCode != "" {
				got += "/" + res.ErrorCode
			}
			if got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
			if res.NodeID != "" || res.NodeSignature != "" || res.RequestID != "r1" || res.KeyID == "" {
				t.Fatalf("result %+v", res)
			}
		})
	}
	// The honest success is node0's and node1's, not the forger's.
	var d Delivery
	_ = json.Unmarshal(honest, &d)
	if len(d.Attestations) != 2 || bytes.Contains(honest, []byte(strings.Repeat("ee", 64))) {
		t.Fatalf("honest delivery: %s", honest)
	}
	if _, err := json.Marshal(d); err != nil || d.Nodes != nil {
		t.Fatalf("a success lists nodes: %v", d.Nodes)
	}
	_ = json.Unmarshal(errBody, &d)
	if d.Nodes["node0"] == "" || d.Nodes["node1"] == "" {
		t.Fatalf("error decision without what the nodes reported: %s", errBody)
	}
}

func TestDecisionMsgIDIsPerRequest(t *testing.T) {
	a := DecisionMsgID("svcA", "sign", "r1", "k1")
	for _, other := range []string{
		DecisionMsgID("svcB", "sign", "r1", "k1"), DecisionMsgID("svcA", "keygen", "r1", "k1"),
		DecisionMsgID("svcA", "sign", "r2", "k1"), DecisionMsgID("svcA", "sign", "r1", "k2"),
	} {
		if other == a {
			t.Fatalf("%s collides", a)
		}
	}
	if a != DecisionMsgID("svcA", "sign", "r1", "k1") {
		t.Fatal("not deterministic")
	}
}
