package keyfile

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/hwsigner/signer/protocol"
)

func TestParsePublicKey(t *testing.T) {
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	pemOf := func(pub crypto.PublicKey) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	b64Of := func(pub crypto.PublicKey) string {
		der, _ := x509.MarshalPKIXPublicKey(pub)
		return base64.StdEncoding.EncodeToString(der)
	}
	edB64 := b64Of(ed)
	tests := []struct {
		name string
		in   string
		want crypto.PublicKey // nil = error wrapping protocol.ErrUnsupportedKey
	}{
		{"ed25519 PEM", pemOf(ed), ed},
		{"p256 PEM", pemOf(&p256.PublicKey), &p256.PublicKey},
		{"PEM with blanks around", "\n  " + pemOf(ed) + "\n\n", ed},
		{"ed25519 base64", edB64, ed},
		{"p256 base64", b64Of(&p256.PublicKey), &p256.PublicKey},
		{"base64 broken over lines", edB64[:20] + "\n  " + edB64[20:], ed},
		{"empty", "  \n", nil},
		{"p384", pemOf(&p384.PublicKey), nil},
		{"rsa", b64Of(&rsaKey.PublicKey), nil},
		{"two PEM blocks", pemOf(ed) + pemOf(ed), nil},
		{"PEM of another type", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})), nil},
		{"truncated PEM", pemOf(ed)[:40], nil},
		{"not base64", "not a key", nil},
		{"base64 of garbage", base64.StdEncoding.EncodeToString([]byte("garbage")), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePublicKey(tt.in)
			if tt.want == nil {
				if !errors.Is(err, protocol.ErrUnsupportedKey) || got != nil {
					t.Fatalf("got %v, %v; want an ErrUnsupportedKey", got, err)
				}
				return
			}
			if err != nil || !got.(interface{ Equal(crypto.PublicKey) bool }).Equal(tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestMarshalPublicKeyPEM(t *testing.T) {
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tests := []struct {
		name string
		pub  crypto.PublicKey
		ok   bool
	}{
		{"ed25519", ed, true},
		{"*ed25519", &ed, true},
		{"p256", &p256.PublicKey, true},
		{"p384", &p384.PublicKey, false},
		{"short ed25519", ed[:31], false},
		{"nil *ed25519", (*ed25519.PublicKey)(nil), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text, err := MarshalPublicKeyPEM(tt.pub)
			if !tt.ok {
				if !errors.Is(err, protocol.ErrUnsupportedKey) || text != "" {
					t.Fatalf("got %q, %v; want an ErrUnsupportedKey", text, err)
				}
				return
			}
			if err != nil || !strings.HasPrefix(text, "-----BEGIN PUBLIC KEY-----\n") {
				t.Fatalf("got %q, %v", text, err)
			}
			back, err := ParsePublicKey(text)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := protocol.KeyID(tt.pub)
			if got, _ := protocol.KeyID(back); got != want {
				t.Fatalf("round trip: key ID %s, want %s", got, want)
			}
		})
	}
}

// A P-256 client key still signs after ParsePrivateKeyPEM zeroed its DER.
func TestParsePrivateKeyPEMP256(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	s, err := ParsePrivateKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	digest := make([]byte, 32)
	sig, err := s.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(&k.PublicKey, digest, sig) {
		t.Fatalf("parsed key does not sign: %v", err)
	}
}

func TestParsePrivateKeyPEM(t *testing.T) {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ed)
	good := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"ed25519", good, ""},
		{"not PEM", []byte("hello"), "not PEM"},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), "not a PKCS#8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParsePrivateKeyPEM(tc.in)
			if tc.want == "" {
				if err != nil || !s.Public().(ed25519.PublicKey).Equal(ed.Public()) {
					t.Fatalf("%v", err)
				}
				// The decoded DER is zeroed: the key must not share it.
				msg := []byte("still signs")
				sig, err := s.Sign(rand.Reader, msg, crypto.Hash(0))
				if err != nil || !ed25519.Verify(ed.Public().(ed25519.PublicKey), msg, sig) {
					t.Fatalf("parsed key does not sign: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
