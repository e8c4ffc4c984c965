// Package softkey is an INSECURE software backend for development: its
// wrapping and identity keys are files on disk. It must be asked for by name
// (a "software:" URI) and it logs a warning every time it is opened. Never use
// it where a share is worth anything.
package softkey

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/internal/secret"
)

const backendName = "software"

// Backend keeps its keys in files under a directory.
type Backend struct {
	dir   string
	label string

	mu     sync.RWMutex
	keys   map[uint32][]byte
	active uint32
}

var _ hsm.Backend = (*Backend)(nil)

// Init creates the directory's first wrapping key and identity key. It
// refuses to overwrite existing keys.
func Init(dir, label string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return hsm.Errorf(hsm.ErrBackendFailure, "software init", "check the directory permissions", err)
	}
	if _, err := os.Stat(keyPath(dir, label, 1)); err == nil {
		return hsm.Errorf(hsm.ErrKeyExists, "software init", "the key directory is already initialised", nil)
	}
	if err := writeNewKEK(dir, label, 1); err != nil {
		return err
	}
	return writeIdentity(dir)
}

// Open loads the keys from dir and warns that the backend is insecure.
func Open(logger *slog.Logger, dir, label string) (*Backend, error) {
	if logger != nil {
		logger.Warn("INSECURE software key backend in use: wrapping and identity keys are plain files; never use it in production", "dir", dir)
	}
	if label == "" {
		label = "share-kek"
	}
	b := &Backend{dir: dir, label: label, keys: map[uint32][]byte{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, hsm.Errorf(hsm.ErrTokenNotFound, "software open", "run `signerctl init` first", err)
		}
		return nil, hsm.Errorf(hsm.ErrBackendFailure, "software open", "", err)
	}
	prefix := label + ".v"
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, ".key") {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, prefix), ".key"), 10, 32)
		if err != nil {
			continue
		}
		k, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || len(k) != 32 {
			return nil, hsm.Errorf(hsm.ErrBackendFailure, "software open", "the key file is damaged", fmt.Errorf("%s: bad key file", name))
		}
		b.keys[uint32(v)] = k
		if uint32(v) > b.active {
			b.active = uint32(v)
		}
	}
	if len(b.keys) == 0 {
		return nil, hsm.Errorf(hsm.ErrKeyNotFound, "software open", "run `signerctl init` to create the wrapping key", fmt.Errorf("no %s key in %s", label, dir))
	}
	return b, nil
}

func keyPath(dir, label string, v uint32) string {
	return filepath.Join(dir, fmt.Sprintf("%s.v%d.key", label, v))
}

func writeNewKEK(dir, label string, v uint32) error {
	k := make([]byte, 32)
	defer secret.Zero(k)
	if _, err := rand.Read(k); err != nil {
		return err
	}
	f, err := os.OpenFile(keyPath(dir, label, v), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return hsm.Errorf(hsm.ErrKeyExists, "software key create", "", err)
		}
		return hsm.Errorf(hsm.ErrBackendFailure, "software key create", "", err)
	}
	defer f.Close()
	if _, err := f.Write(k); err != nil {
		return hsm.Errorf(hsm.ErrBackendFailure, "software key create", "", err)
	}
	return f.Sync()
}

func writeIdentity(dir string) error {
	p := filepath.Join(dir, "identity.key")
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	defer secret.Zero(der)
	return os.WriteFile(p, der, 0o600)
}

func (b *Backend) Backend() string { return backendName }

func (b *Backend) ActiveKey() hsm.KeyRef {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return hsm.KeyRef{Label: b.label, Version: b.active}
}

func (b *Backend) WrapKey(_ context.Context, dataKey, aad []byte) (hsm.KeyRef, []byte, error) {
	b.mu.RLock()
	ref := hsm.KeyRef{Label: b.label, Version: b.active}
	k := b.keys[b.active]
	b.mu.RUnlock()
	gcm, err := gcmFor(k)
	if err != nil {
		return hsm.KeyRef{}, nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return hsm.KeyRef{}, nil, err
	}
	return ref, gcm.Seal(nonce, nonce, dataKey, aad), nil
}

func (b *Backend) UnwrapKey(_ context.Context, ref hsm.KeyRef, wrapped, aad []byte) ([]byte, error) {
	b.mu.RLock()
	k, ok := b.keys[ref.Version]
	b.mu.RUnlock()
	if !ok || ref.Label != b.label {
		return nil, hsm.Errorf(hsm.ErrKeyNotFound, "software unwrap", "the key version that sealed this blob is gone", fmt.Errorf("no key %s", ref))
	}
	gcm, err := gcmFor(k)
	if err != nil {
		return nil, err
	}
	if len(wrapped) < gcm.NonceSize()+gcm.Overhead() {
		return nil, hsm.Errorf(hsm.ErrMalformedBlob, "software unwrap", "", fmt.Errorf("wrapped key too short"))
	}
	dk, err := gcm.Open(nil, wrapped[:gcm.NonceSize()], wrapped[gcm.NonceSize():], aad)
	if err != nil {
		return nil, hsm.Errorf(hsm.ErrTampered, "software unwrap", "the blob was altered or moved", err)
	}
	return dk, nil
}

func (b *Backend) RotateKey(_ context.Context) (hsm.KeyRef, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	next := b.active + 1
	if err := writeNewKEK(b.dir, b.label, next); err != nil {
		return hsm.KeyRef{}, err
	}
	k, err := os.ReadFile(keyPath(b.dir, b.label, next))
	if err != nil {
		return hsm.KeyRef{}, hsm.Errorf(hsm.ErrBackendFailure, "software rotate", "", err)
	}
	b.keys[next] = k
	b.active = next
	return hsm.KeyRef{Label: b.label, Version: next}, nil
}

// Versions lists the key versions present, oldest first.
func (b *Backend) Versions() []uint32 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	vs := make([]uint32, 0, len(b.keys))
	for v := range b.keys {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
	return vs
}

func (b *Backend) Identity(_ context.Context) (crypto.Signer, error) {
	der, err := os.ReadFile(filepath.Join(b.dir, "identity.key"))
	if err != nil {
		return nil, hsm.Errorf(hsm.ErrKeyNotFound, "software identity", "run `signerctl init`", err)
	}
	defer secret.Zero(der)
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, hsm.Errorf(hsm.ErrBackendFailure, "software identity", "the identity key file is damaged", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, hsm.Errorf(hsm.ErrBackendFailure, "software identity", "", fmt.Errorf("not a signer"))
	}
	return s, nil
}

func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range b.keys {
		secret.Zero(k)
	}
	b.keys = map[uint32][]byte{}
	return nil
}

func gcmFor(k []byte) (cipher.AEAD, error) {
	if len(k) != 32 {
		return nil, hsm.Errorf(hsm.ErrKeyNotFound, "software key", "backend is closed", nil)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
