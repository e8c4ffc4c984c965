// Package pkcs11 seals under a PKCS#11 token (a real HSM, or SoftHSM2 in tests
// and CI). The wrapping key is a non-extractable, sensitive AES-256 key in the
// token, labelled <object>.v<N>; data keys are wrapped with AES-GCM inside the
// HSM, bound to the blob's associated data. The node identity key is an ECDSA
// P-256 key pair generated inside the token.
package pkcs11

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ThalesGroup/crypto11"
	p11 "github.com/miekg/pkcs11"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/internal/secret"
)

const (
	backendName   = "pkcs11"
	identityLabel = "node-identity"
	gcmNonceLen   = 12
	maxVersions   = 1000
)

// Backend is an open PKCS#11 token.
type Backend struct {
	cfg Config
	ctx *crypto11.Context
	log *slog.Logger

	mu     sync.RWMutex
	keys   map[uint32]*crypto11.SecretKey
	active uint32
}

var _ hsm.Backend = (*Backend)(nil)

// Open logs into the token named by cfg. It does not require the wrapping key
// to exist (InitKeys creates it); WrapKey fails with ErrKeyNotFound until then.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (b *Backend, err error) {
	defer hsm.Recover("pkcs11 open", &err)
	if logger == nil {
		logger = slog.Default()
	}
	if _, err := os.Stat(cfg.ModulePath); err != nil {
		return nil, hsm.Errorf(hsm.ErrModuleNotFound, "pkcs11 open", "check module-path in the URI (SoftHSM2: apt install softhsm2; /usr/lib/softhsm/libsofthsm2.so)", err)
	}
	pin, err := secret.Read(cfg.PINSource)
	if err != nil {
		return nil, hsm.Errorf(hsm.ErrSecretSource, "pkcs11 open: read PIN", "", err)
	}
	defer secret.Zero(pin)
	if err := checkToken(cfg, pin); err != nil {
		return nil, err
	}
	var c11 *crypto11.Context
	for attempt := 1; ; attempt++ {
		c11, err = crypto11.Configure(&crypto11.Config{
			Path:        cfg.ModulePath,
			TokenLabel:  cfg.Token,
			Pin:         string(pin),
			GCMIVLength: gcmNonceLen,
			MaxSessions: 8,
		})
		// SoftHSM2 (and some HSMs) answer CKR_GENERAL_ERROR now and then
		// when several processes open tokens of one store at once; the
		// token and PIN were just checked, so a short retry is safe.
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "CKR_GENERAL_ERROR") {
			break
		}
		logger.Warn("PKCS#11 module busy; retrying", "token", cfg.Token, "attempt", attempt)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, mapErr("pkcs11 open", err)
	}
	b = &Backend{cfg: cfg, ctx: c11, log: logger, keys: map[uint32]*crypto11.SecretKey{}}
	if err := b.loadKeys(); err != nil {
		_ = c11.Close()
		return nil, err
	}
	return b, nil
}

// checkToken finds the token and checks the PIN through miekg/pkcs11 first,
// so that the errors are precise and a failed crypto11.Configure (which
// finalizes the library for the whole process) is avoided.
func checkToken(cfg Config, pin []byte) error {
	m := p11.New(cfg.ModulePath)
	if m == nil {
		return hsm.Errorf(hsm.ErrModuleNotFound, "pkcs11 load module", "the file is not a PKCS#11 module", fmt.Errorf("%s", cfg.ModulePath))
	}
	release, err := initModule(m)
	if err != nil {
		return err
	}
	defer release()
	slot, err := findSlot(m, cfg.Token)
	if err != nil {
		return err
	}
	sh, err := m.OpenSession(slot, p11.CKF_SERIAL_SESSION)
	if err != nil {
		return mapErr("pkcs11 open session", err)
	}
	defer m.CloseSession(sh)
	if err := m.Login(sh, p11.CKU_USER, string(pin)); err != nil {
		if errors.Is(err, p11.Error(p11.CKR_USER_ALREADY_LOGGED_IN)) {
			return nil
		}
		return mapErr("pkcs11 login", err)
	}
	return nil
}

// initModule initialises the module for a short-lived direct use. When this
// process already has it initialised (crypto11 holds it), it is left alone;
// otherwise it is finalized again on release, so that crypto11's own
// C_Initialize later succeeds.
func initModule(m *p11.Ctx) (release func(), err error) {
	err = m.Initialize()
	switch {
	case err == nil:
		// Finalize also ends this process's login on the token.
		return func() { _ = m.Finalize(); m.Destroy() }, nil
	case errors.Is(err, p11.Error(p11.CKR_CRYPTOKI_ALREADY_INITIALIZED)):
		return func() {}, nil
	default:
		return nil, hsm.Errorf(hsm.ErrBackendFailure, "pkcs11 initialize", "check the module's configuration (SOFTHSM2_CONF for SoftHSM2)", err)
	}
}

func findSlot(m *p11.Ctx, label string) (uint, error) {
	slots, err := m.GetSlotList(true)
	if err != nil {
		return 0, mapErr("pkcs11 list slots", err)
	}
	for _, s := range slots {
		ti, err := m.GetTokenInfo(s)
		if err == nil && strings.TrimRight(ti.Label, " \x00") == label {
			return s, nil
		}
	}
	return 0, hsm.Errorf(hsm.ErrTokenNotFound, "pkcs11 find token", "initialise it with `signerctl init` (or check token= in the URI and SOFTHSM2_CONF)", fmt.Errorf("no token labelled %q", label))
}

func mapErr(op string, err error) error {
	var pe p11.Error
	if errors.As(err, &pe) {
		switch uint(pe) {
		case p11.CKR_PIN_INCORRECT, p11.CKR_PIN_INVALID, p11.CKR_PIN_LEN_RANGE:
			return hsm.Errorf(hsm.ErrWrongPIN, op, "check the file or credential named by pin-source", nil)
		case p11.CKR_PIN_LOCKED:
			return hsm.Errorf(hsm.ErrWrongPIN, op, "the PIN is locked after too many failures; the token's security officer must reset it", nil)
		case p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_SLOT_ID_INVALID:
			return hsm.Errorf(hsm.ErrTokenNotFound, op, "check that the HSM is connected", err)
		}
	}
	if strings.Contains(err.Error(), "CKR_PIN_INCORRECT") {
		return hsm.Errorf(hsm.ErrWrongPIN, op, "check the file or credential named by pin-source", nil)
	}
	if strings.Contains(err.Error(), "could not find PKCS#11 token") {
		return hsm.Errorf(hsm.ErrTokenNotFound, op, "initialise it with `signerctl init`", err)
	}
	return hsm.Errorf(hsm.ErrBackendFailure, op, "", err)
}

func label(object string, v uint32) []byte { return []byte(fmt.Sprintf("%s.v%d", object, v)) }

func (b *Backend) loadKeys() error {
	for v := uint32(1); v < maxVersions; v++ {
		// FindKeys, not FindKey: across crypto11 versions FindKey reports "no
		// match" either as (nil, nil) or as an error.
		ks, err := b.ctx.FindKeys(nil, label(b.cfg.Object, v))
		if err != nil {
			return mapErr("pkcs11 find wrapping key", err)
		}
		if len(ks) == 0 || ks[0] == nil {
			break
		}
		b.keys[v] = ks[0]
		b.active = v
	}
	return nil
}

// InitKeys creates wrapping key v1 and the identity key. It refuses, changing
// nothing, when the wrapping key exists.
func (b *Backend) InitKeys(_ context.Context) (err error) {
	defer hsm.Recover("pkcs11 init keys", &err)
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.keys) > 0 {
		return hsm.Errorf(hsm.ErrKeyExists, "pkcs11 init", "the token already holds "+b.cfg.Object+"; use `signerctl key rotate` to make a new version", nil)
	}
	k, err := b.ctx.GenerateSecretKeyWithLabel(randID(), label(b.cfg.Object, 1), 256, crypto11.CipherAES)
	if err != nil {
		return mapErr("pkcs11 generate wrapping key", err)
	}
	b.keys[1], b.active = k, 1
	if kps, err := b.ctx.FindKeyPairs(nil, []byte(identityLabel)); err == nil && len(kps) > 0 {
		return nil
	}
	if _, err := b.ctx.GenerateECDSAKeyPairWithLabel(randID(), []byte(identityLabel), elliptic.P256()); err != nil {
		return mapErr("pkcs11 generate identity key", err)
	}
	return nil
}

func randID() []byte {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	return id
}

func (b *Backend) Backend() string { return backendName }

func (b *Backend) ActiveKey() hsm.KeyRef {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return hsm.KeyRef{Label: b.cfg.Object, Version: b.active}
}

func (b *Backend) WrapKey(_ context.Context, dataKey, aad []byte) (ref hsm.KeyRef, out []byte, err error) {
	defer hsm.Recover("pkcs11 wrap", &err)
	b.mu.RLock()
	k, v := b.keys[b.active], b.active
	b.mu.RUnlock()
	if k == nil {
		return hsm.KeyRef{}, nil, hsm.Errorf(hsm.ErrKeyNotFound, "pkcs11 wrap", "run `signerctl init` to create the wrapping key", nil)
	}
	gcm, err := k.NewGCM()
	if err != nil {
		return hsm.KeyRef{}, nil, mapErr("pkcs11 wrap", err)
	}
	if gcm.NonceSize() != gcmNonceLen {
		return hsm.KeyRef{}, nil, hsm.Errorf(hsm.ErrBackendFailure, "pkcs11 wrap", "", fmt.Errorf("GCM nonce size %d, want %d", gcm.NonceSize(), gcmNonceLen))
	}
	nonce := make([]byte, gcmNonceLen)
	if _, err := rand.Read(nonce); err != nil {
		return hsm.KeyRef{}, nil, err
	}
	ct := gcm.Seal(nil, nonce, dataKey, aad)
	return hsm.KeyRef{Label: b.cfg.Object, Version: v}, append(nonce, ct...), nil
}

func (b *Backend) UnwrapKey(_ context.Context, ref hsm.KeyRef, wrapped, aad []byte) (dk []byte, err error) {
	defer hsm.Recover("pkcs11 unwrap", &err)
	b.mu.RLock()
	k := b.keys[ref.Version]
	b.mu.RUnlock()
	if k == nil || ref.Label != b.cfg.Object {
		return nil, hsm.Errorf(hsm.ErrKeyNotFound, "pkcs11 unwrap", "the key version that sealed this blob is not in this token; restore the token or use the right node", fmt.Errorf("no key %s", ref))
	}
	if len(wrapped) < gcmNonceLen+16 {
		return nil, hsm.Errorf(hsm.ErrMalformedBlob, "pkcs11 unwrap", "", fmt.Errorf("wrapped key too short"))
	}
	gcm, err := k.NewGCM()
	if err != nil {
		return nil, mapErr("pkcs11 unwrap", err)
	}
	dk, err = gcm.Open(nil, wrapped[:gcmNonceLen], wrapped[gcmNonceLen:], aad)
	if err != nil {
		return nil, hsm.Errorf(hsm.ErrTampered, "pkcs11 unwrap", "the blob was altered or moved to another node or wallet", nil)
	}
	return dk, nil
}

func (b *Backend) RotateKey(_ context.Context) (ref hsm.KeyRef, err error) {
	defer hsm.Recover("pkcs11 rotate", &err)
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.keys) == 0 {
		return hsm.KeyRef{}, hsm.Errorf(hsm.ErrKeyNotFound, "pkcs11 rotate", "run `signerctl init` first", nil)
	}
	next := b.active + 1
	k, err := b.ctx.GenerateSecretKeyWithLabel(randID(), label(b.cfg.Object, next), 256, crypto11.CipherAES)
	if err != nil {
		return hsm.KeyRef{}, mapErr("pkcs11 rotate", err)
	}
	b.keys[next], b.active = k, next
	return hsm.KeyRef{Label: b.cfg.Object, Version: next}, nil
}

func (b *Backend) Identity(_ context.Context) (s crypto.Signer, err error) {
	defer hsm.Recover("pkcs11 identity", &err)
	kps, err := b.ctx.FindKeyPairs(nil, []byte(identityLabel))
	if err != nil {
		return nil, mapErr("pkcs11 identity", err)
	}
	if len(kps) == 0 || kps[0] == nil {
		return nil, hsm.Errorf(hsm.ErrKeyNotFound, "pkcs11 identity", "run `signerctl init` to create the node identity key", nil)
	}
	return kps[0], nil
}

// KeyAttributes reads CKA_EXTRACTABLE and CKA_SENSITIVE of a wrapping key.
func (b *Backend) KeyAttributes(ref hsm.KeyRef) (extractable, sensitive bool, err error) {
	defer hsm.Recover("pkcs11 attributes", &err)
	b.mu.RLock()
	k := b.keys[ref.Version]
	b.mu.RUnlock()
	if k == nil {
		return false, false, hsm.Errorf(hsm.ErrKeyNotFound, "pkcs11 attributes", "", nil)
	}
	attrs, err := b.ctx.GetAttributes(k, []crypto11.AttributeType{crypto11.CkaExtractable, crypto11.CkaSensitive})
	if err != nil {
		return false, false, mapErr("pkcs11 attributes", err)
	}
	ex, se := attrs[crypto11.CkaExtractable], attrs[crypto11.CkaSensitive]
	if ex == nil || se == nil {
		return false, false, hsm.Errorf(hsm.ErrBackendFailure, "pkcs11 attributes", "", fmt.Errorf("attributes missing"))
	}
	return len(ex.Value) == 1 && ex.Value[0] != 0, len(se.Value) == 1 && se.Value[0] != 0, nil
}

func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.keys = map[uint32]*crypto11.SecretKey{}
	return b.ctx.Close()
}

// InitToken initialises a fresh token in the first uninitialised slot and sets
// its user PIN, through the PKCS#11 API (no PIN on any command line).
func InitToken(modulePath, tokenLabel string, soPIN, userPIN []byte) (err error) {
	defer hsm.Recover("pkcs11 init token", &err)
	if _, err := os.Stat(modulePath); err != nil {
		return hsm.Errorf(hsm.ErrModuleNotFound, "pkcs11 init token", "install the module (SoftHSM2: apt install softhsm2)", err)
	}
	m := p11.New(modulePath)
	if m == nil {
		return hsm.Errorf(hsm.ErrModuleNotFound, "pkcs11 init token", "", fmt.Errorf("cannot load %s", modulePath))
	}
	release, err := initModule(m)
	if err != nil {
		return err
	}
	defer release()
	if _, err := findSlot(m, tokenLabel); err == nil {
		return hsm.Errorf(hsm.ErrKeyExists, "pkcs11 init token", "a token with this label exists already", fmt.Errorf("token %q", tokenLabel))
	}
	slots, err := m.GetSlotList(true)
	if err != nil {
		return mapErr("pkcs11 list slots", err)
	}
	var slot uint
	found := false
	for _, s := range slots {
		ti, err := m.GetTokenInfo(s)
		if err == nil && ti.Flags&p11.CKF_TOKEN_INITIALIZED == 0 {
			slot, found = s, true
			break
		}
	}
	if !found {
		return hsm.Errorf(hsm.ErrTokenNotFound, "pkcs11 init token", "no free slot; for SoftHSM2 check directories.tokendir", nil)
	}
	if err := m.InitToken(slot, string(soPIN), tokenLabel); err != nil {
		return mapErr("pkcs11 init token", err)
	}
	slot, err = findSlot(m, tokenLabel) // SoftHSM2 moves the token to a new slot ID
	if err != nil {
		return err
	}
	sh, err := m.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return mapErr("pkcs11 open session", err)
	}
	defer m.CloseSession(sh)
	if err := m.Login(sh, p11.CKU_SO, string(soPIN)); err != nil {
		return mapErr("pkcs11 SO login", err)
	}
	defer m.Logout(sh) // ends the SO login on this new token only
	if err := m.InitPIN(sh, string(userPIN)); err != nil {
		return mapErr("pkcs11 init PIN", err)
	}
	return nil
}
