package protocol

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRequestDigest: the digest leaves out exactly "approvals" and
// "signature"; any other member, known or not, changes it.
func TestRequestDigest(t *testing.T) {
	ctx := context.Background()
	base, err := SignRequest(ctx, fuzzKey, OpSign, testSigning())
	if err != nil {
		t.Fatal(err)
	}
	want, err := RequestDigest(base)
	if err != nil {
		t.Fatal(err)
	}
	replace := func(old, new string) []byte {
		t.Helper()
		if !strings.Contains(string(base), old) {
			t.Fatalf("%q not in the request", old)
		}
		return []byte(strings.Replace(string(base), old, new, 1))
	}
	tests := []struct {
		name string
		raw  []byte
		same bool
	}{
		{"unsigned", replace(`,"signature":"`+testSigningSig(t, base)+`"`, ""), true},
		{"other signature", replace(testSigningSig(t, base), "AAAA"), true},
		{"approvals added", replace(`{`, `{"approvals":[{"approver_id":"alice","expires_at":1,"signature":"AA=="}],`), true},
		{"whitespace", replace(`{"client_id":"svcA",`, "{ \"client_id\" :\n\"svcA\" ,"), true},
		{"other request_id", replace(`"request_id":"req-1"`, `"request_id":"req-2"`), false},
		{"other tx_id", replace(`"tx_id":"tx-1"`, `"tx_id":"tx-2"`), false},
		{"other expires_at", replace(`"expires_at":`, `"expires_at":1`), false},
		{"unknown member", replace(`{`, `{"priority":"high",`), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RequestDigest(tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			if (got == want) != tc.same {
				t.Fatalf("digest equal %v, want %v", got == want, tc.same)
			}
		})
	}
	// A keygen request with the same members under another op differs:
	// the op's domain string is covered.
	kg := strings.Replace(string(base), `"op":"sign"`, `"op":"keygen"`, 1)
	if d, err := RequestDigest([]byte(kg)); err != nil || d == want {
		t.Fatalf("op not covered: %v", err)
	}
	if _, err := RequestDigest([]byte(`{"op":"bogus"}`)); !errors.Is(err, ErrUnknownOp) {
		t.Fatalf("unknown op: %v", err)
	}
}

// TestApprovalSignVerify signs approvals with Ed25519 and P-256 approver
// keys and checks that each verifies over its own request only.
func TestApprovalSignVerify(t *testing.T) {
	ctx := context.Background()
	req := testSigning()
	raw, err := SignRequest(ctx, fuzzKey, OpSign, req)
	if err != nil {
		t.Fatal(err)
	}
	other := testSigning()
	other.RequestID = "req-other"
	otherRaw, err := SignRequest(ctx, fuzzKey, OpSign, other)
	if err != nil {
		t.Fatal(err)
	}
	digest, _ := RequestDigest(raw)
	otherDigest, _ := RequestDigest(otherRaw)
	exp := req.Expires().Add(-time.Minute)
	for _, k := range []struct {
		name string
		key  crypto.Signer
	}{{"ed25519", newEd25519(t)}, {"p256", newP256(t)}} {
		a, err := SignApproval(ctx, k.key, "alice", exp, raw)
		if err != nil {
			t.Fatalf("%s: %v", k.name, err)
		}
		if a.ApproverID != "alice" || a.ExpiresAt != exp.UnixMilli() {
			t.Fatalf("%s: approval %+v", k.name, a)
		}
		tests := []struct {
			name   string
			digest [32]byte
			a      Approval
			pub    crypto.PublicKey
			want   error
		}{
			{"good", digest, a, k.key.Public(), nil},
			{"another request", otherDigest, a, k.key.Public(), ErrInvalidSignature},
			{"another approver id", digest, Approval{"bob", a.ExpiresAt, a.Signature}, k.key.Public(), ErrInvalidSignature},
			{"later expiry", digest, Approval{a.ApproverID, a.ExpiresAt + 1, a.Signature}, k.key.Public(), ErrInvalidSignature},
			{"another key", digest, a, newEd25519(t).Public(), ErrInvalidSignature},
			{"not base64", digest, Approval{a.ApproverID, a.ExpiresAt, "!!"}, k.key.Public(), ErrInvalidSignature},
			{"empty signature", digest, Approval{a.ApproverID, a.ExpiresAt, ""}, k.key.Public(), ErrInvalidSignature},
			{"unsupported key", digest, a, "rsa", ErrUnsupportedKey},
		}
		for _, tc := range tests {
			t.Run(k.name+"/"+tc.name, func(t *testing.T) {
				err := VerifyApproval(tc.digest, tc.a, tc.pub)
				if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
					t.Fatalf("got %v, want %v", err, tc.want)
				}
			})
		}
	}
	// The approval is the same for the signed request, the unsigned one and
	// the request with approvals attached (Ed25519 is deterministic).
	key := newEd25519(t)
	a1, _ := SignApproval(ctx, key, "alice", exp, raw)
	withApprovals := testSigning()
	withApprovals.Approvals = []Approval{a1}
	raw2, err := SignRequest(ctx, fuzzKey, OpSign, withApprovals)
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := SignApproval(ctx, key, "alice", exp, raw2)
	if a1 != a2 {
		t.Fatalf("approval depends on the approvals member: %+v %+v", a1, a2)
	}
	refusals := []struct {
		name       string
		approverID string
		exp        time.Time
		raw        []byte
		want       error
	}{
		{"expires after the request", "alice", req.Expires().Add(time.Millisecond), raw, ErrInvalidRequest},
		{"bad approver id", "al.ice", exp, raw, ErrInvalidToken},
		{"not a request", "alice", exp, []byte(`[1]`), ErrMalformed},
		{"unknown op", "alice", exp, []byte(`{"op":"x","expires_at":1}`), ErrUnknownOp},
		{"no expires_at", "alice", exp, []byte(`{"op":"sign"}`), ErrMalformed},
	}
	for _, tc := range refusals {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			if _, err := SignApproval(ctx, key, tc.approverID, tc.exp, tc.raw); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestDecodeRequestApprovals checks the shape rules of the approvals member:
// every violation is BAD_REQUEST (a FieldError) naming the field.
func TestDecodeRequestApprovals(t *testing.T) {
	ctx := context.Background()
	good := `{"approver_id":"alice","expires_at":1767225800000,"signature":"AAAA"}`
	signWith := func(approvals string) []byte {
		var v any
		if err := json.Unmarshal([]byte(approvals), &v); err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		b, _ := json.Marshal(testSigning())
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		m["approvals"] = json.RawMessage(approvals)
		raw, err := SignRequest(ctx, fuzzKey, OpSign, m)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	many := "[" + strings.TrimSuffix(strings.Repeat(good+",", MaxApprovals+1), ",") + "]"
	tests := []struct {
		name      string
		approvals string
		field     string // "" = accepted
		n         int
	}{
		{"one", "[" + good + "]", "", 1},
		{"empty array", "[]", "", 0},
		{"sixteen", "[" + strings.TrimSuffix(strings.Repeat(good+",", MaxApprovals), ",") + "]", "", MaxApprovals},
		{"too many", many, "approvals", 0},
		{"null", "null", "approvals", 0},
		{"element not an object", `[1]`, "", -1}, // a type error: malformed
		{"unknown member", `[{"approver_id":"alice","expires_at":1,"signature":"AA==","note":"x"}]`, "approvals[0]", 0},
		{"case-folded member", `[{"Approver_ID":"alice","expires_at":1,"signature":"AA=="}]`, "approvals[0]", 0},
		{"missing approver", `[{"expires_at":1,"signature":"AA=="}]`, "approvals[0].approver_id", 0},
		{"approver not a token", `[{"approver_id":"a.b","expires_at":1,"signature":"AA=="}]`, "approvals[0].approver_id", 0},
		{"expires_at zero", `[{"approver_id":"alice","expires_at":0,"signature":"AA=="}]`, "approvals[0].expires_at", 0},
		{"expires_at negative", `[{"approver_id":"alice","expires_at":-5,"signature":"AA=="}]`, "approvals[0].expires_at", 0},
		{"signature missing", `[{"approver_id":"alice","expires_at":1}]`, "approvals[0].signature", 0},
		{"second bad", "[" + good + `,{"approver_id":"bob","expires_at":1,"signature":""}]`, "approvals[1].signature", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := signWith(tc.approvals)
			if err := VerifyRequest(raw, fuzzKey.Public()); err != nil {
				t.Fatalf("the client signature covers approvals: %v", err)
			}
			req, err := DecodeRequest(OpSign, raw)
			switch {
			case tc.n < 0:
				if !errors.Is(err, ErrMalformed) || req != nil {
					t.Fatalf("got %v, want ErrMalformed", err)
				}
			case tc.field == "":
				if err != nil {
					t.Fatal(err)
				}
				if len(req.Env().Approvals) != tc.n {
					t.Fatalf("%d approvals, want %d", len(req.Env().Approvals), tc.n)
				}
			default:
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tc.field || req == nil {
					t.Fatalf("got %v, want a FieldError on %s", err, tc.field)
				}
			}
		})
	}
	// Removing an approval breaks the client signature.
	raw := signWith("[" + good + "]")
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	delete(m, "approvals")
	stripped, _ := json.Marshal(m)
	if err := VerifyRequest(stripped, fuzzKey.Public()); !errors.Is(err, ErrInvalidSignature) {
		t.Fatalf("request without its approvals verifies: %v", err)
	}
}
