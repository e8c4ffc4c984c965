// Package pkcs11 seals under a PKCS#11 token: a real HSM in production,
// SoftHSM2 in development, tests and CI.
//
// The wrapping key is a non-extractable, sensitive AES-256 secret key stored
// in the token (CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE true; CKA_EXTRACTABLE
// false), labelled "<object>.v<N>" for version N; the active key is the
// highest version present. A data key is wrapped with AES-GCM computed inside
// the token (crypto11, 12-byte random nonce), bound to the blob's associated
// data; the wrapped form is nonce || ciphertext || tag. The node identity key
// is an ECDSA P-256 key pair generated inside the token (label
// "node-identity", private half sensitive and non-extractable).
//
// One crypto11 context (one login, one session pool) is kept per process per
// module and token, however many Backends are opened on it; crypto11 panics
// escaping a session-pool failure are turned into typed errors. A token is
// named by an RFC 7512 URI (ParseURI); the PIN is read from a file, an
// environment variable or a systemd credential, used for the login and wiped.
package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/ThalesGroup/crypto11"
	p11 "github.com/miekg/pkcs11"

	"github.com/hwsigner/signer/hsm"
)

const (
	backendName = "pkcs11"
	// IdentityLabel is the CKA_LABEL of the node identity key pair.
	IdentityLabel = "node-identity"
	gcmNonceLen   = 12
	gcmTagLen     = 16
	dataKeyLen    = 32
	wrappedLen    = gcmNonceLen + dataKeyLen + gcmTagLen
	// createRetries bounds RotateKey's retries when another process creates
	// the same version at the same moment.
	createRetries = 3
)

// Backend is an open PKCS#11 token. It implements hsm.Backend and is safe for
// concurrent use.
type Backend struct {
	cfg    Config
	object string
	log    *slog.Logger
	sh     *sharedCtx
	c11    *crypto11.Context

	mu     sync.RWMutex
	closed bool
	keys   map[uint32][]*crypto11.SecretKey // usually one per version; see load
	active uint32
	ident  *identitySigner
}

var _ hsm.Backend = (*Backend)(nil)

// Open logs into the token named by cfg and loads its wrapping keys. The
// wrapping key need not exist yet (InitKeys creates it); WrapKey reports
// hsm.ErrKeyNotFound until it does. A second Open of the same token in this
// process shares the first one's crypto11 context and login.
//
// Errors: hsm.ErrBadURI (incomplete cfg), hsm.ErrModuleNotFound,
// hsm.ErrSecretSource (PIN unreadable), hsm.ErrTokenNotFound,
// hsm.ErrWrongPIN, hsm.ErrDeviceUnavailable. No error or log line carries
// the PIN. logger may be nil.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (b *Backend, err error) {
	defer hsm.Recover("pkcs11 open", &err)
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	module, err := canonicalModule("pkcs11 open", cfg.ModulePath)
	if err != nil {
		return nil, err
	}
	pin, err := hsm.ReadSecret(cfg.PINSource)
	if err != nil {
		return nil, err
	}
	sh, err := acquire(cfg, module, pin)
	hsm.Zero(pin)
	if err != nil {
		return nil, err
	}
	b = &Backend{cfg: cfg, object: cfg.object(), log: logger, sh: sh, c11: sh.c11, keys: map[uint32][]*crypto11.SecretKey{}}
	if err := b.load(); err != nil {
		_ = release(sh)
		return nil, err
	}
	logger.Info("pkcs11 token opened", "uri", cfg.String(), "active_key", b.ActiveKey().String())
	return b, nil
}

// keyLabel is the CKA_LABEL of version v of the wrapping key.
func keyLabel(object string, v uint32) string { return fmt.Sprintf("%s.v%d", object, v) }

// newID returns a fresh CKA_ID: the configured prefix (if any) and random
// bytes, so that every object this package creates is told apart by its ID.
func (b *Backend) newID() []byte {
	r := make([]byte, 16)
	if len(b.cfg.ID) > 0 {
		r = r[:8]
	}
	_, _ = rand.Read(r)
	return append(append([]byte(nil), b.cfg.ID...), r...)
}

type foundKey struct {
	key *crypto11.SecretKey
	id  []byte
}

// findVersions lists the AES secret keys labelled <object>.v<N> (and, with
// Config.ID, whose CKA_ID has that prefix) by version, each version's keys
// sorted by CKA_ID.
func (b *Backend) findVersions() (map[uint32][]foundKey, error) {
	tmpl := crypto11.NewAttributeSet()
	if err := tmpl.Set(crypto11.CkaKeyType, p11.CKK_AES); err != nil {
		return nil, err
	}
	ks, err := b.c11.FindKeysWithAttributes(tmpl)
	if err != nil {
		return nil, err
	}
	prefix := b.object + ".v"
	out := map[uint32][]foundKey{}
	for _, k := range ks {
		if k == nil {
			continue
		}
		attrs, err := b.c11.GetAttributes(k, []crypto11.AttributeType{crypto11.CkaLabel, crypto11.CkaId})
		if err != nil {
			return nil, err
		}
		var lbl, id []byte
		if a := attrs[crypto11.CkaLabel]; a != nil {
			lbl = a.Value
		}
		if a := attrs[crypto11.CkaId]; a != nil {
			id = a.Value
		}
		rest, ok := strings.CutPrefix(string(lbl), prefix)
		if !ok || !bytes.HasPrefix(id, b.cfg.ID) {
			continue
		}
		v, err := strconv.ParseUint(rest, 10, 32)
		if err != nil || v == 0 || rest != strconv.FormatUint(v, 10) {
			continue
		}
		out[uint32(v)] = append(out[uint32(v)], foundKey{key: k, id: id})
	}
	for _, fks := range out {
		sort.Slice(fks, func(i, j int) bool { return bytes.Compare(fks[i].id, fks[j].id) < 0 })
	}
	return out, nil
}

// load reads the wrapping keys from the token. Call with b.mu held for
// writing (or before b is shared).
//
// Two keys with one label only happen when two processes created the same
// version at the same moment and one of them died before removing its copy
// (see create). Both are kept: UnwrapKey tries each, WrapKey uses the one
// with the lowest CKA_ID.
func (b *Backend) load() (err error) {
	defer hsm.Recover("pkcs11 load keys", &err)
	vs, err := b.findVersions()
	if err != nil {
		return mapErr("pkcs11 find wrapping keys", err)
	}
	keys := make(map[uint32][]*crypto11.SecretKey, len(vs))
	var active uint32
	for v, fks := range vs {
		if len(fks) > 1 {
			b.log.Warn("pkcs11: several wrapping keys share one label; new blobs use the one with the lowest CKA_ID",
				"label", keyLabel(b.object, v), "count", len(fks))
		}
		for _, fk := range fks {
			keys[v] = append(keys[v], fk.key)
		}
		active = max(active, v)
	}
	b.keys, b.active = keys, active
	return nil
}

// InitKeys creates the node identity key (if absent) and version 1 of the
// wrapping key. If the token already holds any version of the wrapping key
// it changes nothing and returns an error wrapping hsm.ErrKeyExists.
//
// The identity key is made first: if the process dies in between, running
// InitKeys again finishes the job.
func (b *Backend) InitKeys(ctx context.Context) (err error) {
	const op = "pkcs11 init keys"
	defer hsm.Recover(op, &err)
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.checkOpen(op); err != nil {
		return err
	}
	if err := b.load(); err != nil {
		return err
	}
	if len(b.keys) > 0 {
		return hsm.Errorf(hsm.ErrKeyExists, op,
			"nothing was changed; to make a new key version use `signerctl key rotate`",
			fmt.Errorf("token %q already holds %s (active v%d)", b.cfg.Token, b.object, b.active))
	}
	if err := b.ensureIdentity(); err != nil {
		return err
	}
	k, err := b.create(1)
	if err != nil {
		return err
	}
	b.keys[1], b.active = []*crypto11.SecretKey{k}, 1
	b.log.Info("pkcs11 wrapping key created", "token", b.cfg.Token, "label", keyLabel(b.object, 1))
	return nil
}

// create generates version v of the wrapping key inside the token. If
// another object with that label appears meanwhile (a concurrent init or
// rotate in another process) it deletes its own key and reports
// hsm.ErrKeyExists: whichever process created second backs off, and if both
// see each other both back off, before either used its key.
func (b *Backend) create(v uint32) (*crypto11.SecretKey, error) {
	const op = "pkcs11 create wrapping key"
	label := keyLabel(b.object, v)
	id := b.newID()
	tmpl := crypto11.NewAttributeSet()
	for _, a := range []struct {
		t crypto11.AttributeType
		v any
	}{
		{crypto11.CkaId, id},
		{crypto11.CkaLabel, label},
		{crypto11.CkaToken, true},
		{crypto11.CkaPrivate, true},
		{crypto11.CkaSensitive, true},
		{crypto11.CkaExtractable, false},
		{crypto11.CkaEncrypt, true},
		{crypto11.CkaDecrypt, true},
		{crypto11.CkaWrap, false},
		{crypto11.CkaUnwrap, false},
	} {
		if err := tmpl.Set(a.t, a.v); err != nil {
			return nil, hsm.Errorf(hsm.ErrBackendFailure, op, "", err)
		}
	}
	k, err := b.c11.GenerateSecretKeyWithAttributes(tmpl, 256, crypto11.CipherAES)
	if err != nil {
		return nil, mapErr(op, err)
	}
	if k == nil {
		return nil, hsm.Errorf(hsm.ErrBackendFailure, op, "", errors.New("token returned no key"))
	}
	vs, err := b.findVersions()
	if err != nil {
		return nil, mapErr(op, err)
	}
	for _, fk := range vs[v] {
		if !bytes.Equal(fk.id, id) {
			if derr := k.Delete(); derr != nil {
				return nil, hsm.Errorf(hsm.ErrBackendFailure, op, "another process created "+label+" at the same time and this one's copy could not be removed; remove one of the two keys with the HSM's tools", derr)
			}
			return nil, hsm.Errorf(hsm.ErrKeyExists, op, "another process created it at the same time; retry", fmt.Errorf("%s exists", label))
		}
	}
	return k, nil
}

// RotateKey creates version N+1 of the wrapping key, N being the highest
// version in the token, and makes it active. Older versions stay and still
// unwrap; move blobs with hsm.Sealer.Rewrap.
func (b *Backend) RotateKey(ctx context.Context) (ref hsm.KeyRef, err error) {
	const op = "pkcs11 rotate"
	defer hsm.Recover(op, &err)
	if err := ctx.Err(); err != nil {
		return hsm.KeyRef{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.checkOpen(op); err != nil {
		return hsm.KeyRef{}, err
	}
	for attempt := 0; ; attempt++ {
		if err := b.load(); err != nil {
			return hsm.KeyRef{}, err
		}
		if b.active == 0 {
			return hsm.KeyRef{}, hsm.Errorf(hsm.ErrKeyNotFound, op, hintKeyInit, fmt.Errorf("no %s key in token %q", b.object, b.cfg.Token))
		}
		next := b.active + 1
		k, err := b.create(next)
		if errors.Is(err, hsm.ErrKeyExists) && attempt < createRetries {
			continue
		}
		if err != nil {
			return hsm.KeyRef{}, err
		}
		b.keys[next], b.active = []*crypto11.SecretKey{k}, next
		b.log.Info("pkcs11 wrapping key rotated", "token", b.cfg.Token, "label", keyLabel(b.object, next))
		return hsm.KeyRef{Label: b.object, Version: next}, nil
	}
}

// Backend returns "pkcs11".
func (b *Backend) Backend() string { return backendName }

// ActiveKey is the version new blobs are wrapped under (version 0 before
// InitKeys).
func (b *Backend) ActiveKey() hsm.KeyRef {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return hsm.KeyRef{Label: b.object, Version: b.active}
}

// Versions lists the wrapping key versions loaded, oldest first.
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

func (b *Backend) checkOpen(op string) error {
	if b.closed {
		return hsm.Errorf(hsm.ErrDeviceUnavailable, op, "the backend was closed; open it again", nil)
	}
	return nil
}

// keyFor returns the keys of version v, reloading from the token once when
// v is unknown (another process may have run init or rotate since Open).
// v == 0 means the active version.
func (b *Backend) keyFor(op string, v uint32) (uint32, []*crypto11.SecretKey, error) {
	b.mu.RLock()
	if err := b.checkOpen(op); err != nil {
		b.mu.RUnlock()
		return 0, nil, err
	}
	if v == 0 {
		v = b.active
	}
	ks := b.keys[v]
	b.mu.RUnlock()
	if len(ks) > 0 {
		return v, ks, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.checkOpen(op); err != nil {
		return 0, nil, err
	}
	if err := b.load(); err != nil {
		return 0, nil, err
	}
	if v == 0 {
		v = b.active
	}
	return v, b.keys[v], nil
}

// gcmFor builds the token-side AES-GCM for k and checks its nonce size.
func gcmFor(op string, k *crypto11.SecretKey) (cipher.AEAD, error) {
	g, err := k.NewGCM()
	if err != nil {
		return nil, mapErr(op, err)
	}
	if g.NonceSize() != gcmNonceLen || g.Overhead() != gcmTagLen {
		return nil, hsm.Errorf(hsm.ErrBackendFailure, op, "", fmt.Errorf("token GCM nonce %d bytes, tag %d bytes; want %d and %d", g.NonceSize(), g.Overhead(), gcmNonceLen, gcmTagLen))
	}
	return g, nil
}

// seal calls crypto11's Seal, which panics on any token error, and returns
// the error instead.
func seal(op string, g cipher.AEAD, nonce, pt, aad []byte) (ct []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok {
				err = mapErr(op, e)
				return
			}
			panic(r)
		}
	}()
	return g.Seal(nil, nonce, pt, aad), nil
}

// WrapKey encrypts the 32-byte dataKey with AES-GCM inside the token under
// the active wrapping key, binding aad. The result is nonce || ciphertext.
func (b *Backend) WrapKey(ctx context.Context, dataKey, aad []byte) (ref hsm.KeyRef, out []byte, err error) {
	const op = "pkcs11 wrap"
	defer hsm.Recover(op, &err)
	if err := ctx.Err(); err != nil {
		return hsm.KeyRef{}, nil, err
	}
	if len(dataKey) != dataKeyLen {
		return hsm.KeyRef{}, nil, hsm.Errorf(hsm.ErrBackendFailure, op, "", fmt.Errorf("data key is %d bytes, want %d", len(dataKey), dataKeyLen))
	}
	v, ks, err := b.keyFor(op, 0)
	if err != nil {
		return hsm.KeyRef{}, nil, err
	}
	if len(ks) == 0 {
		return hsm.KeyRef{}, nil, hsm.Errorf(hsm.ErrKeyNotFound, op, hintKeyInit, fmt.Errorf("no %s key in token %q", b.object, b.cfg.Token))
	}
	g, err := gcmFor(op, ks[0])
	if err != nil {
		return hsm.KeyRef{}, nil, err
	}
	nonce := make([]byte, gcmNonceLen, wrappedLen)
	if _, err := rand.Read(nonce); err != nil {
		return hsm.KeyRef{}, nil, hsm.Errorf(hsm.ErrBackendFailure, op, "", err)
	}
	ct, err := seal(op, g, nonce, dataKey, aad)
	if err != nil {
		return hsm.KeyRef{}, nil, err
	}
	if len(ct) != dataKeyLen+gcmTagLen {
		return hsm.KeyRef{}, nil, hsm.Errorf(hsm.ErrBackendFailure, op, "", fmt.Errorf("token returned %d bytes of GCM output, want %d", len(ct), dataKeyLen+gcmTagLen))
	}
	return hsm.KeyRef{Label: b.object, Version: v}, append(nonce, ct...), nil
}

// UnwrapKey reverses WrapKey. A wrong aad, an altered wrapped key or one
// wrapped by another token fails with hsm.ErrTampered; a key version the
// token does not hold fails with hsm.ErrKeyNotFound.
func (b *Backend) UnwrapKey(ctx context.Context, ref hsm.KeyRef, wrapped, aad []byte) (dk []byte, err error) {
	const op = "pkcs11 unwrap"
	defer hsm.Recover(op, &err)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if ref.Label != b.object {
		return nil, hsm.Errorf(hsm.ErrKeyNotFound, op, "the blob names another wrapping key; check object= in the URI",
			fmt.Errorf("blob was wrapped under %s, this backend uses %s", ref, b.object))
	}
	if len(wrapped) != wrappedLen {
		return nil, hsm.Errorf(hsm.ErrMalformedBlob, op, "the stored value is damaged; restore it from a backup",
			fmt.Errorf("wrapped key is %d bytes, want %d", len(wrapped), wrappedLen))
	}
	if ref.Version == 0 {
		return nil, hsm.Errorf(hsm.ErrMalformedBlob, op, "the stored value is damaged; restore it from a backup", errors.New("key version 0"))
	}
	_, ks, err := b.keyFor(op, ref.Version)
	if err != nil {
		return nil, err
	}
	if len(ks) == 0 {
		return nil, hsm.Errorf(hsm.ErrKeyNotFound, op,
			"the key version that sealed this blob is not in this token: it was deleted, or the blob belongs to another node",
			fmt.Errorf("no %s in token %q", ref, b.cfg.Token))
	}
	for _, k := range ks {
		g, err := gcmFor(op, k)
		if err != nil {
			return nil, err
		}
		dk, err := g.Open(nil, wrapped[:gcmNonceLen], wrapped[gcmNonceLen:], aad)
		if err == nil {
			if len(dk) != dataKeyLen {
				hsm.Zero(dk)
				return nil, hsm.Errorf(hsm.ErrTampered, op, hintTampered, errors.New("unwrapped key has the wrong length"))
			}
			return dk, nil
		}
		if !isAuthFailure(err) {
			return nil, mapErr(op, err)
		}
	}
	return nil, hsm.Errorf(hsm.ErrTampered, op, hintTampered, errors.New("GCM authentication failed in the token"))
}

// ensureIdentity creates the identity key pair unless one exists. Call with
// b.mu held.
func (b *Backend) ensureIdentity() error {
	const op = "pkcs11 create identity key"
	if _, err := b.findIdentity(op); err == nil {
		return nil
	} else if !errors.Is(err, hsm.ErrKeyNotFound) {
		return err
	}
	id := b.newID()
	pub, priv := crypto11.NewAttributeSet(), crypto11.NewAttributeSet()
	for _, a := range []struct {
		set crypto11.AttributeSet
		t   crypto11.AttributeType
		v   any
	}{
		{pub, crypto11.CkaId, id},
		{pub, crypto11.CkaLabel, IdentityLabel},
		{pub, crypto11.CkaToken, true},
		{pub, crypto11.CkaVerify, true},
		{priv, crypto11.CkaId, id},
		{priv, crypto11.CkaLabel, IdentityLabel},
		{priv, crypto11.CkaToken, true},
		{priv, crypto11.CkaPrivate, true},
		{priv, crypto11.CkaSign, true},
		{priv, crypto11.CkaSensitive, true},
		{priv, crypto11.CkaExtractable, false},
	} {
		if err := a.set.Set(a.t, a.v); err != nil {
			return hsm.Errorf(hsm.ErrBackendFailure, op, "", err)
		}
	}
	k, err := b.c11.GenerateECDSAKeyPairWithAttributes(pub, priv, elliptic.P256())
	if err != nil {
		return mapErr(op, err)
	}
	kps, err := b.c11.FindKeyPairs(nil, []byte(IdentityLabel))
	if err != nil {
		return mapErr(op, err)
	}
	if len(kps) > 1 { // a concurrent init in another process: back off
		if derr := k.Delete(); derr != nil {
			return hsm.Errorf(hsm.ErrBackendFailure, op, "two identity keys exist; remove one with the HSM's tools", derr)
		}
		return hsm.Errorf(hsm.ErrKeyExists, op, "another process created the identity key at the same time; retry", nil)
	}
	b.log.Info("pkcs11 identity key created", "token", b.cfg.Token, "label", IdentityLabel)
	return nil
}

// findIdentity returns the identity key pair; hsm.ErrKeyNotFound if absent.
func (b *Backend) findIdentity(op string) (crypto11.Signer, error) {
	kps, err := b.c11.FindKeyPairs(nil, []byte(IdentityLabel))
	if err != nil {
		return nil, mapErr(op, err)
	}
	var found []crypto11.Signer
	for _, k := range kps {
		if k != nil {
			found = append(found, k)
		}
	}
	switch len(found) {
	case 0:
		return nil, hsm.Errorf(hsm.ErrKeyNotFound, op, hintKeyInit, fmt.Errorf("no %s key pair in token %q", IdentityLabel, b.cfg.Token))
	case 1:
		return found[0], nil
	default:
		return nil, hsm.Errorf(hsm.ErrBackendFailure, op, "the token holds several identity keys; keep the one the cluster knows and delete the others with the HSM's tools",
			fmt.Errorf("%d key pairs labelled %s", len(found), IdentityLabel))
	}
}

// Identity returns the node identity key, an ECDSA P-256 key pair inside the
// token. Sign takes a digest and returns an ASN.1 signature; token failures
// come back as typed errors, never panics.
func (b *Backend) Identity(ctx context.Context) (s crypto.Signer, err error) {
	const op = "pkcs11 identity"
	defer hsm.Recover(op, &err)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.RLock()
	if err := b.checkOpen(op); err != nil {
		b.mu.RUnlock()
		return nil, err
	}
	id := b.ident
	b.mu.RUnlock()
	if id != nil {
		return id, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.checkOpen(op); err != nil {
		return nil, err
	}
	if b.ident == nil {
		k, err := b.findIdentity(op)
		if err != nil {
			return nil, err
		}
		b.ident = &identitySigner{k: k}
	}
	return b.ident, nil
}

// identitySigner wraps the crypto11 key pair so that a library panic or
// token error becomes a typed error.
type identitySigner struct {
	k crypto11.Signer
}

func (s *identitySigner) Public() crypto.PublicKey { return s.k.Public() }

func (s *identitySigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) (sig []byte, err error) {
	defer hsm.Recover("pkcs11 identity sign", &err)
	sig, err = s.k.Sign(r, digest, opts)
	if err != nil {
		return nil, mapErr("pkcs11 identity sign", err)
	}
	return sig, nil
}

// KeyAttributes reads CKA_EXTRACTABLE and CKA_SENSITIVE of a wrapping key
// version (for tests and `signerctl` diagnostics).
func (b *Backend) KeyAttributes(ctx context.Context, ref hsm.KeyRef) (extractable, sensitive bool, err error) {
	const op = "pkcs11 key attributes"
	defer hsm.Recover(op, &err)
	if err := ctx.Err(); err != nil {
		return false, false, err
	}
	if ref.Label != b.object {
		return false, false, hsm.Errorf(hsm.ErrKeyNotFound, op, "", fmt.Errorf("no key %s", ref))
	}
	_, ks, err := b.keyFor(op, ref.Version)
	if err != nil {
		return false, false, err
	}
	if len(ks) == 0 {
		return false, false, hsm.Errorf(hsm.ErrKeyNotFound, op, hintKeyInit, fmt.Errorf("no %s in token %q", ref, b.cfg.Token))
	}
	return b.boolAttrs(op, ks[0])
}

// IdentityAttributes reads CKA_EXTRACTABLE and CKA_SENSITIVE of the identity
// key's private half.
func (b *Backend) IdentityAttributes(ctx context.Context) (extractable, sensitive bool, err error) {
	const op = "pkcs11 identity attributes"
	defer hsm.Recover(op, &err)
	s, err := b.Identity(ctx)
	if err != nil {
		return false, false, err
	}
	return b.boolAttrs(op, s.(*identitySigner).k)
}

func (b *Backend) boolAttrs(op string, key any) (extractable, sensitive bool, err error) {
	attrs, err := b.c11.GetAttributes(key, []crypto11.AttributeType{crypto11.CkaExtractable, crypto11.CkaSensitive})
	if err != nil {
		return false, false, mapErr(op, err)
	}
	ex, se := attrs[crypto11.CkaExtractable], attrs[crypto11.CkaSensitive]
	if ex == nil || se == nil || len(ex.Value) != 1 || len(se.Value) != 1 {
		return false, false, hsm.Errorf(hsm.ErrBackendFailure, op, "", errors.New("token did not return CKA_EXTRACTABLE and CKA_SENSITIVE"))
	}
	return ex.Value[0] != 0, se.Value[0] != 0, nil
}

// Close releases this Backend's hold on the token; the last Backend on a
// token closes the shared crypto11 context (its sessions and login). Close
// is idempotent. A crypto.Signer from Identity stops working once the last
// Backend on the token is closed.
func (b *Backend) Close() (err error) {
	defer hsm.Recover("pkcs11 close", &err)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.keys = map[uint32][]*crypto11.SecretKey{}
	b.ident = nil
	return release(b.sh)
}
