// Package tpm seals under a TPM 2.0: the kernel's resource manager
// (/dev/tpmrm0) in production, swtpm over TCP in tests and CI.
//
// Each wrapping-key version is an ECC P-256 storage primary key in the owner
// hierarchy, derived by the TPM from its owner seed and a template unique to
// the object label and version: it never leaves the TPM and needs no storage.
// A blob's 32-byte data key is sealed as a keyed-hash object under that
// primary; the "wrapped key" in the blob is the object's public and private
// parts (the private part is encrypted by the TPM). The object's
// authorization value is derived from the blob's associated data, so a data
// key moved to another node, wallet or epoch does not unseal, and with PCRs
// configured the object also carries a PolicyPCR policy: it unseals only while
// those PCRs hold the values they had when it was sealed.
//
// The active version is kept in an owner NV index. The node identity key is an
// ECC P-256 signing primary key derived the same way. All sessions that carry
// secrets are salted with the storage key and encrypt the secret parameter, so
// a data key never crosses the bus in the clear.
//
// The TPM has no resource manager over TCP (swtpm) and serves one connection
// at a time: the backend holds one connection, serialises commands on it,
// keeps at most two objects loaded (the identity key and one storage key) and
// flushes every other handle it creates. A lost connection (swtpm restarted) is
// re-opened once per call.
package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/internal/secret"
)

const backendName = "tpm"

// DefaultCommandTimeout bounds a call on a TCP TPM when the caller's context
// has no deadline.
const DefaultCommandTimeout = 30 * time.Second

// Backend is an open TPM.
type Backend struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	t      transport.TPMCloser // nil until connected, or after a lost connection
	srk    *loaded             // the storage key of one version, cached
	ident  *loaded             // the identity key, cached
	active uint32              // 0: not initialised
	closed bool
}

type loaded struct {
	handle  tpm2.TPMHandle
	name    tpm2.TPM2BName
	pub     tpm2.TPMTPublic
	version uint32
}

var _ hsm.Backend = (*Backend)(nil)

// Open connects to the TPM named by cfg and reads the active key version. It
// does not require the keys to exist (InitKeys creates them); WrapKey fails
// with ErrKeyNotFound until then.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (b *Backend, err error) {
	defer hsm.Recover("tpm open", &err)
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.Object == "" {
		cfg.Object = "share-kek"
	}
	if cfg.NVIndex == 0 {
		cfg.NVIndex = DefaultNVIndex(cfg.Object)
	}
	b = &Backend{cfg: cfg, log: logger}
	err = b.do(ctx, "tpm open", func(t transport.TPM) error {
		v, _, err := b.readActive(t)
		b.active = v
		return err
	})
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	return b, nil
}

// Config returns the configuration the backend was opened with.
func (b *Backend) Config() Config { return b.cfg }

// do runs fn on the connection, connecting first if needed. A transport
// failure drops the connection and the cached handles (the TPM may have
// restarted) and runs fn once more on a new connection.
func (b *Backend) do(ctx context.Context, op string, fn func(t transport.TPM) error) (err error) {
	defer hsm.Recover(op, &err)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return hsm.Errorf(hsm.ErrDeviceUnavailable, op, "the backend was closed", nil)
	}
	var last error
	for attempt := 0; attempt < 2; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if b.t == nil {
			t, err := openTransport(ctx, b.cfg)
			if err != nil {
				return unavailable(op, b.cfg, err)
			}
			b.t = t
		}
		if d, ok := b.t.(interface{ setDeadline(time.Time) }); ok {
			dl, ok := ctx.Deadline()
			if !ok {
				dl = time.Now().Add(DefaultCommandTimeout)
			}
			d.setDeadline(dl)
		}
		err := fn(b.t)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			b.dropConn()
			return hsm.Errorf(hsm.ErrDeviceUnavailable, op, "the TPM did not answer in time; swtpm serves one connection at a time: is another process connected to it?", err)
		case errors.Is(err, errTransport):
			b.dropConn()
			last = err
		case errors.Is(err, tpm2.TPMRCReferenceH0) && attempt == 0:
			// A cached handle is gone (the TPM was reset under us).
			b.srk, b.ident = nil, nil
			last = err
		default:
			return err
		}
	}
	return unavailable(op, b.cfg, last)
}

func unavailable(op string, cfg Config, err error) error {
	hint := "check that the signerd user can open " + cfg.Device + " (group tss) and that the TPM is enabled in firmware"
	if cfg.Addr != "" {
		hint = "start swtpm on " + cfg.Addr + " (softhsm-test/swtpm-start.sh) or fix host= and port= in the URI"
	}
	return hsm.Errorf(hsm.ErrDeviceUnavailable, op, hint, err)
}

// dropConn forgets the connection and the handles loaded through it.
func (b *Backend) dropConn() {
	if b.t != nil {
		_ = b.t.Close()
	}
	b.t, b.srk, b.ident = nil, nil, nil
}

// mapErr turns a TPM response code into a typed error.
func mapErr(op string, err error) error {
	var he *hsm.Error
	switch {
	case errors.As(err, &he):
		return err
	case errors.Is(err, tpm2.TPMRCPolicyFail):
		return hsm.Errorf(hsm.ErrPCRMismatch, op, "the PCRs this blob was sealed to have changed since (boot chain or firmware change); boot the previous state, or restore the share from backup. Rewrap blobs before planned changes", nil)
	case errors.Is(err, tpm2.TPMRCAuthFail), errors.Is(err, tpm2.TPMRCBadAuth):
		return hsm.Errorf(hsm.ErrTampered, op, "the sealed data key does not belong to this blob's node, wallet or epoch, or was altered", nil)
	case errors.Is(err, tpm2.TPMRCIntegrity), errors.Is(err, tpm2.TPMRCBinding), errors.Is(err, tpm2.TPMRCSize), errors.Is(err, tpm2.TPMRCValue), errors.Is(err, tpm2.TPMRCKey):
		return hsm.Errorf(hsm.ErrTampered, op, "the sealed data key was altered, or was sealed by another TPM or after a TPM clear", err)
	case errors.Is(err, tpm2.TPMRCLockout):
		return hsm.Errorf(hsm.ErrBackendFailure, op, "the TPM is in dictionary-attack lockout; wait or reset it with the lockout authorization", err)
	}
	return hsm.Errorf(hsm.ErrBackendFailure, op, "", err)
}

// ownerErr maps errors of commands authorised by the owner hierarchy.
func ownerErr(op string, err error) error {
	if errors.Is(err, tpm2.TPMRCAuthFail) || errors.Is(err, tpm2.TPMRCBadAuth) {
		return hsm.Errorf(hsm.ErrWrongPIN, op, "the TPM owner hierarchy has an authorization value; signerd needs it empty (the Linux default): tpm2_changeauth -c owner -p OLD", nil)
	}
	return mapErr(op, err)
}

// --- keys ---

func uniqueFor(parts ...string) []byte {
	h := sha256.New()
	for _, p := range parts {
		_ = binary.Write(h, binary.BigEndian, uint32(len(p)))
		h.Write([]byte(p))
	}
	return h.Sum(nil)
}

func storageTemplate(object string, v uint32) tpm2.TPMTPublic {
	tmpl := tpm2.ECCSRKTemplate
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: uniqueFor("signerd storage key", object, fmt.Sprint(v))},
		Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
	})
	return tmpl
}

func identityTemplate(object string) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			NoDA:                true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: uniqueFor("signerd node identity", object)},
			Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
		}),
	}
}

func createPrimary(t transport.TPM, tmpl tpm2.TPMTPublic) (*loaded, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(t)
	if err != nil {
		return nil, err
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		flush(t, rsp.ObjectHandle)
		return nil, err
	}
	return &loaded{handle: rsp.ObjectHandle, name: rsp.Name, pub: *pub}, nil
}

func flush(t transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t)
}

// storageKey returns version v's storage key, loading it in place of the
// cached one when needed.
func (b *Backend) storageKey(t transport.TPM, v uint32) (*loaded, error) {
	if b.srk != nil && b.srk.version == v {
		return b.srk, nil
	}
	if b.srk != nil {
		flush(t, b.srk.handle)
		b.srk = nil
	}
	k, err := createPrimary(t, storageTemplate(b.cfg.Object, v))
	if err != nil {
		return nil, err
	}
	k.version = v
	b.srk = k
	return k, nil
}

func (b *Backend) identityKey(t transport.TPM) (*loaded, error) {
	if b.ident != nil {
		return b.ident, nil
	}
	k, err := createPrimary(t, identityTemplate(b.cfg.Object))
	if err != nil {
		return nil, err
	}
	b.ident = k
	return k, nil
}

// --- the active version, in NV ---

func (b *Backend) nvPublic() tpm2.TPMSNVPublic {
	return tpm2.TPMSNVPublic{
		NVIndex: tpm2.TPMHandle(b.cfg.NVIndex),
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			OwnerWrite: true,
			OwnerRead:  true,
			NoDA:       true,
			NT:         tpm2.TPMNTOrdinary,
		},
		DataSize: 4,
	}
}

// readActive returns the active version; 0 when the index does not exist or
// was defined but never written (an init interrupted by a crash).
func (b *Backend) readActive(t transport.TPM) (v uint32, defined bool, err error) {
	pub, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(b.cfg.NVIndex)}.Execute(t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return 0, false, nil
		}
		return 0, false, mapErr("tpm read key version", err)
	}
	rsp, err := tpm2.NVRead{
		AuthHandle: tpm2.TPMRHOwner,
		NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(b.cfg.NVIndex), Name: pub.NVName},
		Size:       4,
	}.Execute(t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCNVUninitialized) {
			return 0, true, nil
		}
		return 0, true, ownerErr("tpm read key version", err)
	}
	if len(rsp.Data.Buffer) != 4 {
		return 0, true, hsm.Errorf(hsm.ErrBackendFailure, "tpm read key version", "", fmt.Errorf("NV index 0x%08x holds %d bytes", b.cfg.NVIndex, len(rsp.Data.Buffer)))
	}
	return binary.BigEndian.Uint32(rsp.Data.Buffer), true, nil
}

func (b *Backend) writeActive(t transport.TPM, v uint32) error {
	pub := b.nvPublic()
	name, err := tpm2.NVName(&pub)
	if err != nil {
		return mapErr("tpm write key version", err)
	}
	_, err = tpm2.NVWrite{
		AuthHandle: tpm2.TPMRHOwner,
		NVIndex:    tpm2.NamedHandle{Handle: pub.NVIndex, Name: *name},
		Data:       tpm2.TPM2BMaxNVBuffer{Buffer: binary.BigEndian.AppendUint32(nil, v)},
	}.Execute(t)
	if err != nil {
		return ownerErr("tpm write key version", err)
	}
	return nil
}

// InitKeys records key version 1 in the NV index and checks that the storage
// and identity keys can be derived. It refuses, changing nothing, when the
// index already holds a version.
func (b *Backend) InitKeys(ctx context.Context) error {
	return b.do(ctx, "tpm init keys", func(t transport.TPM) error {
		v, defined, err := b.readActive(t)
		if err != nil {
			return err
		}
		if v != 0 {
			return hsm.Errorf(hsm.ErrKeyExists, "tpm init", fmt.Sprintf("this TPM already holds %s (version %d, NV index 0x%08x); use `signerctl key rotate` to make a new version", b.cfg.Object, v, b.cfg.NVIndex), nil)
		}
		if _, err := b.storageKey(t, 1); err != nil {
			return ownerErr("tpm create storage key", err)
		}
		if _, err := b.identityKey(t); err != nil {
			return ownerErr("tpm create identity key", err)
		}
		if !defined {
			_, err := tpm2.NVDefineSpace{
				AuthHandle: tpm2.TPMRHOwner,
				PublicInfo: tpm2.New2B(b.nvPublic()),
			}.Execute(t)
			if err != nil {
				if errors.Is(err, tpm2.TPMRCNVDefined) {
					return hsm.Errorf(hsm.ErrKeyExists, "tpm init", fmt.Sprintf("NV index 0x%08x is in use; pick another with ?nv-index=", b.cfg.NVIndex), nil)
				}
				return ownerErr("tpm define NV index", err)
			}
		}
		if err := b.writeActive(t, 1); err != nil {
			return err
		}
		b.active = 1
		return nil
	})
}

func (b *Backend) Backend() string { return backendName }

func (b *Backend) ActiveKey() hsm.KeyRef {
	b.mu.Lock()
	defer b.mu.Unlock()
	return hsm.KeyRef{Label: b.cfg.Object, Version: b.active}
}

// RotateKey makes version active+1 the active one. Blobs sealed under older
// versions still open (their storage keys are derived again on demand).
func (b *Backend) RotateKey(ctx context.Context) (hsm.KeyRef, error) {
	var ref hsm.KeyRef
	err := b.do(ctx, "tpm rotate", func(t transport.TPM) error {
		v, _, err := b.readActive(t)
		if err != nil {
			return err
		}
		if v == 0 {
			return hsm.Errorf(hsm.ErrKeyNotFound, "tpm rotate", "run `signerctl init` first", nil)
		}
		next := v + 1
		if _, err := b.storageKey(t, next); err != nil {
			return ownerErr("tpm create storage key", err)
		}
		if err := b.writeActive(t, next); err != nil {
			return err
		}
		b.active = next
		ref = hsm.KeyRef{Label: b.cfg.Object, Version: next}
		return nil
	})
	return ref, err
}

// --- sealing ---

// authFor derives a sealed object's authorization value from the blob's
// associated data. The value is not secret (the AAD is public); it binds the
// data key to its blob. It is ASCII hex, with no zero byte: go-tpm v0.9.8's
// hmacKeyFromAuthValue cuts an auth value at its first zero byte instead of
// trimming trailing zeros only, so a raw digest with a zero byte inside would
// not authorise (1 in 8 would fail). 16 bytes of SHA-256 in hex: 128 bits.
func authFor(aad []byte) []byte {
	h := sha256.New()
	h.Write([]byte("signerd tpm seal v1\x00"))
	h.Write(aad)
	return []byte(hex.EncodeToString(h.Sum(nil)[:16]))
}

func pcrSelection(pcrs []uint) tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(pcrs...),
	}}}
}

func maskPCRs(mask uint32) []uint {
	var out []uint
	for i := uint(0); i < 24; i++ {
		if mask&(1<<i) != 0 {
			out = append(out, i)
		}
	}
	return out
}

func pcrMask(pcrs []uint) uint32 {
	var m uint32
	for _, p := range pcrs {
		m |= 1 << p
	}
	return m
}

// policyDigest computes PolicyPCR(pcrs, current values) then
// PolicyAuthValue in a trial session.
func policyDigest(t transport.TPM, pcrs []uint) ([]byte, error) {
	sess, closer, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16, tpm2.Trial())
	if err != nil {
		return nil, err
	}
	defer func() { _ = closer() }()
	if err := runPolicy(t, sess.Handle(), pcrs); err != nil {
		return nil, err
	}
	rsp, err := tpm2.PolicyGetDigest{PolicySession: sess.Handle()}.Execute(t)
	if err != nil {
		return nil, err
	}
	return rsp.PolicyDigest.Buffer, nil
}

func runPolicy(t transport.TPM, h tpm2.TPMHandle, pcrs []uint) error {
	if _, err := (tpm2.PolicyPCR{PolicySession: h, Pcrs: pcrSelection(pcrs)}).Execute(t); err != nil {
		return err
	}
	_, err := tpm2.PolicyAuthValue{PolicySession: h}.Execute(t)
	return err
}

// Wrapped data key layout: "T1", PCR mask (uint32), then the sealed object's
// TPM2B_PUBLIC and TPM2B_PRIVATE, each preceded by a uint16 length.
const wrappedMagic = "T1"

func encodeWrapped(mask uint32, pub tpm2.TPM2BPublic, priv tpm2.TPM2BPrivate) []byte {
	out := []byte(wrappedMagic)
	out = binary.BigEndian.AppendUint32(out, mask)
	for _, p := range [][]byte{tpm2.Marshal(pub), tpm2.Marshal(priv)} {
		out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
		out = append(out, p...)
	}
	return out
}

func decodeWrapped(b []byte) (mask uint32, pub *tpm2.TPM2BPublic, priv *tpm2.TPM2BPrivate, err error) {
	bad := func(why string) error {
		return hsm.Errorf(hsm.ErrMalformedBlob, "tpm unwrap", "the stored value is damaged; restore it from a backup", errors.New(why))
	}
	if len(b) < 6 || string(b[:2]) != wrappedMagic {
		return 0, nil, nil, bad("not a TPM-sealed data key")
	}
	mask = binary.BigEndian.Uint32(b[2:6])
	if mask>>24 != 0 {
		return 0, nil, nil, bad("PCR mask out of range")
	}
	rest := b[6:]
	var parts [2][]byte
	for i := range parts {
		if len(rest) < 2 {
			return 0, nil, nil, bad("truncated")
		}
		n := int(binary.BigEndian.Uint16(rest))
		if len(rest) < 2+n {
			return 0, nil, nil, bad("truncated")
		}
		parts[i], rest = rest[2:2+n], rest[2+n:]
	}
	if len(rest) != 0 {
		return 0, nil, nil, bad("trailing bytes")
	}
	if pub, err = tpm2.Unmarshal[tpm2.TPM2BPublic](parts[0]); err != nil {
		return 0, nil, nil, bad("public part: " + err.Error())
	}
	if priv, err = tpm2.Unmarshal[tpm2.TPM2BPrivate](parts[1]); err != nil {
		return 0, nil, nil, bad("private part: " + err.Error())
	}
	return mask, pub, priv, nil
}

// WrapKey seals dataKey as a keyed-hash object under the active storage key.
func (b *Backend) WrapKey(ctx context.Context, dataKey, aad []byte) (hsm.KeyRef, []byte, error) {
	var ref hsm.KeyRef
	var out []byte
	err := b.do(ctx, "tpm seal", func(t transport.TPM) error {
		if b.active == 0 {
			return hsm.Errorf(hsm.ErrKeyNotFound, "tpm seal", "run `signerctl init` to create the wrapping key", nil)
		}
		srk, err := b.storageKey(t, b.active)
		if err != nil {
			return ownerErr("tpm load storage key", err)
		}
		auth := authFor(aad)
		defer secret.Zero(auth)
		tmpl := tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgKeyedHash,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM:     true,
				FixedParent:  true,
				NoDA:         true,
				UserWithAuth: len(b.cfg.PCRs) == 0,
			},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
			}),
		}
		if len(b.cfg.PCRs) > 0 {
			pd, err := policyDigest(t, b.cfg.PCRs)
			if err != nil {
				return mapErr("tpm PCR policy", err)
			}
			tmpl.AuthPolicy = tpm2.TPM2BDigest{Buffer: pd}
		}
		rsp, err := tpm2.Create{
			ParentHandle: tpm2.AuthHandle{
				Handle: srk.handle,
				Name:   srk.name,
				Auth:   tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.AESEncryption(128, tpm2.EncryptIn), tpm2.Salted(srk.handle, srk.pub)),
			},
			InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
				UserAuth: tpm2.TPM2BAuth{Buffer: auth},
				Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: dataKey}),
			}},
			InPublic: tpm2.New2B(tmpl),
		}.Execute(t)
		if err != nil {
			return mapErr("tpm seal", err)
		}
		ref = hsm.KeyRef{Label: b.cfg.Object, Version: b.active}
		out = encodeWrapped(pcrMask(b.cfg.PCRs), rsp.OutPublic, rsp.OutPrivate)
		return nil
	})
	return ref, out, err
}

// UnwrapKey loads the sealed object under its version's storage key and
// unseals it, satisfying the PCR policy when it has one.
func (b *Backend) UnwrapKey(ctx context.Context, ref hsm.KeyRef, wrapped, aad []byte) ([]byte, error) {
	mask, pub, priv, err := decodeWrapped(wrapped)
	if err != nil {
		return nil, err
	}
	var dk []byte
	err = b.do(ctx, "tpm unseal", func(t transport.TPM) error {
		if ref.Label != b.cfg.Object || ref.Version == 0 || ref.Version > b.active {
			return hsm.Errorf(hsm.ErrKeyNotFound, "tpm unseal", "the key version that sealed this blob is not on this TPM (another node, or a TPM that was cleared)", fmt.Errorf("no key %s (active %s/v%d)", ref, b.cfg.Object, b.active))
		}
		srk, err := b.storageKey(t, ref.Version)
		if err != nil {
			return ownerErr("tpm load storage key", err)
		}
		lr, err := tpm2.Load{
			ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)},
			InPrivate:    *priv,
			InPublic:     *pub,
		}.Execute(t)
		if err != nil {
			return mapErr("tpm load sealed key", err)
		}
		defer flush(t, lr.ObjectHandle)
		auth := authFor(aad)
		defer secret.Zero(auth)
		var sess tpm2.Session
		if mask == 0 {
			sess = tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(auth), tpm2.AESEncryption(128, tpm2.EncryptOut), tpm2.Salted(srk.handle, srk.pub))
		} else {
			ps, closer, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16, tpm2.Auth(auth), tpm2.AESEncryption(128, tpm2.EncryptOut), tpm2.Salted(srk.handle, srk.pub))
			if err != nil {
				return mapErr("tpm policy session", err)
			}
			defer func() { _ = closer() }()
			if err := runPolicy(t, ps.Handle(), maskPCRs(mask)); err != nil {
				return mapErr("tpm PCR policy", err)
			}
			sess = ps
		}
		rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: lr.ObjectHandle, Name: lr.Name, Auth: sess}}.Execute(t)
		if err != nil {
			return mapErr("tpm unseal", err)
		}
		dk = append([]byte(nil), rsp.OutData.Buffer...)
		secret.Zero(rsp.OutData.Buffer)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return dk, nil
}

// --- identity ---

// Identity returns the node identity key: an ECDSA P-256 key that exists only
// inside the TPM. It signs SHA-256 digests and returns ASN.1 signatures.
func (b *Backend) Identity(ctx context.Context) (crypto.Signer, error) {
	var pub *ecdsa.PublicKey
	err := b.do(ctx, "tpm identity", func(t transport.TPM) error {
		if b.active == 0 {
			return hsm.Errorf(hsm.ErrKeyNotFound, "tpm identity", "run `signerctl init` to create the node identity key", nil)
		}
		k, err := b.identityKey(t)
		if err != nil {
			return ownerErr("tpm identity", err)
		}
		p, err := publicKey(k.pub)
		if err != nil {
			return err
		}
		pub = p
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &signer{b: b, pub: pub}, nil
}

func publicKey(p tpm2.TPMTPublic) (*ecdsa.PublicKey, error) {
	parms, err := p.Parameters.ECCDetail()
	if err != nil {
		return nil, hsm.Errorf(hsm.ErrBackendFailure, "tpm identity", "", err)
	}
	pt, err := p.Unique.ECC()
	if err != nil {
		return nil, hsm.Errorf(hsm.ErrBackendFailure, "tpm identity", "", err)
	}
	pub, err := tpm2.ECDSAPub(parms, pt)
	if err != nil {
		return nil, hsm.Errorf(hsm.ErrBackendFailure, "tpm identity", "", err)
	}
	return pub, nil
}

type signer struct {
	b   *Backend
	pub *ecdsa.PublicKey
}

func (s *signer) Public() crypto.PublicKey { return s.pub }

// Sign signs a SHA-256 digest. The context of the call that created the
// signer is not kept; each signature is bounded by a 30 s deadline.
func (s *signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts != nil && opts.HashFunc() != crypto.SHA256 || len(digest) != sha256.Size {
		return nil, hsm.Errorf(hsm.ErrUnsupported, "tpm sign", "the TPM identity key signs SHA-256 digests only", fmt.Errorf("digest of %d bytes", len(digest)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var sig []byte
	err := s.b.do(ctx, "tpm sign", func(t transport.TPM) error {
		k, err := s.b.identityKey(t)
		if err != nil {
			return ownerErr("tpm identity", err)
		}
		rsp, err := tpm2.Sign{
			KeyHandle: tpm2.AuthHandle{Handle: k.handle, Name: k.name, Auth: tpm2.PasswordAuth(nil)},
			Digest:    tpm2.TPM2BDigest{Buffer: digest},
			InScheme: tpm2.TPMTSigScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
			},
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}.Execute(t)
		if err != nil {
			return mapErr("tpm sign", err)
		}
		e, err := rsp.Signature.Signature.ECDSA()
		if err != nil {
			return mapErr("tpm sign", err)
		}
		sig, err = asn1.Marshal(struct{ R, S *big.Int }{
			new(big.Int).SetBytes(e.SignatureR.Buffer),
			new(big.Int).SetBytes(e.SignatureS.Buffer),
		})
		return err
	})
	return sig, err
}

// Close flushes the loaded keys and closes the connection.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if b.t == nil {
		return nil
	}
	for _, k := range []*loaded{b.srk, b.ident} {
		if k != nil {
			flush(b.t, k.handle)
		}
	}
	err := b.t.Close()
	b.t, b.srk, b.ident = nil, nil, nil
	return err
}
