package protocol_test

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hwsigner/signer/internal/testvectors"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
)

// The shared test vectors (testdata/vectors, read by clients/typescript too)
// are what cmd/gentestvectors makes from this code: regenerating gives the
// same bytes, and each vector verifies with this package.

const vectorDir = "../testdata/vectors"

func readVectors(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func TestVectorsUpToDate(t *testing.T) {
	prev, err := testvectors.ReadDir(vectorDir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := testvectors.Generate(prev)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range testvectors.Files {
		if !bytes.Equal(prev[name], got[name]) {
			t.Errorf("testdata/vectors/%s is not what cmd/gentestvectors makes now: run `go run ./cmd/gentestvectors -out testdata/vectors`", name)
		}
	}
}

type vecKey struct {
	Type      string `json:"type"`
	Private   string `json:"private"`
	PublicPEM string `json:"public_pem"`
	Public    string `json:"public"`
	KeyID     string `json:"key_id"`
}

type vecKeys struct {
	ClientEd25519 vecKey            `json:"client_ed25519"`
	ClientP256    vecKey            `json:"client_p256"`
	Nodes         map[string]vecKey `json:"nodes"`
}

func loadKeys(t *testing.T) (map[string]crypto.PublicKey, map[string]crypto.PublicKey, ed25519.PrivateKey) {
	var k vecKeys
	readVectors(t, "keys.json", &k)
	clients := map[string]crypto.PublicKey{}
	for name, v := range map[string]vecKey{"client_ed25519": k.ClientEd25519, "client_p256": k.ClientP256} {
		pub, err := keyfile.ParsePublicKey(v.PublicPEM)
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := protocol.KeyID(pub); id != v.KeyID {
			t.Errorf("%s: key_id %s, want %s", name, v.KeyID, id)
		}
		clients[name] = pub
	}
	nodes := map[string]crypto.PublicKey{}
	for id, v := range k.Nodes {
		pub, err := keyfile.ParsePublicKey(v.PublicPEM)
		if err != nil {
			t.Fatal(err)
		}
		nodes[id] = pub
	}
	seed, _ := hex.DecodeString(k.ClientEd25519.Private)
	return clients, nodes, ed25519.NewKeyFromSeed(seed)
}

func TestVectorsCanonical(t *testing.T) {
	var f struct {
		Vectors []testvectors.CanonicalVector `json:"vectors"`
	}
	readVectors(t, "canonical.json", &f)
	if len(f.Vectors) < 20 {
		t.Fatalf("%d canonical vectors", len(f.Vectors))
	}
	for _, v := range f.Vectors {
		in, err := base64.StdEncoding.DecodeString(v.InputB64)
		if err != nil {
			t.Fatal(err)
		}
		got, err := protocol.Canonicalize(in)
		if v.Error {
			if err == nil {
				t.Errorf("%s: accepted, want an error", v.Name)
			}
			continue
		}
		if err != nil || string(got) != v.Canonical {
			t.Errorf("%s: %q, %v; want %q", v.Name, got, err, v.Canonical)
		}
	}
}

func TestVectorsRequests(t *testing.T) {
	clients, _, edKey := loadKeys(t)
	var f struct {
		Vectors     []testvectors.RequestVector    `json:"vectors"`
		Reformatted []testvectors.RequestVector    `json:"reformatted"`
		Bad         []testvectors.BadRequestVector `json:"bad_requests"`
	}
	readVectors(t, "requests.json", &f)
	for _, v := range append(f.Vectors, f.Reformatted...) {
		if err := protocol.VerifyRequest([]byte(v.Request), clients[v.Key]); err != nil {
			t.Errorf("%s (%s): %v", v.Name, v.Key, err)
		}
		in, err := protocol.RequestSigningInput([]byte(v.Request))
		if err != nil || string(in) != v.SigningInput {
			t.Errorf("%s (%s): signing input %q, %v", v.Name, v.Key, in, err)
		}
	}
	for _, v := range f.Vectors {
		if !v.Deterministic {
			continue
		}
		raw, err := protocol.SignRequest(t.Context(), edKey, v.Op, v.Unsigned)
		if err != nil || string(raw) != v.Request {
			t.Errorf("%s: SignRequest gives %s, %v; want %s", v.Name, raw, err, v.Request)
		}
	}
	for _, v := range f.Bad {
		err := protocol.VerifyRequest([]byte(v.Request), clients[v.Key])
		want := map[string]error{"invalid_signature": protocol.ErrInvalidSignature, "malformed": protocol.ErrMalformed, "unknown_op": protocol.ErrUnknownOp}[v.Error]
		if want == nil || !errors.Is(err, want) {
			t.Errorf("%s (%s): %v, want %s", v.Name, v.Key, err, v.Error)
		}
	}
}

func TestVectorsResults(t *testing.T) {
	_, nodes, _ := loadKeys(t)
	var f struct {
		Vectors []testvectors.ResultVector `json:"vectors"`
	}
	readVectors(t, "results.json", &f)
	for _, v := range f.Vectors {
		_, err := protocol.VerifyResult([]byte(v.Raw), nodes)
		if v.Valid {
			if err != nil {
				t.Errorf("%s: %v", v.Name, err)
			}
			if in, _ := protocol.ResultSigningInput([]byte(v.Raw)); string(in) != v.SigningInput {
				t.Errorf("%s: signing input %q", v.Name, in)
			}
			continue
		}
		want := map[string]error{"invalid_signature": protocol.ErrInvalidSignature, "malformed": protocol.ErrMalformed, "unknown_node": protocol.ErrUnknownNode}[v.Error]
		if want == nil || !errors.Is(err, want) {
			t.Errorf("%s: %v, want %s", v.Name, err, v.Error)
		}
	}
}
