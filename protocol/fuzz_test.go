package protocol

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The fuzz targets below run their committed seeds (testdata/fuzz/FuzzX/) as
// ordinary tests under `go test`; `make fuzz` runs them as fuzzers. Set
// WRITE_FUZZ_SEEDS=1 to regenerate the seeds made from the real code.

// fuzzKey is the Ed25519 key of RFC 8032 §7.1 TEST 1, the client key of the
// worked example in docs/canonical-encoding.md: seeds signed with it verify in
// every run.
var fuzzKey = ed25519.NewKeyFromSeed(mustHexBytes("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))

// fuzzP256 is a fixed P-256 key, so that seeds signed with it verify in every
// run.
var fuzzP256 = func() *ecdsa.PrivateKey {
	d := big.NewInt(0x5eed)
	x, y := elliptic.P256().ScalarBaseMult(d.Bytes())
	return &ecdsa.PrivateKey{PublicKey: ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}, D: d}
}()

func mustKeyID(t testing.TB, pub crypto.PublicKey) string {
	id, err := KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustHexBytes(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// writeSeeds writes corpus files for target in the `go test fuzz v1` format
// when WRITE_FUZZ_SEEDS is set; every value is one []byte argument.
func writeSeeds(t testing.TB, target string, seeds map[string][]byte) {
	if os.Getenv("WRITE_FUZZ_SEEDS") == "" {
		return
	}
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// requestSeeds are valid signed requests of every op made by SignRequest, and
// edge cases around them.
func requestSeeds(t testing.TB) map[string][]byte {
	ctx := context.Background()
	sign := func(op string, r any) []byte {
		raw, err := SignRequest(ctx, fuzzKey, op, r)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	sr := testSigning()
	ed := testSigning()
	ed.KeyType, ed.Tx, ed.NetworkInternalCode = KeyTypeEd25519, []byte("\x00\x00msg"), "sol<devnet>&\u00e9"
	kg := testKeygen()
	kg.KeyTypes = []string{KeyTypeEd25519}
	rs := testReshare()
	// A signing request carrying approvals (an Ed25519 and a P-256
	// approver), and one whose approval has an extra, case-folded member.
	ap := testSigning()
	ap.TxID = "tx-approved"
	ap.Op, ap.KeyID = OpSign, mustKeyID(t, fuzzKey.Public())
	unsignedAp, err := json.Marshal(ap)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		id  string
		key crypto.Signer
	}{{"alice", fuzzKey}, {"bob", fuzzP256}} {
		a, err := SignApproval(ctx, k.key, k.id, ap.Expires(), unsignedAp)
		if err != nil {
			t.Fatal(err)
		}
		ap.Approvals = append(ap.Approvals, a)
	}
	approved := sign(OpSign, ap)
	doc, err := os.ReadFile("../docs/canonical-encoding.md")
	if err != nil {
		t.Fatal(err)
	}
	_, example, _ := strings.Cut(string(doc), "<!-- example:request -->\n```json\n")
	example, _, _ = strings.Cut(example, "```")
	signed := sign(OpSign, sr)
	return map[string][]byte{
		"sign-secp256k1":        signed,
		"sign-ed25519":          sign(OpSign, ed),
		"keygen":                sign(OpKeygen, kg),
		"reshare":               sign(OpReshare, rs),
		"doc-example":           []byte(example),
		"sign-approvals":        approved,
		"approval-case-folded":  bytes.Replace(approved, []byte(`{"approver_id":"bob"`), []byte(`{"Approver_ID":"bob","approver_id":"bob"`), 1),
		"unknown-member-signed": sign(OpSign, map[string]any{"client_id": "svcA", "request_id": "r1", "created_at": 1767225600000, "expires_at": 1767225900000, "wallet_id": "w", "key_type": "ed25519", "tx_id": "t", "tx": "AA==", "priority": "high"}),
		"unsigned-tail":         bytes.Replace(signed, []byte(`,"signature"`), []byte(`,"x":1,"signature"`), 1),
		"duplicate-member":      bytes.Replace(signed, []byte(`{`), []byte(`{"client_id":"svcB",`), 1),
		"float":                 []byte(`{"op":"sign","created_at":1.5}`),
		"deep":                  []byte(strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 40)),
		"not-object":            []byte(`["op","sign"]`),
		"bad-utf8":              []byte("{\"op\":\"sign\",\"tx_id\":\"\xff\"}"),
		"case-folded":           []byte(`{"op":"sign","Wallet_ID":"w"}`),
		"empty":                 {},
	}
}

// FuzzRequest decodes arbitrary bytes as a request of every op and verifies
// them against an Ed25519 and a P-256 key; it never panics. The input is also
// signed with the Ed25519 key (the fuzzer cannot forge signatures, so this is
// how it reaches the code after verification): a correctly signed request
// always verifies, and a request that verifies re-encodes canonically to the
// same signed bytes and decodes to the same typed value, whose every known
// member is what was signed.
func FuzzRequest(f *testing.F) {
	seeds := requestSeeds(f)
	writeSeeds(f, "FuzzRequest", seeds)
	for _, s := range seeds {
		f.Add(s)
	}
	edPub := fuzzKey.Public()
	p256Pub := fuzzP256.Public()
	kid, _ := KeyID(edPub)
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, op := range []string{OpKeygen, OpSign, OpReshare, "bogus"} {
			req, err := DecodeRequest(op, raw)
			if req == nil && err == nil {
				t.Fatalf("%s: nil request without an error", op)
			}
			if req != nil && req.Operation() != op {
				t.Fatalf("%s: decoded a %s request", op, req.Operation())
			}
			if err == nil && req.Validate() != nil {
				t.Fatalf("%s: accepted a request that does not validate", op)
			}
		}
		for _, pub := range []crypto.PublicKey{edPub, p256Pub} {
			if err := VerifyRequest(raw, pub); err == nil {
				checkVerified(t, raw, pub)
			}
		}
		// Sign what the fuzzer made, keeping its bytes where possible.
		obj, err := parseObject(raw)
		if err != nil {
			return
		}
		op, _ := obj["op"].(string)
		if !ValidOp(op) || obj["key_id"] != kid {
			return
		}
		var resigned []byte
		if _, has := obj["signature"]; has {
			delete(obj, "signature")
			resigned = appendCanonical(nil, obj)
		} else {
			resigned = bytes.TrimRight(raw, " \t\r\n")
		}
		in, err := RequestSigningInput(resigned)
		if err != nil {
			t.Fatalf("signing input of a parsed object: %v", err)
		}
		sig := base64.StdEncoding.EncodeToString(ed25519.Sign(fuzzKey, in))
		body := resigned[:len(resigned)-1] // without '}'
		sep := ","
		if len(obj) == 0 {
			sep = ""
		}
		resigned = append(append([]byte(nil), body...), sep+`"signature":"`+sig+`"}`...)
		if len(resigned) > MaxMessageSize {
			return
		}
		if err := VerifyRequest(resigned, edPub); err != nil {
			t.Fatalf("correctly signed request does not verify: %v\n%q", err, resigned)
		}
		checkVerified(t, resigned, edPub)
	})
}

// checkVerified checks a request that verifies against pub.
func checkVerified(t *testing.T, raw []byte, pub crypto.PublicKey) {
	t.Helper()
	canon, err := Canonicalize(raw)
	if err != nil {
		t.Fatalf("verified request does not canonicalize: %v", err)
	}
	a, errA := RequestSigningInput(raw)
	b, errB := RequestSigningInput(canon)
	if errA != nil || errB != nil || !bytes.Equal(a, b) {
		t.Fatalf("signing input changed by canonicalization (%v, %v):\n%q\n%q", errA, errB, a, b)
	}
	if err := VerifyRequest(canon, pub); err != nil {
		t.Fatalf("canonical form of a verified request does not verify: %v", err)
	}
	if again, _ := Canonicalize(canon); !bytes.Equal(again, canon) {
		t.Fatalf("canonicalization not idempotent:\n%q\n%q", canon, again)
	}
	obj, _ := parseObject(raw)
	op := obj["op"].(string)
	req, derr := DecodeRequest(op, raw)
	req2, derr2 := DecodeRequest(op, canon)
	if fmt.Sprint(derr) != fmt.Sprint(derr2) || !reflect.DeepEqual(req, req2) {
		t.Fatalf("raw and canonical forms decode differently: %v / %v", derr, derr2)
	}
	if derr != nil {
		return
	}
	// The typed view the node acts on must be what was signed: every known
	// member, re-encoded from the typed value, equals the signed member.
	typed, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	tobj, err := parseObject(typed)
	if err != nil {
		t.Fatalf("typed request re-encodes to unacceptable JSON: %v", err)
	}
	for _, k := range jsonFieldNames(reflect.TypeOf(req), nil) {
		sv, signedHas := obj[k]
		tv, typedHas := tobj[k]
		if !typedHas {
			// omitempty: the signed member must be absent or empty too.
			if signedHas && !emptyJSON(sv) {
				t.Fatalf("member %q: signed %s, typed value empty", k, appendCanonical(nil, sv))
			}
			continue
		}
		if !signedHas {
			if !emptyJSON(tv) {
				t.Fatalf("member %q: not signed, typed value %s", k, appendCanonical(nil, tv))
			}
			continue
		}
		if s, t2 := appendCanonical(nil, sv), appendCanonical(nil, tv); !bytes.Equal(s, t2) {
			t.Fatalf("member %q: signed %s, node acts on %s", k, s, t2)
		}
	}
}

func emptyJSON(v any) bool {
	switch t := v.(type) {
	case nil:
		return true
	case string:
		return t == ""
	case []any:
		return len(t) == 0
	case json.Number:
		return t == "0"
	case bool:
		return !t
	}
	return false
}

// FuzzVerifyResult feeds arbitrary bytes to VerifyResult and DecodeResult:
// no panic, and a result verifies only with its node's key.
func FuzzVerifyResult(f *testing.F) {
	ctx := context.Background()
	res := &Result{Op: OpSign, ResultType: ResultSuccess, RequestID: "r1", ClientID: "svcA", WalletID: "w", TxID: "t", KeyType: KeyTypeEd25519, Signature: strings.Repeat("ab", 64)}
	good, err := SignResult(ctx, fuzzP256, "node0", res)
	if err != nil {
		f.Fatal(err)
	}
	errRes := &Result{Op: OpKeygen, RequestID: "r2", ClientID: ""}
	errRes.SetError(CodeUnknownWallet, "no wallet")
	bad, err := SignResult(ctx, fuzzP256, "node0", errRes)
	if err != nil {
		f.Fatal(err)
	}
	seeds := map[string][]byte{
		"success":        good,
		"error":          bad,
		"forged-node":    bytes.Replace(good, []byte(`"node_id":"node0"`), []byte(`"node_id":"node1"`), 1),
		"forged-payload": bytes.Replace(good, []byte(`"result_type":"success"`), []byte(`"result_type":"error"`), 1),
		"no-signature":   []byte(`{"node_id":"node0","op":"sign"}`),
	}
	writeSeeds(f, "FuzzVerifyResult", seeds)
	for _, s := range seeds {
		f.Add(s)
	}
	keys := map[string]crypto.PublicKey{"node0": fuzzP256.Public(), "node1": fuzzKey.Public()}
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, _ = DecodeResult(raw)
		r, err := VerifyResult(raw, keys)
		if err != nil {
			return
		}
		obj, perr := parseObject(raw)
		if perr != nil {
			t.Fatalf("verified result does not parse: %v", perr)
		}
		if obj["node_id"] != r.NodeID {
			t.Fatalf("node_id %v verified, typed %q", obj["node_id"], r.NodeID)
		}
		if err := verifyMember(obj, "node_signature", keys[r.NodeID], ResultDomain); err != nil {
			t.Fatalf("verified with the wrong key: %v", err)
		}
	})
}
