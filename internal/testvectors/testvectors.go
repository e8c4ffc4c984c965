// Package testvectors generates the shared test vectors in testdata/vectors/
// (canonical encodings, request and result signatures, committee decisions,
// HD derivations, message ids and subjects) from the Go implementation, for
// the clients in other languages (clients/typescript) and for the Go tests
// that check them (protocol/vectors_test.go, protocol/hd/vectors_test.go,
// attest/vectors_test.go, routing/vectors_test.go).
//
// Every key is fixed (public test keys: never use them for anything else).
// Ed25519 signatures are deterministic. ECDSA P-256 signatures are
// randomized, so Generate takes the previous vector files: a signature there
// that still verifies over the same bytes is kept, which makes a second run
// byte for byte identical (and lets the Go test regenerate and compare).
package testvectors

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	secpecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/protocol/hd"
	"github.com/hwsigner/signer/routing"
)

// Files are the vector files Generate writes, in testdata/vectors/.
var Files = []string{"keys.json", "canonical.json", "requests.json", "results.json", "attest.json", "hd.json", "routing.json"}

// Fixed times of the vectors: 2026-01-01T00:00:00Z and five minutes later.
const (
	CreatedAt = 1767225600000
	ExpiresAt = 1767225900000
)

// Ed25519ClientSeed is RFC 8032 §7.1 TEST 1 (docs/canonical-encoding.md §5).
const Ed25519ClientSeed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"

// scalar is a fixed 32-byte private scalar: SHA-256 of a label.
func scalar(label string) []byte {
	s := sha256.Sum256([]byte("hwsigner test vector " + label))
	return s[:]
}

// Keys holds the fixed keys of the vectors.
type Keys struct {
	ClientEd25519 ed25519.PrivateKey
	ClientP256    *ecdsa.PrivateKey
	Nodes         map[string]*ecdsa.PrivateKey // node0..node2
	Outsider      *ecdsa.PrivateKey            // a P-256 key that is no node's
	WalletSecp    *secp256k1.PrivateKey
	WalletEd      ed25519.PrivateKey
}

// NewKeys returns the fixed keys.
func NewKeys() (*Keys, error) {
	seed, _ := hex.DecodeString(Ed25519ClientSeed)
	k := &Keys{ClientEd25519: ed25519.NewKeyFromSeed(seed), Nodes: map[string]*ecdsa.PrivateKey{}}
	var err error
	if k.ClientP256, err = ecdsa.ParseRawPrivateKey(elliptic.P256(), scalar("client p256")); err != nil {
		return nil, err
	}
	for _, n := range []string{"node0", "node1", "node2"} {
		if k.Nodes[n], err = ecdsa.ParseRawPrivateKey(elliptic.P256(), scalar(n)); err != nil {
			return nil, err
		}
	}
	if k.Outsider, err = ecdsa.ParseRawPrivateKey(elliptic.P256(), scalar("outsider")); err != nil {
		return nil, err
	}
	k.WalletSecp = secp256k1.PrivKeyFromBytes(scalar("wallet secp256k1"))
	k.WalletEd = ed25519.NewKeyFromSeed(scalar("wallet ed25519"))
	return k, nil
}

// sigCache maps SHA-256 of an ECDSA signing input to signatures made
// before (by any key).
type sigCache map[[32]byte][][]byte

// cachedSigner signs with an ECDSA key, reusing a cached signature of the
// same digest when it verifies.
type cachedSigner struct {
	key   *ecdsa.PrivateKey
	cache sigCache
}

func (s cachedSigner) Public() crypto.PublicKey { return s.key.Public() }

func (s cachedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	var d [32]byte
	copy(d[:], digest)
	for _, sig := range s.cache[d] {
		if ecdsa.VerifyASN1(&s.key.PublicKey, digest, sig) {
			return sig, nil
		}
	}
	sig, err := s.key.Sign(rand.Reader, digest, opts)
	if err == nil {
		s.cache[d] = append(s.cache[d], sig)
	}
	return sig, err
}

// loadCache collects the ECDSA signatures of previous vector files (name ->
// contents; missing files are fine).
func loadCache(prev map[string][]byte) sigCache {
	c := sigCache{}
	addSigned := func(raw []byte, result bool) {
		var obj map[string]any
		if json.Unmarshal(raw, &obj) != nil {
			return
		}
		member := "signature"
		in, err := protocol.RequestSigningInput(raw)
		if result {
			member = "node_signature"
			in, err = protocol.ResultSigningInput(raw)
		}
		if err != nil {
			return
		}
		s, _ := obj[member].(string)
		sig, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(sig) == 0 {
			return
		}
		d := sha256.Sum256(in)
		c[d] = append(c[d], sig) // the first in Files order that verifies wins

	}
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, e := range t {
				if s, ok := e.(string); ok {
					switch k {
					case "request":
						addSigned([]byte(s), false)
					case "raw":
						addSigned([]byte(s), true)
					}
				}
				walk(e)
			}
		case []any:
			for _, e := range t {
				if s, ok := e.(string); ok && strings.HasPrefix(s, "{") {
					addSigned([]byte(s), true)
				}
				walk(e)
			}
		}
	}
	for _, name := range Files {
		var v any
		if json.Unmarshal(prev[name], &v) == nil {
			walk(v)
		}
	}
	return c
}

// Generate returns the vector files (name -> contents). prev holds the
// previous files, whose ECDSA signatures are reused when they still verify.
func Generate(prev map[string][]byte) (map[string][]byte, error) {
	k, err := NewKeys()
	if err != nil {
		return nil, err
	}
	g := &gen{k: k, cache: loadCache(prev)}
	out := map[string][]byte{}
	gens := map[string]func() (any, error){
		"keys.json": g.keys, "canonical.json": g.canonical, "requests.json": g.requests,
		"results.json": g.results, "attest.json": g.attest, "hd.json": g.hd, "routing.json": g.routing,
	}
	for _, name := range Files { // in order: the signature cache fills deterministically
		f := gens[name]
		v, err := f()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return nil, err
		}
		out[name] = buf.Bytes()
	}
	return out, nil
}

type gen struct {
	k     *Keys
	cache sigCache
}

func (g *gen) node(id string) crypto.Signer { return cachedSigner{g.k.Nodes[id], g.cache} }

func pem(pub crypto.PublicKey) string {
	s, err := keyfile.MarshalPublicKeyPEM(pub)
	if err != nil {
		panic(err)
	}
	return s
}

func keyID(pub crypto.PublicKey) string {
	id, err := protocol.KeyID(pub)
	if err != nil {
		panic(err)
	}
	return id
}

// KeyVector describes one fixed key.
type KeyVector struct {
	Type string `json:"type"`
	// Private: the Ed25519 seed or the P-256 / secp256k1 scalar, hex. These
	// are public test keys.
	Private   string `json:"private"`
	PublicPEM string `json:"public_pem,omitempty"`
	// Public: raw public key, hex (32-byte Ed25519; uncompressed P-256 SEC1;
	// compressed secp256k1).
	Public string `json:"public"`
	KeyID  string `json:"key_id,omitempty"`
}

func p256Vector(k *ecdsa.PrivateKey) KeyVector {
	d, _ := k.Bytes()
	pub, _ := k.PublicKey.Bytes()
	return KeyVector{Type: "p256", Private: hex.EncodeToString(d), PublicPEM: pem(k.Public()), Public: hex.EncodeToString(pub), KeyID: keyID(k.Public())}
}

func (g *gen) keys() (any, error) {
	k := g.k
	nodes := map[string]KeyVector{}
	for id, n := range k.Nodes {
		nodes[id] = p256Vector(n)
	}
	return map[string]any{
		"comment": "Fixed PUBLIC test keys of the vectors (internal/testvectors). Never use them for anything else.",
		"client_ed25519": KeyVector{Type: "ed25519", Private: hex.EncodeToString(k.ClientEd25519.Seed()), PublicPEM: pem(k.ClientEd25519.Public()),
			Public: hex.EncodeToString(k.ClientEd25519.Public().(ed25519.PublicKey)), KeyID: keyID(k.ClientEd25519.Public())},
		"client_p256":      p256Vector(k.ClientP256),
		"nodes":            nodes,
		"outsider":         p256Vector(k.Outsider),
		"wallet_secp256k1": KeyVector{Type: "secp256k1", Private: hex.EncodeToString(k.WalletSecp.Serialize()), Public: hex.EncodeToString(k.WalletSecp.PubKey().SerializeCompressed())},
		"wallet_ed25519":   KeyVector{Type: "ed25519", Private: hex.EncodeToString(k.WalletEd.Seed()), Public: hex.EncodeToString(k.WalletEd.Public().(ed25519.PublicKey))},
	}, nil
}

// CanonicalVector: input (base64 of the exact bytes), and either the
// canonical encoding or error=true (rejected, docs/canonical-encoding.md §2).
type CanonicalVector struct {
	Name      string `json:"name"`
	InputB64  string `json:"input_b64"`
	Input     string `json:"input,omitempty"` // the same bytes as text, when valid UTF-8
	Canonical string `json:"canonical,omitempty"`
	Error     bool   `json:"error,omitempty"`
}

// CanonicalInputs are the inputs of canonical.json.
func CanonicalInputs() []struct {
	Name  string
	Input []byte
} {
	deep := strings.Repeat("[", 33) + strings.Repeat("]", 33)
	ok32 := strings.Repeat("[", 31) + strings.Repeat("]", 31)
	in := []struct {
		Name  string
		Input []byte
	}{
		{"empty object", []byte(`{}`)},
		{"whitespace around", []byte(" \t\r\n{ } \n")},
		{"member order", []byte(`{"b":1,"a":2,"aa":3,"A":4,"_":5,"a_b":6}`)},
		{"nested", []byte(`{"z":{"y":[3,{"b":true,"a":null}],"x":false},"a":[]}`)},
		{"integers", []byte(`{"a":0,"b":-1,"c":9007199254740991,"d":-9007199254740991,"e":1767225600000}`)},
		{"escapes decoded", []byte(`{"s":"\u00e9\u0041\/\"\\\b\f\n\r\t\u0001\u001f\u007f"}`)},
		{"html and unicode unescaped", []byte("{\"s\":\"<a>&b\u2028\u2029 é 😀\"}")},
		{"surrogate pair escape", []byte(`{"s":"\ud83d\ude00"}`)},
		{"control characters", []byte("{\"s\":\"\\u0000\\u0007\\u000b\\u000e\"}")},
		{"empty string and array", []byte(`{"":"","a":[[]]}`)},
		{"nesting 32", []byte(`{"a":` + ok32 + `}`)},
		{"duplicate member", []byte(`{"a":1,"a":2}`)},
		{"nested duplicate", []byte(`{"a":{"b":1,"b":1}}`)},
		{"float", []byte(`{"a":1.5}`)},
		{"exponent", []byte(`{"a":1e3}`)},
		{"minus zero", []byte(`{"a":-0}`)},
		{"leading zero", []byte(`{"a":01}`)},
		{"too large integer", []byte(`{"a":9007199254740992}`)},
		{"too small integer", []byte(`{"a":-9007199254740992}`)},
		{"non-ASCII member name", []byte(`{"é":1}`)},
		{"trailing data", []byte(`{"a":1}{}`)},
		{"trailing comma", []byte(`{"a":1,}`)},
		{"array at top level", []byte(`[1]`)},
		{"string at top level", []byte(`"a"`)},
		{"invalid UTF-8", []byte("{\"a\":\"\xff\"}")},
		{"nesting 33", []byte(`{"a":` + deep + `}`)},
		{"empty input", []byte(``)},
		{"unquoted name", []byte(`{a:1}`)},
	}
	return in
}

func (g *gen) canonical() (any, error) {
	var out []CanonicalVector
	for _, c := range CanonicalInputs() {
		v := CanonicalVector{Name: c.Name, InputB64: base64.StdEncoding.EncodeToString(c.Input)}
		if isUTF8(c.Input) {
			v.Input = string(c.Input)
		}
		can, err := protocol.Canonicalize(c.Input)
		if err != nil {
			v.Error = true
		} else {
			v.Canonical = string(can)
		}
		out = append(out, v)
	}
	return map[string]any{"comment": "protocol.Canonicalize: canonical encoding (RFC 8785 subset) or rejection (docs/canonical-encoding.md §2-3)", "vectors": out}, nil
}

func isUTF8(b []byte) bool { return strings.ToValidUTF8(string(b), "\uFFFD") == string(b) }

// RequestVector: a request signed by a client key.
type RequestVector struct {
	Name string `json:"name"`
	// Key: "client_ed25519" or "client_p256" (keys.json).
	Key string `json:"key"`
	Op  string `json:"op"`
	// Unsigned: the request members before signing (op and key_id included).
	Unsigned map[string]any `json:"unsigned"`
	// SigningInput: the exact bytes signed, as text.
	SigningInput string `json:"signing_input"`
	// Request: the signed request in canonical form (what signRequest
	// returns). For ed25519 byte for byte reproducible; for p256
	// verification only (the signature is randomized).
	Request string `json:"request"`
	// Deterministic: the signature can be reproduced (Ed25519).
	Deterministic bool `json:"deterministic"`
}

// BadRequestVector: a signed request that must not verify.
type BadRequestVector struct {
	Name    string `json:"name"`
	Key     string `json:"key"`
	Request string `json:"request"`
	// Error: "invalid_signature", "malformed" or "unknown_op".
	Error string `json:"error"`
}

func (g *gen) signReq(name, key string, op string, m map[string]any) (RequestVector, error) {
	var s crypto.Signer = g.k.ClientEd25519
	if key == "client_p256" {
		s = cachedSigner{g.k.ClientP256, g.cache}
	}
	raw, err := protocol.SignRequest(context.Background(), s, op, m)
	if err != nil {
		return RequestVector{}, err
	}
	in, err := protocol.RequestSigningInput(raw)
	if err != nil {
		return RequestVector{}, err
	}
	u := maps.Clone(m)
	u["op"], u["key_id"] = op, keyID(s.Public())
	return RequestVector{Name: name, Key: key, Op: op, Unsigned: u, SigningInput: string(in), Request: string(raw), Deterministic: key == "client_ed25519"}, nil
}

func (g *gen) requests() (any, error) {
	base := func(extra map[string]any) map[string]any {
		m := map[string]any{"client_id": "svcA", "request_id": "7f3c2a9e1b0d4c8f9a6e5d4c3b2a1908", "created_at": CreatedAt, "expires_at": ExpiresAt}
		maps.Copy(m, extra)
		return m
	}
	sign := map[string]any{"wallet_id": "wallet-42", "key_type": "ed25519", "tx_id": "tx_0001", "tx": "AAABAgME",
		"derivation_path": []any{44, 501, 0}, "network_internal_code": "sol<devnet>&\u00e9"}
	type item struct {
		name, op string
		m        map[string]any
	}
	items := []item{
		{"sign ed25519 (docs example)", "sign", base(sign)},
		{"sign secp256k1 digest", "sign", base(map[string]any{"wallet_id": "w1", "key_type": "secp256k1", "tx_id": "t1",
			"tx": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xab}, 32))})},
		{"keygen both key types", "keygen", base(map[string]any{"wallet_id": "w1"})},
		{"keygen legacy client", "keygen", base(map[string]any{"wallet_id": "w1", "client_id": "", "key_types": []any{"ed25519"}})},
		{"reshare", "reshare", base(map[string]any{"wallet_id": "w1", "key_type": "secp256k1", "session_id": "s1",
			"node_ids": []any{"node0", "node1", "node2"}, "new_threshold": 1})},
		{"unknown member covered", "sign", base(map[string]any{"wallet_id": "w1", "key_type": "ed25519", "tx_id": "t1", "tx": "aGk=", "priority": "high"})},
	}
	var out []RequestVector
	for _, key := range []string{"client_ed25519", "client_p256"} {
		for _, it := range items {
			v, err := g.signReq(it.name, key, it.op, it.m)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", it.name, err)
			}
			out = append(out, v)
		}
	}
	// Tampered copies of the first vectors of each key.
	var bad []BadRequestVector
	for _, v := range out {
		if v.Name != "sign ed25519 (docs example)" {
			continue
		}
		tamper := func(name, errKind string, f func(m map[string]any)) {
			var m map[string]any
			dec := json.NewDecoder(strings.NewReader(v.Request))
			dec.UseNumber()
			_ = dec.Decode(&m)
			f(m)
			b, _ := json.Marshal(m)
			bad = append(bad, BadRequestVector{Name: name, Key: v.Key, Request: string(b), Error: errKind})
		}
		tamper("derivation_path changed", "invalid_signature", func(m map[string]any) { m["derivation_path"] = []any{44, 501, 1} })
		tamper("member added", "invalid_signature", func(m map[string]any) { m["priority"] = "high" })
		tamper("client_id changed", "invalid_signature", func(m map[string]any) { m["client_id"] = "svcB" })
		tamper("op changed", "invalid_signature", func(m map[string]any) { m["op"] = "keygen" })
		tamper("signature removed", "invalid_signature", func(m map[string]any) { delete(m, "signature") })
		tamper("key_id of another key", "invalid_signature", func(m map[string]any) { m["key_id"] = "00000000000000000000000000000000" })
		tamper("unknown op", "unknown_op", func(m map[string]any) { m["op"] = "destroy" })
		bad = append(bad, BadRequestVector{Name: "duplicate member", Key: v.Key, Request: `{"op":"sign","op":"sign"}`, Error: "malformed"})
	}
	// The request with whitespace and another member order verifies.
	var spaced []RequestVector
	for _, v := range out[:1] {
		var m map[string]any
		dec := json.NewDecoder(strings.NewReader(v.Request))
		dec.UseNumber()
		_ = dec.Decode(&m)
		b, _ := json.MarshalIndent(m, "", "   ")
		w := v
		w.Name, w.Request = "reformatted (whitespace, escapes) still verifies", strings.Replace(string(b), "é", `\u00e9`, 1)
		spaced = append(spaced, w)
	}
	return map[string]any{
		"comment":      "protocol.SignRequest / VerifyRequest. keys: keys.json. p256 signatures are randomized: verify them, do not compare.",
		"vectors":      out,
		"reformatted":  spaced,
		"bad_requests": bad,
	}, nil
}

// ResultVector: one node's signed result.
type ResultVector struct {
	Name string `json:"name"`
	Raw  string `json:"raw"`
	// Valid: VerifyResult with the nodes of keys.json accepts it; else
	// Error is "unknown_node", "invalid_signature" or "malformed".
	Valid bool   `json:"valid"`
	Error string `json:"error,omitempty"`
	// SigningInput: the bytes the node signed (valid vectors).
	SigningInput string `json:"signing_input,omitempty"`
}

// SignatureCheck: attest.VerifySignature (or VerifySignResult with PubKey)
// over Tx (base64).
type SignatureCheck struct {
	Name   string           `json:"name"`
	Result *protocol.Result `json:"result"`
	Tx     string           `json:"tx"`
	// PubKey to check against (hex); the result's pub_key when empty.
	PubKey string `json:"pub_key,omitempty"`
	Valid  bool   `json:"valid"`
}

func (g *gen) signed(node string, r protocol.Result) (string, error) {
	raw, err := protocol.SignResult(context.Background(), g.node(node), node, &r)
	return string(raw), err
}

func (g *gen) results() (any, error) {
	clientKey := keyID(g.k.ClientEd25519.Public())
	success := protocol.Result{Op: "sign", ResultType: "success", RequestID: "r1", ClientID: "svcA", WalletID: "w1", TxID: "t1",
		KeyType: "ed25519", KeyID: clientKey, PubKey: strings.Repeat("ab", 32), Signature: strings.Repeat("cd", 64)}
	var out []ResultVector
	add := func(name, node string, r protocol.Result) (string, error) {
		raw, err := g.signed(node, r)
		if err != nil {
			return "", err
		}
		in, _ := protocol.ResultSigningInput([]byte(raw))
		out = append(out, ResultVector{Name: name, Raw: raw, Valid: true, SigningInput: string(in)})
		return raw, nil
	}
	raw, err := add("sign success", "node0", success)
	if err != nil {
		return nil, err
	}
	errRes := success
	errRes.PubKey, errRes.Signature = "", ""
	errRes.SetError(protocol.CodeUnknownWallet, "no wallet w1 <&> é")
	if _, err := add("error result", "node1", errRes); err != nil {
		return nil, err
	}
	kg := protocol.Result{Op: "keygen", ResultType: "success", RequestID: "r2", ClientID: "", WalletID: "w1", KeyID: clientKey,
		ECDSAPubKey: hex.EncodeToString(g.k.WalletSecp.PubKey().SerializeCompressed()), EdDSAPubKey: hex.EncodeToString(g.k.WalletEd.Public().(ed25519.PublicKey))}
	if _, err := add("keygen success, legacy client", "node2", kg); err != nil {
		return nil, err
	}
	// Invalid ones.
	mut := func(name, errKind, s string) { out = append(out, ResultVector{Name: name, Raw: s, Error: errKind}) }
	mut("member changed", "invalid_signature", strings.Replace(raw, `"wallet_id":"w1"`, `"wallet_id":"w2"`, 1))
	mut("member added", "invalid_signature", strings.Replace(raw, `{"client_id"`, `{"extra":1,"client_id"`, 1))
	mut("node_id of another node", "invalid_signature", strings.Replace(raw, `"node_id":"node0"`, `"node_id":"node1"`, 1))
	mut("unknown node", "unknown_node", strings.Replace(raw, `"node_id":"node0"`, `"node_id":"node9"`, 1))
	outsider, err := protocol.SignResult(context.Background(), cachedSigner{g.k.Outsider, g.cache}, "node0", &success)
	if err != nil {
		return nil, err
	}
	mut("signed by a key that is not node0's", "invalid_signature", string(outsider))
	mut("no node_signature", "invalid_signature", strings.Replace(raw, `"node_signature":"`, `"node_signaturx":"`, 1))
	mut("duplicate member", "malformed", strings.Replace(raw, `{"client_id":"svcA"`, `{"client_id":"svcA","client_id":"svcA"`, 1))
	mut("member differing only in case", "malformed", strings.Replace(raw, `{"client_id"`, `{"Wallet_ID":"w1","client_id"`, 1))
	mut("float", "malformed", strings.Replace(raw, `"signature_recovery":0`, `"signature_recovery":0.5`, 1))
	for _, v := range out {
		if !v.Valid {
			continue
		}
		if _, err := protocol.VerifyResult([]byte(v.Raw), g.nodeKeys()); err != nil {
			return nil, fmt.Errorf("%s: %w", v.Name, err)
		}
	}

	checks, err := g.signatureChecks()
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"comment":          "protocol.SignResult / VerifyResult against keys.json nodes; signature_checks: attest.VerifySignature / VerifySignResult",
		"vectors":          out,
		"signature_checks": checks,
	}, nil
}

func (g *gen) nodeKeys() map[string]crypto.PublicKey {
	m := map[string]crypto.PublicKey{}
	for id, k := range g.k.Nodes {
		m[id] = k.Public()
	}
	return m
}

func (g *gen) signatureChecks() ([]SignatureCheck, error) {
	digest := sha256.Sum256([]byte("send 0.1 BTC to bc1qvectors"))
	msg := append([]byte{0, 0}, []byte("hello from the threshold signer")...)
	secpRes := func(priv *secp256k1.PrivateKey) *protocol.Result {
		compact := secpecdsa.SignCompact(priv, digest[:], true) // RFC 6979: deterministic
		rec := int(compact[0]-27) & 3
		res := &protocol.Result{Op: "sign", ResultType: "success", RequestID: "r1", ClientID: "svcA", WalletID: "w1", TxID: "t1",
			KeyType: "secp256k1", PubKey: hex.EncodeToString(priv.PubKey().SerializeCompressed())}
		if err := res.SetECDSASignature(compact[1:33], compact[33:], rec); err != nil {
			panic(err)
		}
		return res
	}
	edRes := func(priv ed25519.PrivateKey, m []byte) *protocol.Result {
		res := &protocol.Result{Op: "sign", ResultType: "success", RequestID: "r1", ClientID: "svcA", WalletID: "w1", TxID: "t1",
			KeyType: "ed25519", PubKey: hex.EncodeToString(priv.Public().(ed25519.PublicKey))}
		_ = res.SetEdDSASignature(ed25519.Sign(priv, m))
		return res
	}
	// A child key at m/44/60/0/0/7 of the secp256k1 wallet, signed with the
	// child private key (wallet key + delta).
	walletPub := g.k.WalletSecp.PubKey().SerializeCompressed()
	cc, err := hd.ChainCode("secp256k1", walletPub)
	if err != nil {
		return nil, err
	}
	child, err := hd.Derive("secp256k1", walletPub, cc, []uint32{44, 60, 0, 0, 7})
	if err != nil {
		return nil, err
	}
	var d, delta secp256k1.ModNScalar
	d.SetByteSlice(g.k.WalletSecp.Serialize())
	delta.SetByteSlice(child.Delta.FillBytes(make([]byte, 32)))
	d.Add(&delta)
	childPriv := secp256k1.NewPrivateKey(&d)
	if !bytes.Equal(childPriv.PubKey().SerializeCompressed(), child.PubKey) {
		return nil, fmt.Errorf("child private key does not match the derived child key")
	}

	tx := base64.StdEncoding.EncodeToString(digest[:])
	txEd := base64.StdEncoding.EncodeToString(msg)
	good := secpRes(g.k.WalletSecp)
	badRec := *good
	badRec.SignatureRecovery ^= 1
	badSig := *good
	badSig.Signature = good.R + strings.Repeat("0", 63) + "1"
	childRes := secpRes(childPriv)
	edGood := edRes(g.k.WalletEd, msg)
	edBad := *edGood
	edBad.Signature = edGood.Signature[:len(edGood.Signature)-2] + "00"
	if edBad.Signature == edGood.Signature {
		edBad.Signature = edGood.Signature[:len(edGood.Signature)-2] + "01"
	}
	otherDigest := sha256.Sum256([]byte("other"))
	checks := []SignatureCheck{
		{Name: "secp256k1 wallet key", Result: good, Tx: tx},
		{Name: "secp256k1 wrong recovery id", Result: &badRec, Tx: tx},
		{Name: "secp256k1 signature not r||s", Result: &badSig, Tx: tx},
		{Name: "secp256k1 other digest", Result: good, Tx: base64.StdEncoding.EncodeToString(otherDigest[:])},
		{Name: "secp256k1 child key m/44/60/0/0/7", Result: childRes, Tx: tx, PubKey: hex.EncodeToString(child.PubKey)},
		{Name: "secp256k1 child signature under the wallet key", Result: childRes, Tx: tx, PubKey: hex.EncodeToString(walletPub)},
		{Name: "ed25519 wallet key, leading zero bytes", Result: edGood, Tx: txEd},
		{Name: "ed25519 changed signature", Result: &edBad, Tx: txEd},
		{Name: "ed25519 message without leading zeros", Result: edGood, Tx: base64.StdEncoding.EncodeToString(msg[2:])},
	}
	for i := range checks {
		c := &checks[i]
		txb, _ := base64.StdEncoding.DecodeString(c.Tx)
		if c.PubKey != "" {
			pub, _ := hex.DecodeString(c.PubKey)
			c.Valid = attest.VerifySignResult(c.Result, pub, txb) == nil
		} else {
			c.Valid = attest.VerifySignature(c.Result, txb) == nil
		}
	}
	return checks, nil
}

// AttestCase: results fed in order to one attest.Collector.
type AttestCase struct {
	Name    string   `json:"name"`
	Op      string   `json:"op"`
	Nodes   []string `json:"nodes"`
	Signers int      `json:"signers"`
	// Results: raw signed node results, in the order they arrive. Each
	// verifies against keys.json (forgeries are in results.json).
	Results []string `json:"results"`
	// DecidedAt: index of the result whose Add decided, or -1 (then the
	// decision is Expire's TIMEOUT).
	DecidedAt int `json:"decided_at"`
	// Code: "" for a success, else the decision's error code.
	Code string `json:"code"`
	// Attesters: node ids of the attestations, sorted.
	Attesters []string `json:"attesters"`
	// Result: the decided result's canonical encoding (without node_id and
	// node_signature for client-made errors; for attested ones, the
	// lowest attester's result minus node_id and node_signature).
	Result string `json:"result"`
}

func (g *gen) attest() (any, error) {
	nodes := []string{"node0", "node1", "node2"}
	ck := keyID(g.k.ClientEd25519.Public())
	sign := func(rid string) protocol.Result {
		return protocol.Result{Op: "sign", ResultType: "success", RequestID: rid, ClientID: "svcA", WalletID: "w1", TxID: "t1",
			KeyType: "ed25519", KeyID: ck, PubKey: strings.Repeat("ab", 32), Signature: strings.Repeat("cd", 64)}
	}
	fail := func(r protocol.Result, code string) protocol.Result {
		r.PubKey, r.Signature = "", ""
		r.SetError(code, "reason of "+code)
		return r
	}
	kg := protocol.Result{Op: "keygen", ResultType: "success", RequestID: "k1", ClientID: "svcA", WalletID: "w1", KeyID: ck,
		ECDSAPubKey: hex.EncodeToString(g.k.WalletSecp.PubKey().SerializeCompressed()), EdDSAPubKey: hex.EncodeToString(g.k.WalletEd.Public().(ed25519.PublicKey))}
	kgOther := kg
	kgOther.EdDSAPubKey = strings.Repeat("11", 32)
	other := sign("r1")
	other.Signature = strings.Repeat("ef", 64)
	rs := func(r protocol.Result) protocol.Result {
		return protocol.Result{Op: "reshare", ResultType: "success", RequestID: "s1", ClientID: "svcA", WalletID: "w1", SessionID: "sess1",
			KeyType: "secp256k1", KeyID: ck, PubKey: hex.EncodeToString(g.k.WalletSecp.PubKey().SerializeCompressed()), NewThreshold: 1}
	}(protocol.Result{})
	otherKey := sign("r1")
	otherKey.KeyID = keyID(g.k.ClientP256.Public())
	otherReq := sign("r2")

	type in struct {
		node string
		r    protocol.Result
	}
	cases := []struct {
		name, op string
		signers  int
		ins      []in
	}{
		{"sign: two identical successes", "sign", 2, []in{{"node1", sign("r1")}, {"node0", sign("r1")}}},
		{"sign: one success is not enough", "sign", 2, []in{{"node0", sign("r1")}}},
		{"sign: two different successes decide nothing", "sign", 2, []in{{"node0", sign("r1")}, {"node1", other}}},
		{"sign: forged success outvoted", "sign", 2, []in{{"node0", other}, {"node1", sign("r1")}, {"node2", sign("r1")}}},
		{"sign: success and error decide nothing", "sign", 2, []in{{"node0", sign("r1")}, {"node1", fail(sign("r1"), "CEREMONY_FAILED")}}},
		{"sign: two errors, same code", "sign", 2, []in{{"node2", fail(sign("r1"), "UNKNOWN_WALLET")}, {"node1", fail(sign("r1"), "UNKNOWN_WALLET")}}},
		{"sign: two errors, tie goes to the lowest node", "sign", 2, []in{{"node2", fail(sign("r1"), "EXPIRED")}, {"node1", fail(sign("r1"), "UNKNOWN_WALLET")}}},
		{"sign: three errors, most frequent code", "sign", 3, []in{{"node0", fail(sign("r1"), "EXPIRED")}, {"node1", fail(sign("r1"), "UNKNOWN_WALLET")}, {"node2", fail(sign("r1"), "UNKNOWN_WALLET")}}},
		{"sign: REPLAYED counts for nothing", "sign", 2, []in{{"node0", fail(sign("r1"), "REPLAYED")}, {"node1", fail(sign("r1"), "REPLAYED")}, {"node2", fail(sign("r1"), "REPLAYED")}}},
		{"sign: REPLAYED then the original outcome", "sign", 2, []in{{"node0", fail(sign("r1"), "REPLAYED")}, {"node0", sign("r1")}, {"node1", sign("r1")}}},
		{"sign: a node's second result is ignored", "sign", 2, []in{{"node0", sign("r1")}, {"node0", sign("r1")}}},
		{"sign: a node's first result counts", "sign", 2, []in{{"node0", fail(sign("r1"), "INTERNAL")}, {"node0", sign("r1")}, {"node1", sign("r1")}}},
		{"sign: results for another key do not count", "sign", 2, []in{{"node0", sign("r1")}, {"node1", otherKey}}},
		{"sign: results for another request do not count", "sign", 2, []in{{"node0", sign("r1")}, {"node1", otherReq}}},
		{"sign: signers 3 of 3", "sign", 3, []in{{"node0", sign("r1")}, {"node1", sign("r1")}, {"node2", sign("r1")}}},
		{"sign: default signers is a majority", "sign", 0, []in{{"node2", sign("r1")}, {"node0", sign("r1")}}},
		{"keygen: every node identical", "keygen", 2, []in{{"node2", kg}, {"node0", kg}, {"node1", kg}}},
		{"keygen: two of three is not enough", "keygen", 2, []in{{"node0", kg}, {"node1", kg}}},
		{"keygen: one error decides", "keygen", 2, []in{{"node0", kg}, {"node1", fail(kg, "WALLET_EXISTS")}}},
		{"keygen: different successes are RESULT_MISMATCH", "keygen", 2, []in{{"node0", kg}, {"node1", kgOther}}},
		{"keygen: REPLAYED from every node", "keygen", 2, []in{{"node0", fail(kg, "REPLAYED")}, {"node1", fail(kg, "REPLAYED")}, {"node2", fail(kg, "REPLAYED")}}},
		{"reshare: two identical successes", "reshare", 2, []in{{"node0", rs}, {"node2", rs}}},
		{"reshare: a result of another op is ignored", "reshare", 2, []in{{"node0", rs}, {"node1", sign("s1")}}},
	}
	var out []AttestCase
	for _, c := range cases {
		col := attest.NewCollector(c.op, attest.Rules{Nodes: nodes, Signers: c.signers})
		ac := AttestCase{Name: c.name, Op: c.op, Nodes: nodes, Signers: c.signers, DecidedAt: -1}
		var d attest.Decision
		for i, x := range c.ins {
			raw, err := g.signed(x.node, x.r)
			if err != nil {
				return nil, err
			}
			ac.Results = append(ac.Results, raw)
			res, err := protocol.VerifyResult([]byte(raw), g.nodeKeys())
			if err != nil {
				return nil, err
			}
			if dd, done := col.Add(res, []byte(raw)); done && ac.DecidedAt < 0 {
				d, ac.DecidedAt = dd, i
			}
		}
		if ac.DecidedAt < 0 {
			d = col.Expire()
		}
		if d.Err != nil {
			ac.Code = d.Err.(*attest.Error).Code
		}
		ac.Attesters = []string{}
		for _, raw := range d.Attestations {
			r, _ := protocol.DecodeResult(raw)
			ac.Attesters = append(ac.Attesters, r.NodeID)
		}
		// The decided result as members: for TIMEOUT and RESULT_MISMATCH the
		// reason is made by the Go code; clients compare the other members.
		res := *d.Result
		res.NodeID, res.NodeSignature = "", ""
		if ac.Code == protocol.CodeTimeout || ac.Code == protocol.CodeResultMismatch {
			res.ErrorReason = ""
		}
		b, _ := json.Marshal(&res)
		can, err := protocol.Canonicalize(b)
		if err != nil {
			return nil, err
		}
		ac.Result = string(can)
		out = append(out, ac)
	}
	return map[string]any{
		"comment": "attest.Collector: results added in order (each verifies against keys.json nodes); decided_at -1 means undecided, then Expire (TIMEOUT). " +
			"result: the decision's result with node_id, node_signature (and, for TIMEOUT and RESULT_MISMATCH, error_reason) emptied, encoded as protocol.Result, canonical",
		"cases": out,
	}, nil
}

// HDVector: one derivation.
type HDVector struct {
	Name      string   `json:"name"`
	KeyType   string   `json:"key_type"`
	Pub       string   `json:"pub"`
	Path      []uint32 `json:"path"`
	PathText  string   `json:"path_text"`
	ChainCode string   `json:"chain_code,omitempty"`
	Child     string   `json:"child,omitempty"`
	Error     bool     `json:"error,omitempty"`
}

func (g *gen) hd() (any, error) {
	secpPub := hex.EncodeToString(g.k.WalletSecp.PubKey().SerializeCompressed())
	edPub := hex.EncodeToString(g.k.WalletEd.Public().(ed25519.PublicKey))
	const rfcPub = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
	const bip32Pub = "0339a36013301597daef41fbe593a02cc513d0b55527ec2df1050e2e8ff49c85c2"
	paths := [][]uint32{{}, {0}, {1}, {44, 60, 0, 0, 7}, {2147483647}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}}
	var out []HDVector
	add := func(name, kt, pub string, path []uint32) {
		v := HDVector{Name: name, KeyType: kt, Pub: pub, Path: path, PathText: pathText(path)}
		pb, _ := hex.DecodeString(pub)
		cc, err := hd.ChainCode(kt, pb)
		if err == nil {
			v.ChainCode = hex.EncodeToString(cc)
			var c *hd.Child
			if c, err = hd.Derive(kt, pb, cc, path); err == nil {
				v.Child = hex.EncodeToString(c.PubKey)
			}
		}
		v.Error = err != nil
		if v.Error {
			v.Child = ""
		}
		out = append(out, v)
	}
	for _, kt := range []struct{ kt, name, pub string }{
		{"secp256k1", "vector wallet", secpPub}, {"secp256k1", "BIP32 vector 1 master", bip32Pub},
		{"ed25519", "vector wallet", edPub}, {"ed25519", "RFC 8032 test 1", rfcPub},
	} {
		for _, p := range paths {
			add(kt.kt+" "+kt.name+" "+pathText(p), kt.kt, kt.pub, p)
		}
	}
	add("secp256k1 hardened index refused", "secp256k1", secpPub, []uint32{44, 2147483648})
	add("ed25519 hardened index refused", "ed25519", edPub, []uint32{2147483648})
	add("secp256k1 key not on the curve", "secp256k1", "02"+strings.Repeat("00", 31)+"07", []uint32{0})
	add("secp256k1 uncompressed prefix refused length", "secp256k1", "05"+secpPub[2:], []uint32{0})
	add("ed25519 identity refused", "ed25519", "01"+strings.Repeat("00", 31), []uint32{0})
	add("ed25519 non-canonical encoding refused", "ed25519", "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", []uint32{0})
	add("ed25519 short key refused", "ed25519", edPub[:62], []uint32{0})
	return map[string]any{
		"comment": "protocol/hd: ChainCode then Derive (docs/hd-derivation.md); error: ChainCode or Derive refuses",
		"vectors": out,
	}, nil
}

func pathText(p []uint32) string {
	var b strings.Builder
	b.WriteString("m")
	for _, i := range p {
		fmt.Fprintf(&b, "/%d", i)
	}
	return b.String()
}

// RoutingVector: subjects, consumer names and message ids of one client ID.
type RoutingVector struct {
	ClientID           string            `json:"client_id"`
	RequestSubjects    map[string]string `json:"request_subjects"` // op -> subject for wallet w1
	ResultFilters      map[string]string `json:"result_filters"`   // op -> filter subject
	ResultConsumers    map[string]string `json:"result_consumers"` // op -> durable name
	RequestMsgID       string            `json:"request_msg_id"`   // for request_id r1 and raw
	ResultMsgID        string            `json:"result_msg_id"`    // for request_id r1, node0 and raw
	Raw                string            `json:"raw"`              // the bytes hashed into the ids
	SigningResultSubj  string            `json:"signing_result"`   // SigningResultSubject
	KeygenResultSubj   string            `json:"keygen_result"`    // KeygenResultSubject(w1)
	ReshareResultSubj  string            `json:"reshare_result"`   // ReshareResultSubject(sess1)
	RequestStream      string            `json:"request_stream"`   // MPC_REQUESTS
	ResultStream       string            `json:"result_stream"`    // MPC_RESULTS
	ResultStreamFilter []string          `json:"result_stream_subjects"`
}

func (g *gen) routing() (any, error) {
	raw := `{"op":"sign","wallet_id":"w1"}`
	var out []RoutingVector
	for _, cid := range []string{"", "svcA", "a-b", "a_b"} {
		v := RoutingVector{ClientID: cid, RequestSubjects: map[string]string{}, ResultFilters: map[string]string{}, ResultConsumers: map[string]string{},
			Raw: raw, RequestStream: routing.RequestStream, ResultStream: routing.ResultStream, ResultStreamFilter: routing.ResultStreamSubjects()}
		for _, op := range []string{"keygen", "sign", "reshare"} {
			var err error
			if v.RequestSubjects[op], err = routing.RequestSubject(op, "w1"); err != nil {
				return nil, err
			}
			if v.ResultFilters[op], err = routing.ResultFilterSubject(op, cid); err != nil {
				return nil, err
			}
			if v.ResultConsumers[op], err = routing.ResultConsumerName(op, cid); err != nil {
				return nil, err
			}
		}
		v.RequestMsgID = routing.RequestMsgID(cid, "r1", []byte(raw))
		v.ResultMsgID = routing.ResultMsgID(cid, "r1", "node0", []byte(raw))
		var err error
		if v.SigningResultSubj, err = routing.SigningResultSubject(cid); err != nil {
			return nil, err
		}
		if v.KeygenResultSubj, err = routing.KeygenResultSubject(cid, "w1"); err != nil {
			return nil, err
		}
		if v.ReshareResultSubj, err = routing.ReshareResultSubject(cid, "sess1"); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	codes := protocol.ErrorCodes()
	retry := map[string]bool{}
	for _, c := range codes {
		retry[c] = protocol.Retryable(c)
	}
	return map[string]any{
		"comment":     "package routing: subjects, durable consumer names and Nats-Msg-Ids; error codes (protocol.ErrorCodes, Retryable)",
		"vectors":     out,
		"error_codes": codes,
		"retryable":   retry,
	}, nil
}

// ReadDir reads the vector files present in dir (name -> contents); a
// missing directory or file is no error.
func ReadDir(dir string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, name := range Files {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[name] = b
	}
	return out, nil
}
