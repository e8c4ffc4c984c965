package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/hsm/softkey"
	"github.com/hwsigner/signer/signer/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(filepath.Join(t.TempDir(), "node.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func meta(w, kt string, epoch uint64) store.WalletMeta {
	return store.WalletMeta{WalletID: w, KeyType: kt, Epoch: epoch, Committee: []string{"node0", "node1", "node2"}, Threshold: 1, PubKey: []byte{2, 1}}
}

func TestShares(t *testing.T) {
	s := openStore(t)
	if err := s.PutShare(meta("w1", "secp256k1", 1), []byte("sealed-1")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  error
		do   func() error
	}{
		{"overwrite refused", store.ErrExists, func() error { return s.PutShare(meta("w1", "secp256k1", 1), []byte("x")) }},
		{"unknown wallet", store.ErrNotFound, func() error { _, _, err := s.Share("nope", "secp256k1"); return err }},
		{"unknown epoch", store.ErrNotFound, func() error { _, _, err := s.ShareAt("w1", "secp256k1", 9); return err }},
		{"empty id", nil, func() error { return s.PutShare(meta("", "secp256k1", 1), []byte("x")) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil || (tc.err != nil && !errors.Is(err, tc.err)) {
				t.Fatalf("got %v, want %v", err, tc.err)
			}
		})
	}
	m2 := meta("w1", "secp256k1", 2)
	m2.Status = store.StatusPending
	if err := s.PutShare(m2, []byte("sealed-2")); err != nil {
		t.Fatal(err)
	}
	if m, v, _ := s.Share("w1", "secp256k1"); m.Epoch != 1 || string(v) != "sealed-1" {
		t.Fatalf("pending epoch must not be active yet: %+v", m)
	}
	if err := s.Activate("w1", "secp256k1", 2); err != nil {
		t.Fatal(err)
	}
	if m, v, _ := s.Share("w1", "secp256k1"); m.Epoch != 2 || string(v) != "sealed-2" {
		t.Fatalf("epoch 2 not active: %+v", m)
	}
	if m, _, _ := s.ShareAt("w1", "secp256k1", 1); m.Status != store.StatusRetired {
		t.Fatalf("epoch 1 not retired: %s", m.Status)
	}
	if err := s.DeleteShare("w1", "secp256k1", 1); err != nil {
		t.Fatal(err)
	}
	ws, err := s.Wallets()
	if err != nil || len(ws) != 1 {
		t.Fatalf("wallets: %v %d", err, len(ws))
	}
}

func TestPoolPopsOnce(t *testing.T) {
	s := openStore(t)
	for i := 0; i < 5; i++ {
		id, err := s.NextPoolID()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PushPreParams(id, []byte(fmt.Sprint("set", id))); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	got := map[uint64]bool{}
	empties := 0
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, _, err := s.PopPreParams()
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, store.ErrEmpty) {
				empties++
				return
			}
			if err != nil || got[id] {
				t.Errorf("pop: id %d err %v (duplicate=%v)", id, err, got[id])
			}
			got[id] = true
		}()
	}
	wg.Wait()
	if len(got) != 5 || empties != 3 {
		t.Fatalf("got %d sets and %d empties", len(got), empties)
	}
}

func TestJournalDedupe(t *testing.T) {
	s := openStore(t)
	e := store.JournalEntry{RequestID: "r1", Op: "sign", State: "accepted", ExpiresAt: time.Now().Add(time.Hour)}
	fresh, _, err := s.JournalBegin(e)
	if err != nil || !fresh {
		t.Fatalf("first: %v %v", fresh, err)
	}
	if err := s.JournalFinish("r1", "done", ""); err != nil {
		t.Fatal(err)
	}
	fresh, prev, err := s.JournalBegin(e)
	if err != nil || fresh || prev.State != "done" {
		t.Fatalf("replay: fresh=%v prev=%+v err=%v", fresh, prev, err)
	}
	if n, _ := s.JournalPrune(time.Now().Add(2 * time.Hour)); n != 1 {
		t.Fatalf("pruned %d", n)
	}
}

func TestPlaintextNeverOnDisk(t *testing.T) {
	dir := t.TempDir()
	if err := softkey.Init(filepath.Join(dir, "keys"), "share-kek"); err != nil {
		t.Fatal(err)
	}
	b, err := softkey.Open(nil, filepath.Join(dir, "keys"), "share-kek")
	if err != nil {
		t.Fatal(err)
	}
	sealer := hsm.NewSealer(b)
	share := make([]byte, 20<<10)
	_, _ = rand.Read(share)
	bind := hsm.Binding{NodeID: "node0", Purpose: "share", WalletID: "w1", KeyType: "secp256k1", Epoch: 1}
	blob, err := sealer.Seal(context.Background(), share, bind)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "node.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutShare(meta("w1", "secp256k1", 1), blob); err != nil {
		t.Fatal(err)
	}
	_, got, _ := s.Share("w1", "secp256k1")
	if pt, err := sealer.Open(context.Background(), got, bind); err != nil || !bytes.Equal(pt, share) {
		t.Fatalf("round trip: %v", err)
	}
	_ = s.Close()
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+16 <= len(share); i++ {
		if bytes.Contains(file, share[i:i+16]) {
			t.Fatalf("plaintext bytes at offset %d found in the database file", i)
		}
	}
}

func TestLockedByAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PutShare(meta("w1", "ed25519", 1), []byte("v")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = store.Open(path, store.Options{Timeout: 100 * time.Millisecond})
	if !errors.Is(err, store.ErrLocked) || !bytes.Contains([]byte(err.Error()), []byte(path)) {
		t.Fatalf("want ErrLocked naming the file, got %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("lock wait too long")
	}
	if _, v, err := s.Share("w1", "ed25519"); err != nil || string(v) != "v" {
		t.Fatalf("first store changed: %v", err)
	}
}

func TestRewrapAll(t *testing.T) {
	dir := t.TempDir()
	kd := filepath.Join(dir, "keys")
	if err := softkey.Init(kd, "share-kek"); err != nil {
		t.Fatal(err)
	}
	b, _ := softkey.Open(nil, kd, "share-kek")
	sealer := hsm.NewSealer(b)
	s := openStore(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		w := fmt.Sprint("w", i)
		bind := hsm.Binding{NodeID: "n", Purpose: "share", WalletID: w, KeyType: "ed25519", Epoch: 1}
		blob, _ := sealer.Seal(ctx, []byte("secret "+w), bind)
		if err := s.PutShare(meta(w, "ed25519", 1), blob); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.RotateKey(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := s.RewrapAll(func(raw []byte) ([]byte, bool, error) {
		blob, err := hsm.ParseBlob(raw)
		if err != nil {
			return nil, false, err
		}
		return sealer.Rewrap(ctx, raw, blob.Binding)
	})
	if err != nil || n != 3 {
		t.Fatalf("rewrapped %d: %v", n, err)
	}
	for i := 0; i < 3; i++ {
		w := fmt.Sprint("w", i)
		_, raw, _ := s.Share(w, "ed25519")
		blob, _ := hsm.ParseBlob(raw)
		if blob.Key.Version != 2 {
			t.Fatalf("%s still on v%d", w, blob.Key.Version)
		}
		if pt, err := sealer.Open(ctx, raw, blob.Binding); err != nil || string(pt) != "secret "+w {
			t.Fatalf("open after rewrap: %v", err)
		}
	}
}

// TestCrashSafety kills a writer at random moments: every wallet is either
// whole (meta and share) or absent.
func TestCrashSafety(t *testing.T) {
	if os.Getenv("STORE_CRASH_CHILD") == "1" {
		return
	}
	path := filepath.Join(t.TempDir(), "node.db")
	for trial := 0; trial < 50; trial++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(), "STORE_CRASH_CHILD=1", "STORE_CRASH_PATH="+path, fmt.Sprint("STORE_CRASH_TRIAL=", trial))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(20+mrand.IntN(150)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		s, err := store.Open(path, store.Options{})
		if err != nil {
			t.Fatalf("trial %d: store does not open after kill -9: %v", trial, err)
		}
		ws, err := s.Wallets()
		if err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		for _, w := range ws {
			_, v, err := s.ShareAt(w.WalletID, w.KeyType, w.Epoch)
			if err != nil || !bytes.HasPrefix(v, []byte("sealed-"+w.WalletID)) {
				t.Fatalf("trial %d: wallet %s is half written: %v", trial, w.WalletID, err)
			}
		}
		_ = s.Close()
	}
}

func TestCrashChild(t *testing.T) {
	if os.Getenv("STORE_CRASH_CHILD") != "1" {
		t.Skip("child process of TestCrashSafety")
	}
	s, err := store.Open(os.Getenv("STORE_CRASH_PATH"), store.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	trial := os.Getenv("STORE_CRASH_TRIAL")
	big := bytes.Repeat([]byte{0xAB}, 16<<10)
	for i := 0; ; i++ {
		w := fmt.Sprintf("t%s-w%d", trial, i)
		if err := s.PutShare(meta(w, "secp256k1", 1), append([]byte("sealed-"+w), big...)); err != nil {
			t.Fatal(err)
		}
	}
}
