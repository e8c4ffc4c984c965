package hd_test

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/hwsigner/signer/internal/testvectors"
	"github.com/hwsigner/signer/protocol/hd"
)

// testdata/vectors/hd.json (made by cmd/gentestvectors, read by
// clients/typescript) agrees with this package.
func TestVectorsHD(t *testing.T) {
	b, err := os.ReadFile("../../testdata/vectors/hd.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors []testvectors.HDVector `json:"vectors"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) < 20 {
		t.Fatalf("%d vectors", len(f.Vectors))
	}
	for _, v := range f.Vectors {
		pub, _ := hex.DecodeString(v.Pub)
		cc, err := hd.ChainCode(v.KeyType, pub)
		var child *hd.Child
		if err == nil {
			if hex.EncodeToString(cc) != v.ChainCode {
				t.Errorf("%s: chain code %x, want %s", v.Name, cc, v.ChainCode)
			}
			child, err = hd.Derive(v.KeyType, pub, cc, v.Path)
		}
		if v.Error {
			if err == nil {
				t.Errorf("%s: derived, want an error", v.Name)
			}
			continue
		}
		if err != nil || hex.EncodeToString(child.PubKey) != v.Child {
			t.Errorf("%s: %v; want child %s", v.Name, err, v.Child)
		}
	}
}
