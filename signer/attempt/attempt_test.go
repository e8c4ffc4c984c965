package attempt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func keys(t *testing.T, ids ...string) (map[string]*ecdsa.PrivateKey, map[string]*ecdsa.PublicKey) {
	t.Helper()
	priv, pub := map[string]*ecdsa.PrivateKey{}, map[string]*ecdsa.PublicKey{}
	for _, id := range ids {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv[id], pub[id] = k, &k.PublicKey
	}
	return priv, pub
}

func plan() Plan {
	return Plan{ClientID: "svcA", RequestID: "req-1", Attempt: 1, Signers: []string{"node0", "node2"},
		Excluded: []string{"node1"}, Reason: "node1 did not answer the handshake", From: "node0"}
}

func TestSignDecodeRoundTrip(t *testing.T) {
	priv, pub := keys(t, "node0", "node1", "node2")
	raw, err := Sign(context.Background(), priv["node0"], plan())
	if err != nil {
		t.Fatal(err)
	}
	p, err := Decode(raw, pub)
	if err != nil {
		t.Fatal(err)
	}
	if p.From != "node0" || p.Attempt != 1 || strings.Join(p.Signers, ",") != "node0,node2" || p.CreatedAt == 0 {
		t.Fatalf("decoded %+v", p)
	}
	if err := p.Check("svcA", "req-1", []string{"node0", "node1", "node2"}, 1); err != nil {
		t.Fatal(err)
	}
}

// The attacks: a plan not signed by the node it names (a rogue publisher
// with NATS credentials, or a node signing in another's name), a plan
// altered after signing, junk, and well-signed plans that do not fit the
// wallet.
func TestHostilePlans(t *testing.T) {
	priv, pub := keys(t, "node0", "node1", "node2")
	rogue, _ := keys(t, "node0")
	good, err := Sign(context.Background(), priv["node0"], plan())
	if err != nil {
		t.Fatal(err)
	}
	var w wire
	if err := json.Unmarshal(good, &w); err != nil {
		t.Fatal(err)
	}
	altered := strings.Replace(string(w.Plan), `"req-1"`, `"req-2"`, 1)
	alteredRaw, _ := json.Marshal(wire{Plan: json.RawMessage(altered), Sig: w.Sig})
	forged, err := Sign(context.Background(), rogue["node0"], plan())
	if err != nil {
		t.Fatal(err)
	}
	byOther, err := Sign(context.Background(), priv["node1"], plan()) // node1 signs a plan naming node0
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		want error
	}{
		{"forged key", forged, ErrForged},
		{"signed by another node", byOther, ErrForged},
		{"altered after signing", alteredRaw, ErrForged},
		{"junk", []byte("{not json"), ErrMalformed},
		{"unknown field", []byte(`{"plan":{},"sig":"","x":1}`), ErrMalformed},
		{"too large", []byte(`{"plan":"` + strings.Repeat("a", MaxSize) + `"}`), ErrMalformed},
		{"attempt 0", mustSign(t, priv["node0"], func(p *Plan) { p.Attempt = 0 }), ErrMalformed},
		{"attempt too high", mustSign(t, priv["node0"], func(p *Plan) { p.Attempt = MaxAttempts + 1 }), ErrMalformed},
		{"unsorted signers", mustSign(t, priv["node0"], func(p *Plan) { p.Signers = []string{"node2", "node0"} }), ErrMalformed},
		{"excluded signer", mustSign(t, priv["node0"], func(p *Plan) { p.Excluded = []string{"node2"} }), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode(tc.raw, pub); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}

	committee := []string{"node0", "node1", "node2"}
	for _, tc := range []struct {
		name   string
		mutate func(p *Plan)
		client string
	}{
		{"other request", func(p *Plan) { p.RequestID = "req-2" }, "svcA"},
		{"other client", nil, "svcB"},
		{"planner outside the committee", func(p *Plan) { p.From = "node9" }, "svcA"},
		{"signer outside the committee", func(p *Plan) { p.Signers = []string{"node0", "node9"} }, "svcA"},
		{"too many signers", func(p *Plan) { p.Signers = []string{"node0", "node1", "node2"}; p.Excluded = nil }, "svcA"},
	} {
		t.Run("misfit "+tc.name, func(t *testing.T) {
			p := plan()
			if tc.mutate != nil {
				tc.mutate(&p)
			}
			if err := p.Check(tc.client, "req-1", committee, 1); !errors.Is(err, ErrMisfit) {
				t.Fatalf("err = %v, want ErrMisfit", err)
			}
		})
	}
}

func mustSign(t *testing.T, k *ecdsa.PrivateKey, mutate func(*Plan)) []byte {
	t.Helper()
	p := plan()
	mutate(&p)
	// Sign refuses a malformed plan: build the wire form by hand.
	p.V, p.CreatedAt = version, 1
	raw, _ := json.Marshal(p)
	if _, err := Sign(context.Background(), k, p); err == nil {
		t.Fatalf("Sign accepted a malformed plan %+v", p)
	}
	w, _ := json.Marshal(wire{Plan: raw, Sig: []byte("x")})
	return w
}
