package attest_test

import (
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/internal/testvectors"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
)

// testdata/vectors/attest.json and the signature checks of results.json
// (made by cmd/gentestvectors, read by clients/typescript) agree with this
// package.

func read(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile("../testdata/vectors/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestVectorsAttest(t *testing.T) {
	var k struct {
		Nodes map[string]struct {
			PublicPEM string `json:"public_pem"`
		} `json:"nodes"`
	}
	read(t, "keys.json", &k)
	nodes := map[string]crypto.PublicKey{}
	for id, v := range k.Nodes {
		pub, err := keyfile.ParsePublicKey(v.PublicPEM)
		if err != nil {
			t.Fatal(err)
		}
		nodes[id] = pub
	}
	var f struct {
		Cases []testvectors.AttestCase `json:"cases"`
	}
	read(t, "attest.json", &f)
	if len(f.Cases) < 20 {
		t.Fatalf("%d cases", len(f.Cases))
	}
	for _, c := range f.Cases {
		col := attest.NewCollector(c.Op, attest.Rules{Nodes: c.Nodes, Signers: c.Signers})
		decidedAt := -1
		var d attest.Decision
		for i, raw := range c.Results {
			res, err := protocol.VerifyResult([]byte(raw), nodes)
			if err != nil {
				t.Fatalf("%s: result %d: %v", c.Name, i, err)
			}
			if dd, done := col.Add(res, []byte(raw)); done && decidedAt < 0 {
				d, decidedAt = dd, i
			}
		}
		if decidedAt < 0 {
			d = col.Expire()
		}
		code := ""
		if d.Err != nil {
			code = d.Err.(*attest.Error).Code
		}
		var by []string
		for _, raw := range d.Attestations {
			r, _ := protocol.DecodeResult(raw)
			by = append(by, r.NodeID)
		}
		if decidedAt != c.DecidedAt || code != c.Code || len(by) != len(c.Attesters) {
			t.Errorf("%s: decided at %d %q by %v; want %d %q by %v", c.Name, decidedAt, code, by, c.DecidedAt, c.Code, c.Attesters)
			continue
		}
		for i := range by {
			if by[i] != c.Attesters[i] {
				t.Errorf("%s: attesters %v, want %v", c.Name, by, c.Attesters)
			}
		}
	}
}

func TestVectorsSignatureChecks(t *testing.T) {
	var f struct {
		Checks []testvectors.SignatureCheck `json:"signature_checks"`
	}
	read(t, "results.json", &f)
	for _, c := range f.Checks {
		tx, _ := base64.StdEncoding.DecodeString(c.Tx)
		var err error
		if c.PubKey != "" {
			pub, _ := hex.DecodeString(c.PubKey)
			err = attest.VerifySignResult(c.Result, pub, tx)
		} else {
			err = attest.VerifySignature(c.Result, tx)
		}
		if (err == nil) != c.Valid {
			t.Errorf("%s: %v, want valid=%v", c.Name, err, c.Valid)
		}
	}
}
