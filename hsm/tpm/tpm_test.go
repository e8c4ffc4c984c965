package tpm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/internal/testtpm"
	"github.com/hwsigner/signer/signer/store"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, uri string) *Backend {
	t.Helper()
	cfg, err := ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(testCtx(t), cfg, nil)
	if err != nil {
		t.Fatalf("open %s: %v", uri, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// initialised starts a swtpm and returns an initialised backend on it.
func initialised(t *testing.T, query string) (*testtpm.SWTPM, *Backend) {
	t.Helper()
	sw := testtpm.Start(t)
	b := open(t, sw.URI(query))
	if err := b.InitKeys(testCtx(t)); err != nil {
		t.Fatalf("init: %v", err)
	}
	return sw, b
}

var bind = hsm.Binding{NodeID: "node0", Purpose: "share", WalletID: "w1", KeyType: "secp256k1", Epoch: 1}

func wantErr(t *testing.T, err, kind error, hintWords ...string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("got %v, want %v", err, kind)
	}
	for _, w := range hintWords {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not mention %q", err, w)
		}
	}
}

// Auth values must not contain a zero byte (see authFor). This binding's
// SHA-256 has one inside; it failed to unseal before the fix.
func TestAuthValueWithoutZeroBytes(t *testing.T) {
	_, b := initialised(t, "")
	ctx := testCtx(t)
	s := hsm.NewSealer(b)
	for i := 0; i < 20; i++ {
		bd := hsm.Binding{NodeID: "node0", Purpose: "secret", WalletID: "s1", Epoch: uint64(i)}
		if bytes.IndexByte(authFor(bd.AAD(hsm.FormatVersion)), 0) >= 0 {
			t.Fatal("auth value with a zero byte")
		}
		blob, err := s.Seal(ctx, []byte("x"), bd)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Open(ctx, blob, bd); err != nil {
			t.Fatalf("epoch %d: %v", i, err)
		}
	}
}

func TestParseURI(t *testing.T) {
	tests := []struct {
		uri     string
		want    Config
		wantErr string
	}{
		{uri: "tpm:device=/dev/tpmrm0", want: Config{Device: "/dev/tpmrm0", Object: "share-kek", NVIndex: DefaultNVIndex("share-kek")}},
		{uri: "tpm:device=/dev/tpmrm0;object=kek2?pcrs=7,0,7", want: Config{Device: "/dev/tpmrm0", Object: "kek2", PCRs: []uint{0, 7}, NVIndex: DefaultNVIndex("kek2")}},
		{uri: "tpm:host=127.0.0.1;port=2321?pcrs=16&nv-index=0x01000001", want: Config{Addr: "127.0.0.1:2321", Object: "share-kek", PCRs: []uint{16}, NVIndex: 0x01000001}},
		{uri: "pkcs11:token=x", wantErr: "missing tpm: scheme"},
		{uri: "tpm:", wantErr: "device= (or host= and port="},
		{uri: "tpm:device=/dev/tpmrm0;host=h;port=1", wantErr: "not both"},
		{uri: "tpm:host=h", wantErr: "go together"},
		{uri: "tpm:host=h;port=99999", wantErr: "not a TCP port"},
		{uri: "tpm:device=/dev/tpm0?pcrs=24", wantErr: "PCR index"},
		{uri: "tpm:device=/dev/tpm0?nv-index=0x01800000", wantErr: "owner NV index"},
		{uri: "tpm:device=/dev/tpm0?owner-auth=x", wantErr: "unknown query attribute"},
		{uri: "tpm:device=/dev/tpm0;object=a|b", wantErr: "object"},
	}
	for _, tc := range tests {
		t.Run(tc.uri, func(t *testing.T) {
			got, err := ParseURI(tc.uri)
			if tc.wantErr != "" {
				if !errors.Is(err, hsm.ErrBadURI) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrBadURI mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want.String() || got.NVIndex != tc.want.NVIndex {
				t.Fatalf("got %+v (%s), want %+v", got, got, tc.want)
			}
			again, err := ParseURI(got.String())
			if err != nil || again.String() != got.String() {
				t.Fatalf("round trip %s: %+v %v", got, again, err)
			}
		})
	}
}

func TestSealOpenAndIdentity(t *testing.T) {
	_, b := initialised(t, "")
	ctx := testCtx(t)
	s := hsm.NewSealer(b)
	pt := make([]byte, 20<<10)
	_, _ = rand.Read(pt)
	blob, err := s.Seal(ctx, pt, bind)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, pt[:64]) {
		t.Fatal("plaintext in blob")
	}
	got, err := s.Open(ctx, blob, bind)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("open: %v", err)
	}
	if pb, _ := hsm.ParseBlob(blob); pb.Backend != "tpm" || pb.Key != (hsm.KeyRef{Label: "share-kek", Version: 1}) {
		t.Fatalf("blob records %s %s", pb.Backend, pb.Key)
	}

	id, err := b.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("round message"))
	sig, err := id.Sign(rand.Reader, d[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := id.Public().(*ecdsa.PublicKey)
	if !ecdsa.VerifyASN1(pub, d[:], sig) {
		t.Fatal("identity signature does not verify")
	}
	if _, err := id.Sign(rand.Reader, []byte("short"), nil); !errors.Is(err, hsm.ErrUnsupported) {
		t.Fatalf("short digest: %v", err)
	}
	// The identity key is derived again after a reopen: the same key.
	// (swtpm serves one connection at a time: close before reopening.)
	_ = b.Close()
	b2 := open(t, b.cfg.String())
	id2, err := b2.Identity(ctx)
	if err != nil || !id2.Public().(*ecdsa.PublicKey).Equal(pub) {
		t.Fatalf("identity after reopen differs: %v", err)
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	_, b := initialised(t, "")
	err := b.InitKeys(testCtx(t))
	wantErr(t, err, hsm.ErrKeyExists, "signerctl key rotate")
	if b.ActiveKey().Version != 1 {
		t.Fatalf("active key changed to %s", b.ActiveKey())
	}
}

func TestNotInitialised(t *testing.T) {
	sw := testtpm.Start(t)
	b := open(t, sw.URI(""))
	ctx := testCtx(t)
	_, err := hsm.NewSealer(b).Seal(ctx, []byte("x"), bind)
	wantErr(t, err, hsm.ErrKeyNotFound, "signerctl init")
	_, err = b.Identity(ctx)
	wantErr(t, err, hsm.ErrKeyNotFound, "signerctl init")
	_, err = b.RotateKey(ctx)
	wantErr(t, err, hsm.ErrKeyNotFound)
}

func TestRotateAndRewrap(t *testing.T) {
	_, b := initialised(t, "")
	ctx := testCtx(t)
	s := hsm.NewSealer(b)
	old, err := s.Seal(ctx, []byte("share"), bind)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := b.RotateKey(ctx)
	if err != nil || ref.Version != 2 || b.ActiveKey() != ref {
		t.Fatalf("rotate: %v %v", ref, err)
	}
	if got, err := s.Open(ctx, old, bind); err != nil || string(got) != "share" {
		t.Fatalf("v1 blob after rotation: %v", err)
	}
	moved, changed, err := s.Rewrap(ctx, old, bind)
	if err != nil || !changed {
		t.Fatalf("rewrap: %v %v", changed, err)
	}
	if pb, _ := hsm.ParseBlob(moved); pb.Key.Version != 2 {
		t.Fatalf("rewrapped blob on %s", pb.Key)
	}
	// The active version is kept by the TPM: a new process sees v2.
	_ = b.Close()
	b2 := open(t, b.cfg.String())
	if b2.ActiveKey().Version != 2 {
		t.Fatalf("reopened on %s", b2.ActiveKey())
	}
	s2 := hsm.NewSealer(b2)
	for _, blob := range [][]byte{old, moved} {
		if got, err := s2.Open(ctx, blob, bind); err != nil || string(got) != "share" {
			t.Fatalf("after reopen: %v", err)
		}
	}
}

// storedShare seals a share into a real node store and returns the store
// and the share's sealed bytes as stored.
func storedShare(t *testing.T, s *hsm.Sealer) (*store.Store, []byte) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "node.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	blob, err := s.Seal(testCtx(t), []byte("threshold share"), bind)
	if err != nil {
		t.Fatal(err)
	}
	meta := store.WalletMeta{WalletID: bind.WalletID, KeyType: bind.KeyType, Epoch: bind.Epoch, Threshold: 1, Committee: []string{"node0", "node1", "node2"}}
	if err := st.PutShare(meta, blob); err != nil {
		t.Fatal(err)
	}
	_, raw, err := st.Share(bind.WalletID, bind.KeyType)
	if err != nil {
		t.Fatal(err)
	}
	return st, raw
}

func unchanged(t *testing.T, st *store.Store, want []byte) {
	t.Helper()
	_, raw, err := st.Share(bind.WalletID, bind.KeyType)
	if err != nil || !bytes.Equal(raw, want) {
		t.Fatalf("stored share changed (err %v)", err)
	}
}

func pcrCmd(t *testing.T, b *Backend, cmd func(tp transport.TPM) error) {
	t.Helper()
	if err := b.do(testCtx(t), "test PCR", func(tp transport.TPM) error { return cmd(tp) }); err != nil {
		t.Fatal(err)
	}
}

func TestPCRMismatch(t *testing.T) {
	_, b := initialised(t, "pcrs=16")
	ctx := testCtx(t)
	s := hsm.NewSealer(b)
	st, raw := storedShare(t, s)
	if _, err := s.Open(ctx, raw, bind); err != nil {
		t.Fatalf("open before the PCR changes: %v", err)
	}
	pcr16 := tpm2.AuthHandle{Handle: tpm2.TPMHandle(16), Auth: tpm2.PasswordAuth(nil)}
	pcrCmd(t, b, func(tp transport.TPM) error {
		_, err := tpm2.PCRExtend{PCRHandle: pcr16, Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{
			{HashAlg: tpm2.TPMAlgSHA256, Digest: make([]byte, 32)},
		}}}.Execute(tp)
		return err
	})
	_, err := s.Open(ctx, raw, bind)
	wantErr(t, err, hsm.ErrPCRMismatch, "PCRs", "boot")
	unchanged(t, st, raw)
	// A blob sealed now is bound to the new value; the node keeps working.
	if blob, err := s.Seal(ctx, []byte("new"), bind); err != nil {
		t.Fatal(err)
	} else if _, err := s.Open(ctx, blob, bind); err != nil {
		t.Fatalf("blob sealed after the change: %v", err)
	}
	// Back to the sealed state, the share opens: nothing was lost.
	pcrCmd(t, b, func(tp transport.TPM) error {
		_, err := tpm2.PCRReset{PCRHandle: pcr16}.Execute(tp)
		return err
	})
	if got, err := s.Open(ctx, raw, bind); err != nil || string(got) != "threshold share" {
		t.Fatalf("after PCR reset: %v", err)
	}
}

func TestNotRunning(t *testing.T) {
	sw := testtpm.Start(t)
	uri := sw.URI("")
	sw.Stop()
	cfg, _ := ParseURI(uri)
	_, err := Open(testCtx(t), cfg, nil)
	wantErr(t, err, hsm.ErrDeviceUnavailable, "start swtpm", sw.Port)

	cfg, _ = ParseURI("tpm:device=" + filepath.Join(t.TempDir(), "tpmrm0"))
	_, err = Open(testCtx(t), cfg, nil)
	wantErr(t, err, hsm.ErrDeviceUnavailable, "tpmrm0")
}

// TestRestart: swtpm stops under an open backend, which fails with a clear
// error, then recovers by itself when swtpm is back; the same TPM state gives
// the same keys, so every blob still opens.
func TestRestart(t *testing.T) {
	sw, b := initialised(t, "pcrs=16")
	ctx := testCtx(t)
	s := hsm.NewSealer(b)
	st, raw := storedShare(t, s)
	id, err := b.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}

	sw.Stop()
	_, err = s.Open(ctx, raw, bind)
	wantErr(t, err, hsm.ErrDeviceUnavailable, "start swtpm")
	unchanged(t, st, raw)

	sw.Restart() // also resets PCR 16, as a reboot would
	if got, err := s.Open(ctx, raw, bind); err != nil || string(got) != "threshold share" {
		t.Fatalf("open after swtpm restart: %v", err)
	}
	d := sha256.Sum256([]byte("after restart"))
	sig, err := id.Sign(rand.Reader, d[:], nil)
	if err != nil || !ecdsa.VerifyASN1(id.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Fatalf("identity after restart: %v", err)
	}
	if _, err := s.Seal(ctx, []byte("x"), bind); err != nil {
		t.Fatalf("seal after restart: %v", err)
	}
}

func TestTamperedAndMoved(t *testing.T) {
	_, b := initialised(t, "")
	ctx := testCtx(t)
	s := hsm.NewSealer(b)
	blob, err := s.Seal(ctx, []byte("share"), bind)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := hsm.ParseBlob(blob)
	aad := bind.AAD(hsm.FormatVersion)

	// The data key answers only to this blob's binding, whatever the envelope says.
	other := bind
	other.WalletID = "w2"
	_, err = b.UnwrapKey(ctx, pb.Key, pb.WrappedKey, other.AAD(hsm.FormatVersion))
	wantErr(t, err, hsm.ErrTampered, "node, wallet or epoch")

	// A flipped byte in the TPM-encrypted private part.
	bad := append([]byte(nil), pb.WrappedKey...)
	bad[len(bad)-5] ^= 1
	_, err = b.UnwrapKey(ctx, pb.Key, bad, aad)
	wantErr(t, err, hsm.ErrTampered, "altered")

	// Garbage and truncation.
	_, err = b.UnwrapKey(ctx, pb.Key, []byte("T1\x00"), aad)
	wantErr(t, err, hsm.ErrMalformedBlob)
	_, err = b.UnwrapKey(ctx, pb.Key, pb.WrappedKey[:len(pb.WrappedKey)-1], aad)
	wantErr(t, err, hsm.ErrMalformedBlob)

	// A version this TPM never had.
	_, err = b.UnwrapKey(ctx, hsm.KeyRef{Label: "share-kek", Version: 9}, pb.WrappedKey, aad)
	wantErr(t, err, hsm.ErrKeyNotFound)

	// Another TPM (another node) cannot open it.
	_, b2 := initialised(t, "")
	_, err = hsm.NewSealer(b2).Open(ctx, blob, bind)
	wantErr(t, err, hsm.ErrTampered, "another TPM")

	// The backend still works after all that.
	if got, err := s.Open(ctx, blob, bind); err != nil || string(got) != "share" {
		t.Fatalf("open after bad input: %v", err)
	}
}
