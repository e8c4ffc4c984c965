package protocol

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHostileRequestInputs tries the hostile requests of docs/hostile-input.md
// that no other test tries, each with the error a node acts on.
func TestHostileRequestInputs(t *testing.T) {
	ctx := context.Background()
	signed, err := SignRequest(ctx, fuzzKey, OpSign, testSigning())
	if err != nil {
		t.Fatal(err)
	}
	keygen, err := SignRequest(ctx, fuzzKey, OpKeygen, testKeygen())
	if err != nil {
		t.Fatal(err)
	}
	// resign signs a hand-made request body with the client key, so that
	// only the field under test is wrong.
	resign := func(body string) []byte {
		in, err := RequestSigningInput([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		sig := base64.StdEncoding.EncodeToString(ed25519.Sign(fuzzKey, in))
		return []byte(strings.TrimSuffix(body, "}") + `,"signature":"` + sig + `"}`)
	}
	unsigned := string(bytes.Replace(signed, []byte(`,"signature":"`+testSigningSig(t, signed)+`"`), nil, 1))
	// A result-domain signature over the same bytes (domain separation).
	obj, _ := parseObject(signed)
	resultSig := base64.StdEncoding.EncodeToString(ed25519.Sign(fuzzKey, signingInput(ResultDomain, obj, "signature")))
	tests := []struct {
		name     string
		op       string
		raw      []byte
		decode   error // from DecodeRequest: BAD_REQUEST when a FieldError and the signature verifies
		verify   error // from VerifyRequest with the client key
		badField string
	}{
		{"tx base64 with a line break", OpSign, resign(strings.Replace(unsigned, `"tx":"AAA`, `"tx":"\nAAA`, 1)), ErrInvalidRequest, nil, "tx"},
		{"tx base64 with non-zero padding bits", OpSign, resign(strings.Replace(unsigned, `"tx":"`+base64.StdEncoding.EncodeToString(testSigning().Tx)+`"`, `"tx":"`+nonZeroPadding(testSigning().Tx)+`"`, 1)), ErrInvalidRequest, nil, "tx"},
		{"keygen request on the sign subject", OpSign, keygen, ErrInvalidRequest, nil, "op"},
		{"result-domain signature as a request", OpSign, bytes.Replace(signed, []byte(testSigningSig(t, signed)), []byte(resultSig), 1), nil, ErrInvalidSignature, ""},
		{"signature missing", OpSign, []byte(unsigned), ErrInvalidRequest, ErrInvalidSignature, "signature"},
		{"oversized payload", OpSign, append(bytes.Repeat([]byte(" "), MaxMessageSize), signed...), ErrTooLarge, ErrTooLarge, ""},
		{"truncated JSON", OpSign, signed[:len(signed)/2], ErrMalformed, ErrMalformed, ""},
		{"integer beyond 2^53", OpSign, []byte(strings.Replace(string(signed), `"created_at":`, `"x":9007199254740993,"created_at":`, 1)), ErrMalformed, ErrMalformed, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := DecodeRequest(tc.op, tc.raw)
			if !errors.Is(err, tc.decode) || (tc.decode == nil && err != nil) {
				t.Fatalf("DecodeRequest: got %v, want %v", err, tc.decode)
			}
			var fe *FieldError
			if tc.badField != "" && (!errors.As(err, &fe) || fe.Field != tc.badField || req == nil) {
				t.Fatalf("want a FieldError on %s with the request, got %v", tc.badField, err)
			}
			verr := VerifyRequest(tc.raw, fuzzKey.Public())
			if !errors.Is(verr, tc.verify) || (tc.verify == nil && verr != nil) {
				t.Fatalf("VerifyRequest: got %v, want %v", verr, tc.verify)
			}
		})
	}
}

func testSigningSig(t *testing.T, raw []byte) string {
	t.Helper()
	obj, err := parseObject(raw)
	if err != nil {
		t.Fatal(err)
	}
	return obj["signature"].(string)
}

// nonZeroPadding returns base64 of b whose unused bits are not zero (b's
// length must not be a multiple of 3): encoding/json decodes it to b.
func nonZeroPadding(b []byte) string {
	s := []byte(base64.StdEncoding.EncodeToString(b))
	i := bytes.IndexByte(s, '=') - 1
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	s[i] = alphabet[strings.IndexByte(alphabet, s[i])+1]
	return string(s)
}

// TestHostileInputDocCitesRealTests keeps docs/hostile-input.md in step with
// the code: every test or fuzz target it names exists in some *_test.go file.
func TestHostileInputDocCitesRealTests(t *testing.T) {
	// Both documents name, on every line, the test that shows the claim.
	for _, tc := range []struct {
		doc      string
		minCited int
	}{
		{"../docs/hostile-input.md", 10},
		{"../docs/threat-model.md", 10},
	} {
		t.Run(filepath.Base(tc.doc), func(t *testing.T) {
			docCitesRealTests(t, tc.doc, tc.minCited)
		})
	}
}

func docCitesRealTests(t *testing.T, path string, minCited int) {
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cited := regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z0-9_]+)`").FindAllStringSubmatch(string(doc), -1)
	if len(cited) < minCited {
		t.Fatalf("%s cites only %d tests", path, len(cited))
	}
	var src bytes.Buffer
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "vendor" || d.Name() == "testdata") && path != ".." {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			src.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range cited {
		if !regexp.MustCompile(`(?m)^func ` + m[1] + `\(`).Match(src.Bytes()) {
			t.Errorf("%s cites %s, which no *_test.go defines", path, m[1])
		}
	}
}
