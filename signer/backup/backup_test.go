package backup_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/hwsigner/signer/hsm"
	hsmuri "github.com/hwsigner/signer/hsm/uri"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/internal/testtpm"
	"github.com/hwsigner/signer/signer/backup"
	"github.com/hwsigner/signer/signer/store"
)

// nodeBinding is written out here, not taken from package backup, so that a
// change of the binding in either place fails the test (signer/node seals
// shares under exactly this).
func nodeBinding(node string, m store.WalletMeta) hsm.Binding {
	return hsm.Binding{NodeID: node, Purpose: "share", WalletID: m.WalletID, KeyType: m.KeyType, Epoch: m.Epoch}
}

// backend initialises and opens the key backend at u.
func backend(t *testing.T, u string) hsm.Backend {
	t.Helper()
	ctx := context.Background()
	if err := hsmuri.Init(ctx, u, nil); err != nil {
		t.Fatalf("init: %v", err)
	}
	b, err := hsmuri.Open(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "node.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// populate seals random "shares" for node0 as the node does: two wallets,
// both key types, a retired and a pending epoch. It returns the plaintexts by
// wallet/key type/epoch.
func populate(t *testing.T, b hsm.Backend, st *store.Store) map[string][]byte {
	t.Helper()
	metas := []store.WalletMeta{
		{WalletID: "wallet-one", KeyType: "secp256k1", Epoch: 1, Status: store.StatusRetired},
		{WalletID: "wallet-one", KeyType: "secp256k1", Epoch: 2, Status: store.StatusActive},
		{WalletID: "wallet-one", KeyType: "ed25519", Epoch: 1, Status: store.StatusActive},
		{WalletID: "wallet-two", KeyType: "ed25519", Epoch: 1, Status: store.StatusActive},
		{WalletID: "wallet-two", KeyType: "ed25519", Epoch: 2, Status: store.StatusPending},
	}
	out := map[string][]byte{}
	s := hsm.NewSealer(b)
	for i, m := range metas {
		m.Committee, m.Threshold = []string{"node0", "node1", "node2"}, 1
		m.PubKey = []byte{byte(i), 2, 3}
		m.CreatedAt = time.Now().UTC().Truncate(time.Second)
		pt := make([]byte, 30000+i) // several age chunks: tampering is found after some shares were sealed
		_, _ = rand.Read(pt)
		sealed, err := s.Seal(context.Background(), pt, nodeBinding("node0", m))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutShare(m, sealed); err != nil {
			t.Fatal(err)
		}
		out[key(m)] = pt
	}
	return out
}

func key(m store.WalletMeta) string {
	return m.WalletID + "/" + m.KeyType + "/" + string(rune('0'+m.Epoch))
}

func newIdentity(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func sortedMetas(t *testing.T, st *store.Store) []store.WalletMeta {
	t.Helper()
	ms, err := st.Wallets()
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(ms, func(i, j int) bool { return key(ms[i]) < key(ms[j]) })
	return ms
}

// A backup of a SoftHSM2 node restores onto a new SoftHSM2 token and onto a
// TPM: every epoch comes back with its metadata and opens, under the node's
// share binding, to the same bytes; the file is 0600 and holds no share
// plaintext in any encoding.
func TestBackupRestoreRoundTrip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src := backend(t, testhsm.Token(t, "bk-src"))
	srcStore := openStore(t)
	shares := populate(t, src, srcStore)

	rec1, rec2 := newIdentity(t), newIdentity(t)
	path := filepath.Join(t.TempDir(), "node0.backup")
	sum, err := backup.WriteFile(ctx, src, srcStore, "node0", path, rec1.Recipient(), rec2.Recipient())
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if sum.Shares != 5 || sum.Wallets != 2 || sum.NodeID != "node0" || sum.Format != backup.FormatVersion {
		t.Fatalf("summary %+v", sum)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file mode: %v %v", fi.Mode(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for k, pt := range shares {
		for _, enc := range [][]byte{pt[:32], pt[len(pt)-32:], []byte(hex.EncodeToString(pt[:32])), []byte(base64.StdEncoding.EncodeToString(pt[:33]))} {
			if bytes.Contains(raw, enc) {
				t.Fatalf("backup file contains plaintext of share %s", k)
			}
		}
	}
	if bytes.Contains(raw, []byte("wallet-one")) || bytes.Contains(raw, []byte("secp256k1")) {
		t.Fatal("backup file shows wallet metadata in clear")
	}

	tests := []struct {
		name string
		uri  func(t *testing.T) string
		id   *age.X25519Identity
	}{
		{"softhsm2 token with recipient 1", func(t *testing.T) string { return testhsm.Token(t, "bk-dst") }, rec1},
		{"tpm with recipient 2", func(t *testing.T) string { return testtpm.Start(t).URI("") }, rec2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := backend(t, tc.uri(t))
			dstStore := openStore(t)
			sum2, err := backup.RestoreFile(ctx, dst, dstStore, "node0", path, tc.id)
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			if sum2 != sum {
				t.Fatalf("restore summary %+v, backup summary %+v", sum2, sum)
			}
			want, got := sortedMetas(t, srcStore), sortedMetas(t, dstStore)
			if !reflect.DeepEqual(want, got) {
				t.Fatalf("metadata differs:\n got %+v\nwant %+v", got, want)
			}
			s := hsm.NewSealer(dst)
			for _, m := range got {
				_, sealed, err := dstStore.ShareAt(m.WalletID, m.KeyType, m.Epoch)
				if err != nil {
					t.Fatal(err)
				}
				blob, _ := hsm.ParseBlob(sealed)
				if blob == nil || blob.Backend != dst.Backend() {
					t.Fatalf("%s not sealed by the target backend: %+v", key(m), blob)
				}
				pt, err := s.Open(ctx, sealed, nodeBinding("node0", m))
				if err != nil {
					t.Fatalf("open restored %s: %v", key(m), err)
				}
				if !bytes.Equal(pt, shares[key(m)]) {
					t.Fatalf("restored %s differs", key(m))
				}
			}
			// The active share is the same epoch as before.
			if m, _, err := dstStore.Share("wallet-one", "secp256k1"); err != nil || m.Epoch != 2 {
				t.Fatalf("active wallet-one secp256k1: epoch %d, %v", m.Epoch, err)
			}
		})
	}
}

// Every refusal is typed, says what is wrong, and writes nothing.
func TestRestoreRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src := backend(t, testhsm.Token(t, "bk-src"))
	srcStore := openStore(t)
	populate(t, src, srcStore)
	rec := newIdentity(t)
	var good bytes.Buffer
	if _, err := backup.Write(ctx, src, srcStore, "node0", &good, rec.Recipient()); err != nil {
		t.Fatal(err)
	}
	flip := func(at int) []byte {
		b := bytes.Clone(good.Bytes())
		b[at] ^= 0x01
		return b
	}
	hdrEnd := bytes.Index(good.Bytes(), []byte("\n---")) // end of the age header
	dst := backend(t, testhsm.Token(t, "bk-dst"))
	stranger := newIdentity(t)

	tests := []struct {
		name     string
		file     []byte
		node     string
		id       *age.X25519Identity
		store    func(t *testing.T) *store.Store
		backend  func(t *testing.T) hsm.Backend
		want     error
		contains []string
	}{
		{name: "wrong node ID", file: good.Bytes(), node: "node1", want: backup.ErrNodeMismatch, contains: []string{`"node0"`, `"node1"`}},
		{name: "wrong identity", file: good.Bytes(), node: "node0", id: stranger, want: backup.ErrWrongIdentity, contains: []string{"identity file"}},
		{name: "payload byte flipped", file: flip(good.Len() - 100), node: "node0", want: backup.ErrCorrupt, contains: []string{"another copy"}},
		{name: "first payload byte flipped", file: flip(hdrEnd + 80), node: "node0", want: backup.ErrCorrupt},
		{name: "header MAC flipped", file: flip(hdrEnd + 6), node: "node0", want: backup.ErrCorrupt},
		{name: "truncated", file: good.Bytes()[:good.Len()-17], node: "node0", want: backup.ErrCorrupt},
		{name: "not an age file", file: []byte("hello"), node: "node0", want: backup.ErrCorrupt},
		{name: "share already in the store", file: good.Bytes(), node: "node0", store: func(t *testing.T) *store.Store {
			st := openStore(t)
			if err := st.PutShare(store.WalletMeta{WalletID: "wallet-two", KeyType: "ed25519", Epoch: 2}, []byte("x")); err != nil {
				t.Fatal(err)
			}
			return st
		}, want: backup.ErrShareExists, contains: []string{"wallet-two ed25519 epoch 2", "empty store"}},
		{name: "uninitialised token", file: good.Bytes(), node: "node0", backend: func(t *testing.T) hsm.Backend {
			b, err := hsmuri.Open(ctx, testhsm.Token(t, "bk-empty"), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			return b
		}, want: backup.ErrNotInitialised, contains: []string{"signerctl init"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, st, b := rec, openStore(t), dst
			if tc.id != nil {
				id = tc.id
			}
			if tc.store != nil {
				st = tc.store(t)
			}
			if tc.backend != nil {
				b = tc.backend(t)
			}
			before := sortedMetas(t, st)
			_, err := backup.Restore(ctx, b, st, tc.node, bytes.NewReader(tc.file), id)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Logf("refused: %v", err)
			for _, c := range tc.contains {
				if !strings.Contains(err.Error(), c) {
					t.Errorf("error %q does not say %q", err, c)
				}
			}
			if strings.Contains(err.Error(), id.String()) || strings.Contains(err.Error(), stranger.String()) {
				t.Fatal("error shows an age identity")
			}
			if after := sortedMetas(t, st); !reflect.DeepEqual(before, after) {
				t.Fatalf("a refused restore changed the store: %v -> %v", before, after)
			}
		})
	}
}

// A backup under the wrong node ID is refused before anything is written,
// and so is a backup with no recipient.
func TestBackupRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := backend(t, testhsm.Token(t, "bk-src"))
	st := openStore(t)
	populate(t, b, st)
	path := filepath.Join(t.TempDir(), "out")
	if _, err := backup.WriteFile(ctx, b, st, "node9", path, newIdentity(t).Recipient()); !errors.Is(err, backup.ErrNodeMismatch) || !strings.Contains(err.Error(), `"node0"`) {
		t.Fatalf("wrong node: %v", err)
	}
	if _, err := backup.WriteFile(ctx, b, st, "node0", path); !errors.Is(err, backup.ErrNoRecipients) {
		t.Fatalf("no recipients: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 0 {
		t.Fatalf("a refused backup left files: %v", ents)
	}
}
