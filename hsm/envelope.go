package hsm

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/hwsigner/signer/internal/secret"
)

// FormatVersion is the version of the sealed-blob format written by Seal.
const FormatVersion = 1

// Binding is what a blob is sealed to. Every field goes into the AES-GCM
// associated data, so a blob moved to another node, wallet, key type, epoch or
// purpose does not open.
type Binding struct {
	NodeID   string `json:"node_id"`
	Purpose  string `json:"purpose"` // "share", "preparams", "secret", ...
	WalletID string `json:"wallet_id,omitempty"`
	KeyType  string `json:"key_type,omitempty"`
	Epoch    uint64 `json:"epoch"`
}

// AAD is the canonical, length-prefixed encoding of the binding and format
// version.
func (b Binding) AAD(format int) []byte {
	out := []byte("hwsigner-sealed-blob")
	out = binary.BigEndian.AppendUint32(out, uint32(format))
	for _, s := range []string{b.NodeID, b.Purpose, b.WalletID, b.KeyType} {
		out = binary.BigEndian.AppendUint32(out, uint32(len(s)))
		out = append(out, s...)
	}
	return binary.BigEndian.AppendUint64(out, b.Epoch)
}

// Blob is the self-describing sealed form. Nothing in it is secret: the data
// key is wrapped by hardware and the payload is AES-256-GCM under it.
type Blob struct {
	Format     int     `json:"format"`
	Backend    string  `json:"backend"`
	Key        KeyRef  `json:"key"`
	Binding    Binding `json:"binding"`
	WrappedKey []byte  `json:"wrapped_key"`
	Nonce      []byte  `json:"nonce"`
	Ciphertext []byte  `json:"ciphertext"`
}

// ParseBlob decodes a blob without opening it.
func ParseBlob(raw []byte) (*Blob, error) {
	var b Blob
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, Errorf(ErrMalformedBlob, "parse sealed blob", "the stored value is damaged; restore it from a backup", err)
	}
	if b.Format != FormatVersion {
		return nil, Errorf(ErrMalformedBlob, "parse sealed blob", "upgrade signerd to read this format", fmt.Errorf("unknown format %d", b.Format))
	}
	if len(b.WrappedKey) == 0 || len(b.Nonce) != 12 || len(b.Ciphertext) < 16 || b.Backend == "" || b.Key.Label == "" {
		return nil, Errorf(ErrMalformedBlob, "parse sealed blob", "the stored value is damaged; restore it from a backup", fmt.Errorf("missing or short fields"))
	}
	return &b, nil
}

// Sealer seals and opens blobs with a Wrapper.
type Sealer struct {
	w Wrapper
}

// NewSealer returns a Sealer over w.
func NewSealer(w Wrapper) *Sealer { return &Sealer{w: w} }

// Wrapper returns the underlying wrapper.
func (s *Sealer) Wrapper() Wrapper { return s.w }

// Seal encrypts plaintext under a fresh data key bound to bind.
func (s *Sealer) Seal(ctx context.Context, plaintext []byte, bind Binding) ([]byte, error) {
	dk := make([]byte, 32)
	defer secret.Zero(dk)
	if _, err := rand.Read(dk); err != nil {
		return nil, fmt.Errorf("seal: data key: %w", err)
	}
	aad := bind.AAD(FormatVersion)
	ref, wrapped, err := s.w.WrapKey(ctx, dk, aad)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	gcm, err := newGCM(dk)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	b := Blob{
		Format:     FormatVersion,
		Backend:    s.w.Backend(),
		Key:        ref,
		Binding:    bind,
		WrappedKey: wrapped,
		Nonce:      nonce,
		Ciphertext: gcm.Seal(nil, nonce, plaintext, aad),
	}
	out, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("seal: encode: %w", err)
	}
	return out, nil
}

// Open checks that raw was sealed to bind and decrypts it. The caller owns
// the plaintext and should Zero it after use.
func (s *Sealer) Open(ctx context.Context, raw []byte, bind Binding) ([]byte, error) {
	b, err := s.check(raw, bind)
	if err != nil {
		return nil, err
	}
	aad := bind.AAD(b.Format)
	dk, err := s.w.UnwrapKey(ctx, b.Key, b.WrappedKey, aad)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	defer secret.Zero(dk)
	gcm, err := newGCM(dk)
	if err != nil {
		return nil, err
	}
	pt, err := gcm.Open(nil, b.Nonce, b.Ciphertext, aad)
	if err != nil {
		return nil, Errorf(ErrTampered, "open sealed blob", "the blob was altered; restore it from a backup", err)
	}
	return pt, nil
}

// Rewrap moves raw to the wrapper's active key without touching the
// ciphertext. It reports false when raw already uses the active key.
func (s *Sealer) Rewrap(ctx context.Context, raw []byte, bind Binding) ([]byte, bool, error) {
	b, err := s.check(raw, bind)
	if err != nil {
		return nil, false, err
	}
	if b.Key == s.w.ActiveKey() {
		return raw, false, nil
	}
	aad := bind.AAD(b.Format)
	dk, err := s.w.UnwrapKey(ctx, b.Key, b.WrappedKey, aad)
	if err != nil {
		return nil, false, fmt.Errorf("rewrap: %w", err)
	}
	defer secret.Zero(dk)
	// Authenticate the payload before committing to the new wrapping.
	gcm, err := newGCM(dk)
	if err != nil {
		return nil, false, err
	}
	pt, err := gcm.Open(nil, b.Nonce, b.Ciphertext, aad)
	if err != nil {
		return nil, false, Errorf(ErrTampered, "rewrap sealed blob", "the blob was altered; restore it from a backup", err)
	}
	secret.Zero(pt)
	ref, wrapped, err := s.w.WrapKey(ctx, dk, aad)
	if err != nil {
		return nil, false, fmt.Errorf("rewrap: %w", err)
	}
	b.Key, b.WrappedKey = ref, wrapped
	out, err := json.Marshal(b)
	if err != nil {
		return nil, false, fmt.Errorf("rewrap: encode: %w", err)
	}
	return out, true, nil
}

func (s *Sealer) check(raw []byte, bind Binding) (*Blob, error) {
	b, err := ParseBlob(raw)
	if err != nil {
		return nil, err
	}
	if b.Backend != s.w.Backend() {
		return nil, Errorf(ErrBindingMismatch, "open sealed blob", "this blob was sealed by the "+b.Backend+" backend; open it with that backend", fmt.Errorf("backend %s, node uses %s", b.Backend, s.w.Backend()))
	}
	if b.Binding != bind {
		return nil, Errorf(ErrBindingMismatch, "open sealed blob", "a sealed blob cannot be moved between nodes, wallets, key types or epochs",
			fmt.Errorf("blob is for node %q wallet %q key type %q epoch %d purpose %q", b.Binding.NodeID, b.Binding.WalletID, b.Binding.KeyType, b.Binding.Epoch, b.Binding.Purpose))
	}
	return b, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return gcm, nil
}
