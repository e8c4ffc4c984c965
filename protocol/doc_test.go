package protocol

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"strings"
	"testing"
)

// docBlock returns the fenced code block that follows "<!-- example:name -->".
func docBlock(t *testing.T, doc, name string) string {
	t.Helper()
	marker := "<!-- example:" + name + " -->"
	_, rest, ok := strings.Cut(doc, marker)
	if !ok {
		t.Fatalf("marker %s not found", marker)
	}
	_, rest, ok = strings.Cut(rest, "```")
	if ok {
		_, rest, ok = strings.Cut(rest, "\n") // skip the info string
	}
	if !ok {
		t.Fatalf("no code block after %s", marker)
	}
	body, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("unterminated code block after %s", marker)
	}
	return strings.TrimSuffix(body, "\n")
}

func stripSpace(s string) string { return strings.Join(strings.Fields(s), "") }

func TestCanonicalEncodingDocExample(t *testing.T) {
	raw, err := os.ReadFile("../docs/canonical-encoding.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	seed, err := hex.DecodeString(docBlock(t, doc, "seed"))
	if err != nil {
		t.Fatal(err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	request := []byte(docBlock(t, doc, "request"))
	wantText := docBlock(t, doc, "signing-input")
	wantHex := stripSpace(docBlock(t, doc, "hex"))
	wantSig := docBlock(t, doc, "signature")

	input, err := RequestSigningInput(request)
	if err != nil {
		t.Fatal(err)
	}
	if string(input) != wantText {
		t.Errorf("signing input text:\n got %q\nwant %q", input, wantText)
	}
	if got := hex.EncodeToString(input); got != wantHex {
		t.Errorf("signing input hex:\n got %s\nwant %s", got, wantHex)
	}
	if got := base64.StdEncoding.EncodeToString(ed25519.Sign(priv, input)); got != wantSig {
		t.Errorf("signature:\n got %s\nwant %s", got, wantSig)
	}
	if !strings.Contains(string(request), `"signature": "`+wantSig+`"`) {
		t.Error("the example request does not carry the documented signature")
	}
	if err := VerifyRequest(request, priv.Public()); err != nil {
		t.Errorf("VerifyRequest(example): %v", err)
	}
	keyID, _ := KeyID(priv.Public())
	if !strings.Contains(doc, "`key_id` is `"+keyID+"`") {
		t.Errorf("documented key_id differs from %s", keyID)
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if !strings.Contains(doc, pemText) {
		t.Errorf("documented PEM differs from\n%s", pemText)
	}
	// Re-signing through SignRequest (Ed25519 is deterministic) gives the
	// documented bytes.
	req, err := DecodeRequest(OpSign, request)
	if err != nil {
		t.Fatal(err)
	}
	out, err := SignRequest(t.Context(), priv, OpSign, req)
	if err != nil {
		t.Fatal(err)
	}
	canon, _ := Canonicalize(request)
	if !bytes.Equal(out, canon) {
		t.Errorf("SignRequest output differs from the canonical example:\n%s\n%s", out, canon)
	}
	// Changing the derivation path breaks it, as the document says.
	tampered := strings.Replace(string(request), "[44, 501, 0]", "[44, 501, 1]", 1)
	if VerifyRequest([]byte(tampered), priv.Public()) == nil {
		t.Error("tampered example verifies")
	}
}

func TestErrorCodesDoc(t *testing.T) {
	raw, err := os.ReadFile("../docs/error-codes.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ErrorCodes() {
		if !strings.Contains(string(raw), "`"+c+"`") {
			t.Errorf("docs/error-codes.md does not document %s", c)
		}
	}
}

// TestApprovalDocExample checks the worked example of
// docs/canonical-encoding.md §9 byte for byte.
func TestApprovalDocExample(t *testing.T) {
	raw, err := os.ReadFile("../docs/canonical-encoding.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	request := []byte(docBlock(t, doc, "request"))
	seed, err := hex.DecodeString(docBlock(t, doc, "approver-seed"))
	if err != nil {
		t.Fatal(err)
	}
	approver := ed25519.NewKeyFromSeed(seed)
	der, _ := x509.MarshalPKIXPublicKey(approver.Public())
	if pemText := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); !strings.Contains(doc, pemText) {
		t.Errorf("documented approver PEM differs from\n%s", pemText)
	}
	digest, err := RequestDigest(request)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(digest[:]); got != docBlock(t, doc, "request-digest") {
		t.Errorf("request digest %s", got)
	}
	in, _ := RequestSigningInput(request)
	if sha256.Sum256(in) != digest {
		t.Error("the digest of a request without approvals is not SHA-256 of its signed bytes")
	}
	var a Approval
	if err := json.Unmarshal([]byte(docBlock(t, doc, "approval")), &a); err != nil {
		t.Fatal(err)
	}
	if got := string(ApprovalSigningInput(digest, a.ApproverID, a.ExpiresAt)); got != docBlock(t, doc, "approval-signing-input") {
		t.Errorf("approval signing input %q", got)
	}
	made, err := SignApproval(t.Context(), approver, "alice", a.Expires(), request)
	if err != nil {
		t.Fatal(err)
	}
	if made != a {
		t.Errorf("SignApproval made %+v, documented %+v", made, a)
	}
	if err := VerifyApproval(digest, a, approver.Public()); err != nil {
		t.Error(err)
	}
	approved := []byte(docBlock(t, doc, "approved-request"))
	cseed, _ := hex.DecodeString(docBlock(t, doc, "seed"))
	if err := VerifyRequest(approved, ed25519.NewKeyFromSeed(cseed).Public()); err != nil {
		t.Errorf("approved request: %v", err)
	}
	req, err := DecodeRequest(OpSign, approved)
	if err != nil || len(req.Env().Approvals) != 1 || req.Env().Approvals[0] != a {
		t.Fatalf("approved request decodes to %v, %v", req, err)
	}
	if d, _ := RequestDigest(approved); d != digest {
		t.Error("approved request has another digest")
	}
	moved, _ := RequestDigest([]byte(strings.Replace(string(approved), "7f3c2a9e", "7f3c2a9f", 1)))
	if VerifyApproval(moved, a, approver.Public()) == nil {
		t.Error("the approval verifies for another request_id")
	}
}
