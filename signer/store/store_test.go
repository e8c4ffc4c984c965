package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

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
	e := store.JournalEntry{RequestID: "r1", ClientID: "svcA", Op: "sign", State: "accepted", ExpiresAt: time.Now().Add(time.Hour)}
	fresh, _, err := s.JournalBegin(e)
	if err != nil || !fresh {
		t.Fatalf("first: %v %v", fresh, err)
	}
	if err := s.JournalFinish("svcA", "r1", "done", ""); err != nil {
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

// TestJournalScopedByClient: request IDs are per client; the same ID from
// another client (or the legacy client "") is a fresh request, and each
// client's entry is finished on its own.
func TestJournalScopedByClient(t *testing.T) {
	s := openStore(t)
	exp := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		client    string
		wantFresh bool
	}{
		{"svcA", true},
		{"svcB", true},
		{"", true},
		{"svcA", false},
		{"svcB", false},
		{"", false},
	} {
		fresh, _, err := s.JournalBegin(store.JournalEntry{RequestID: "r1", ClientID: tc.client, Op: "sign", State: "accepted", ExpiresAt: exp})
		if err != nil || fresh != tc.wantFresh {
			t.Fatalf("client %q: fresh=%v err=%v, want fresh=%v", tc.client, fresh, err, tc.wantFresh)
		}
	}
	if err := s.JournalFinish("svcB", "r1", "failed", "UNKNOWN_WALLET"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ client, state, code string }{{"svcA", "accepted", ""}, {"svcB", "failed", "UNKNOWN_WALLET"}, {"", "accepted", ""}} {
		e, err := s.JournalEntryOf(tc.client, "r1")
		if err != nil || e.State != tc.state || e.ResultCode != tc.code || e.ClientID != tc.client {
			t.Fatalf("client %q: %+v %v, want %s %s", tc.client, e, err, tc.state, tc.code)
		}
	}
	if err := s.JournalFinish("svcC", "r1", "done", ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("finish of an unknown client's request: %v", err)
	}
	if _, _, err := s.JournalBegin(store.JournalEntry{RequestID: "r2", ClientID: "a\x00b"}); err == nil {
		t.Fatal("client ID with NUL accepted")
	}
}

// TestJournalReadsUnscopedEntries: an entry written before the journal was
// scoped by client (keyed by request ID alone) still makes its client's
// replay REPLAYED, not another client's, and is pruned like the others.
func TestJournalReadsUnscopedEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := store.JournalEntry{RequestID: "r-old", ClientID: "svcA", Op: "sign", State: "done", ExpiresAt: time.Now().Add(time.Hour)}
	expired := store.JournalEntry{RequestID: "r-gone", ClientID: "svcA", Op: "sign", State: "done", ExpiresAt: time.Now().Add(-time.Hour)}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, e := range []store.JournalEntry{old, expired} {
			v, _ := json.Marshal(e)
			if err := tx.Bucket([]byte("journal")).Put([]byte(e.RequestID), v); err != nil {
				return err
			}
		}
		return nil
	})
	_ = db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fresh, prev, err := s.JournalBegin(store.JournalEntry{RequestID: "r-old", ClientID: "svcA", State: "accepted", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil || fresh || prev.State != "done" {
		t.Fatalf("svcA replaying its old request: fresh=%v prev=%+v err=%v", fresh, prev, err)
	}
	fresh, _, err = s.JournalBegin(store.JournalEntry{RequestID: "r-old", ClientID: "svcB", State: "accepted", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil || !fresh {
		t.Fatalf("svcB with svcA's old request id: fresh=%v err=%v", fresh, err)
	}
	if err := s.JournalFinish("svcA", "r-old", "failed", "X"); err != nil {
		t.Fatal(err)
	}
	if e, err := s.JournalEntryOf("svcA", "r-old"); err != nil || e.ResultCode != "X" {
		t.Fatalf("old entry after finish: %+v %v", e, err)
	}
	if n, err := s.JournalPrune(time.Now()); err != nil || n != 1 {
		t.Fatalf("pruned %d (%v), want the expired old entry only", n, err)
	}
	if st, _ := s.Stats(); st.Journal != 2 {
		t.Fatalf("journal holds %d entries, want 2", st.Journal)
	}
}

// TestJournalPruneRemovesEveryExpired: pruning removes every expired entry,
// also runs of adjacent ones, and keeps the others.
func TestJournalPruneRemovesEveryExpired(t *testing.T) {
	s := openStore(t)
	now := time.Now()
	want := 0
	for i := range 50 {
		exp := now.Add(time.Hour)
		if i%5 != 0 {
			exp = now.Add(-time.Minute)
			want++
		}
		if _, _, err := s.JournalBegin(store.JournalEntry{RequestID: fmt.Sprintf("r%02d", i), ClientID: "svcA", ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.JournalPrune(now); err != nil || n != want {
		t.Fatalf("pruned %d (%v), want %d", n, err, want)
	}
	if st, _ := s.Stats(); st.Journal != 50-want {
		t.Fatalf("journal holds %d entries, want %d", st.Journal, 50-want)
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

// rec is one record of a test store: epoch, status and sealed value.
type rec struct {
	epoch  uint64
	status string
	sealed string
}

func put(t *testing.T, s *store.Store, w, kt string, rs ...rec) {
	t.Helper()
	for _, r := range rs {
		m := meta(w, kt, r.epoch)
		m.Status = r.status
		if err := s.PutShare(m, []byte(r.sealed)); err != nil {
			t.Fatal(err)
		}
	}
}

// records lists a wallet key type's records in epoch order.
func records(t *testing.T, s *store.Store, w, kt string) []rec {
	t.Helper()
	ws, err := s.Wallets()
	if err != nil {
		t.Fatal(err)
	}
	var out []rec
	for _, m := range ws {
		if m.WalletID != w || m.KeyType != kt {
			continue
		}
		_, v, err := s.ShareAt(w, kt, m.Epoch)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec{m.Epoch, m.Status, string(v)})
	}
	return out
}

func retiredRec(w, kt string, epoch uint64) *store.Record {
	m := meta(w, kt, epoch)
	m.Status = store.StatusRetired
	return &store.Record{Meta: m, Sealed: []byte("marker")}
}

func TestSwitchEpoch(t *testing.T) {
	const w, kt = "w1", "secp256k1"
	var (
		a1 = rec{1, store.StatusActive, "s1"}
		r1 = rec{1, store.StatusRetired, "s1"}
		p2 = rec{2, store.StatusPending, "s2"}
		a2 = rec{2, store.StatusActive, "s2"}
		r2 = rec{2, store.StatusRetired, "s2"}
		m2 = rec{2, store.StatusRetired, "marker"}
		p3 = rec{3, store.StatusPending, "s3"}
		a3 = rec{3, store.StatusActive, "s3"}
	)
	tests := []struct {
		name    string
		before  []rec
		epoch   uint64
		retired *store.Record
		err     error // nil: success; errAny: some error
		after   []rec // on error: before
	}{
		{"new member", []rec{a1, p2}, 2, nil, nil, []rec{a2}},
		{"new member, several older epochs", []rec{r1, a2, p3}, 3, nil, nil, []rec{a3}},
		{"new member, newer pending stays", []rec{a1, p2, p3}, 2, nil, nil, []rec{a2, p3}},
		{"new member only", []rec{p2}, 2, nil, nil, []rec{a2}},
		{"new member, already active", []rec{r1, a2}, 2, nil, nil, []rec{a2}},
		{"new member, missing pending", []rec{a1}, 2, nil, store.ErrNotFound, nil},
		{"new member, retired at epoch", []rec{a1, r2}, 2, nil, store.ErrNotFound, nil},
		{"old-only member", []rec{a1}, 2, retiredRec(w, kt, 2), nil, []rec{m2}},
		{"old-only member, stale pending replaced", []rec{a1, p2}, 2, retiredRec(w, kt, 2), nil, []rec{m2}},
		{"old-only member, already active", []rec{a1, a2}, 2, retiredRec(w, kt, 2), store.ErrExists, nil},
		{"old-only member, already retired", []rec{a1, r2}, 2, retiredRec(w, kt, 2), store.ErrExists, nil},
		{"retired record of another epoch", []rec{a1}, 2, retiredRec(w, kt, 3), errAny, nil},
		{"retired record of another wallet", []rec{a1}, 2, retiredRec("w2", kt, 2), errAny, nil},
		{"retired record not retired", []rec{a1}, 2, &store.Record{Meta: meta(w, kt, 2), Sealed: []byte("x")}, errAny, nil},
		{"retired record without marker", []rec{a1}, 2, &store.Record{Meta: retiredRec(w, kt, 2).Meta}, errAny, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			put(t, s, w, kt, tc.before...)
			// Neighbours in key order: other wallets and key types stay.
			others := []rec{a1, p2}
			for _, o := range [][2]string{{"w", kt}, {"w10", kt}, {w, "ed25519"}, {w, "secp256k2"}} {
				put(t, s, o[0], o[1], others...)
			}
			err := s.SwitchEpoch(w, kt, tc.epoch, tc.retired)
			switch {
			case tc.err == nil && err != nil:
				t.Fatalf("SwitchEpoch: %v", err)
			case tc.err == errAny && err == nil, tc.err != nil && tc.err != errAny && !errors.Is(err, tc.err):
				t.Fatalf("SwitchEpoch: got %v, want %v", err, tc.err)
			}
			want := tc.after
			if tc.err != nil {
				want = tc.before // all or nothing
			}
			if got := records(t, s, w, kt); !slices.Equal(got, want) {
				t.Fatalf("records after: %v, want %v", got, want)
			}
			for _, o := range [][2]string{{"w", kt}, {"w10", kt}, {w, "ed25519"}, {w, "secp256k2"}} {
				if got := records(t, s, o[0], o[1]); !slices.Equal(got, others) {
					t.Fatalf("%s %s changed: %v", o[0], o[1], got)
				}
			}
		})
	}
}

var errAny = errors.New("any error")

func TestNewest(t *testing.T) {
	const kt = "secp256k1"
	tests := []struct {
		name      string
		recs      []rec
		wallet    string
		keyType   string
		newest    uint64 // 0: ErrNotFound
		status    string
		activeAt  uint64 // Share's epoch; 0: ErrNotFound
		activeVal string
	}{
		{"one active", []rec{{1, store.StatusActive, "s1"}}, "w1", kt, 1, store.StatusActive, 1, "s1"},
		{"pending above active", []rec{{1, store.StatusActive, "s1"}, {2, store.StatusPending, "s2"}}, "w1", kt, 2, store.StatusPending, 1, "s1"},
		{"retired newest", []rec{{3, store.StatusRetired, "m3"}}, "w1", kt, 3, store.StatusRetired, 0, ""},
		{"many epochs", []rec{{1, store.StatusRetired, "s1"}, {2, store.StatusActive, "s2"}, {256, store.StatusActive, "s256"}, {257, store.StatusPending, "s257"}, {300, store.StatusRetired, "m300"}}, "w1", kt, 300, store.StatusRetired, 256, "s256"},
		{"only pending", []rec{{4, store.StatusPending, "s4"}}, "w1", kt, 4, store.StatusPending, 0, ""},
		{"unknown wallet", nil, "w0", kt, 0, "", 0, ""},
		{"unknown wallet after the last key", nil, "zz", kt, 0, "", 0, ""},
		{"unknown key type", nil, "w1", "secp256k2", 0, "", 0, ""},
		{"prefix of another wallet", nil, "w", kt, 0, "", 0, ""},
		{"invalid id", nil, "w1\x00ed25519", kt, 0, "", 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			put(t, s, "w1", kt, tc.recs...)
			// Neighbours on both sides in key order.
			put(t, s, "a", kt, rec{9, store.StatusActive, "a9"})
			put(t, s, "w1", "ed25519", rec{9, store.StatusActive, "e9"})
			put(t, s, "w10", kt, rec{9, store.StatusActive, "x9"})
			m, err := s.Newest(tc.wallet, tc.keyType)
			if tc.newest == 0 {
				if err == nil {
					t.Fatalf("Newest: got %+v, want an error", m)
				}
				if !strings.ContainsRune(tc.wallet, 0) && !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("Newest: %v, want ErrNotFound", err)
				}
			} else if err != nil || m.WalletID != tc.wallet || m.KeyType != tc.keyType || m.Epoch != tc.newest || m.Status != tc.status {
				t.Fatalf("Newest: %+v %v, want epoch %d %s", m, err, tc.newest, tc.status)
			}
			m, v, err := s.Share(tc.wallet, tc.keyType)
			if tc.activeAt == 0 {
				if !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("Share: %+v %v, want ErrNotFound", m, err)
				}
			} else if err != nil || m.Epoch != tc.activeAt || string(v) != tc.activeVal {
				t.Fatalf("Share: epoch %d %q %v, want epoch %d %q", m.Epoch, v, err, tc.activeAt, tc.activeVal)
			}
		})
	}
}

func TestPutSharesAllOrNothing(t *testing.T) {
	s := openStore(t)
	put(t, s, "w1", "ed25519", rec{1, store.StatusActive, "s1"})
	err := s.PutShares(store.Record{Meta: meta("w2", "ed25519", 1), Sealed: []byte("s2")}, store.Record{Meta: meta("w1", "ed25519", 1), Sealed: []byte("x")})
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("got %v, want ErrExists", err)
	}
	if _, err := s.Newest("w2", "ed25519"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("w2 written although the batch failed: %v", err)
	}
	if err := s.PutShares(store.Record{Meta: meta("w2", "ed25519", 1), Sealed: []byte("s2")}, store.Record{Meta: meta("w3", "ed25519", 1), Sealed: []byte("s3")}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"w2", "w3"} {
		if m, _, err := s.Share(w, "ed25519"); err != nil || m.Status != store.StatusActive {
			t.Fatalf("%s: %+v %v", w, m, err)
		}
	}
}

// TestCrashDuringSwitchEpoch kills a process at random moments while it
// switches wallets' epochs, as reshares do (even wallets: a new member
// activating its pending share; odd ones: an old-only member keeping a
// retired record). Every wallet is then in its old state or its new one,
// never in between and never without a record.
func TestCrashDuringSwitchEpoch(t *testing.T) {
	if os.Getenv("STORE_CRASH_CHILD") == "1" {
		return
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "node.db")
	switched := 0
	for trial := 0; trial < 40; trial++ {
		ready := filepath.Join(dir, fmt.Sprint("ready-", trial))
		cmd := exec.Command(os.Args[0], "-test.run=^TestSwitchEpochCrashChild$")
		cmd.Env = append(os.Environ(), "STORE_CRASH_CHILD=1", "STORE_CRASH_PATH="+path, "STORE_CRASH_READY="+ready, fmt.Sprint("STORE_CRASH_TRIAL=", trial))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(30 * time.Second); ; {
			if _, err := os.Stat(ready); err == nil {
				break
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("trial %d: the child did not open the store", trial)
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(mrand.IntN(120)) * time.Millisecond) // kill at a random moment
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		s, err := store.Open(path, store.Options{})
		if err != nil {
			t.Fatalf("trial %d: store does not open after kill -9: %v", trial, err)
		}
		switched += checkSwitchTrial(t, s, trial)
		_ = s.Close()
	}
	if switched == 0 {
		t.Fatal("no epoch switch committed in any trial: the kill came too early every time")
	}
	t.Logf("%d epoch switches committed across the trials", switched)
}

// checkSwitchTrial checks one trial's wallets and returns how many switched.
func checkSwitchTrial(t *testing.T, s *store.Store, trial int) int {
	t.Helper()
	const kt = "secp256k1"
	ws, err := s.Wallets()
	if err != nil {
		t.Fatalf("trial %d: %v", trial, err)
	}
	last := -1
	for _, m := range ws {
		var tr, i int
		if _, err := fmt.Sscanf(m.WalletID, "s%d-w%d", &tr, &i); err == nil && tr == trial {
			last = max(last, i)
		}
	}
	switched := 0
	for i := 0; i <= last; i++ {
		w := fmt.Sprintf("s%d-w%d", trial, i)
		got := records(t, s, w, kt)
		for j := range got {
			got[j].sealed = strings.TrimRight(got[j].sealed, "\xab")
		}
		// The child sets up wallet i+1 before it switches wallet i.
		old := []rec{{1, store.StatusActive, "sealed-" + w + "-1"}, {2, store.StatusPending, "sealed-" + w + "-2"}}
		switchedTo := []rec{{2, store.StatusActive, "sealed-" + w + "-2"}}
		if i%2 == 1 {
			old = old[:1]
			switchedTo = []rec{{2, store.StatusRetired, "retired-" + w}}
		}
		ok := slices.Equal(got, switchedTo)
		if ok {
			switched++
		}
		switch {
		case i == last: // set up, maybe partly
			ok = slices.Equal(got, old) || slices.Equal(got, old[:1])
		case i == last-1: // being switched
			ok = ok || slices.Equal(got, old)
		}
		if !ok {
			t.Fatalf("trial %d: wallet %s (of %d) is %v: neither its old state %v nor its new one %v", trial, w, last, got, old, switchedTo)
		}
	}
	return switched
}

func TestSwitchEpochCrashChild(t *testing.T) {
	if os.Getenv("STORE_CRASH_CHILD") != "1" {
		t.Skip("child process of TestCrashDuringSwitchEpoch")
	}
	const kt = "secp256k1"
	s, err := store.Open(os.Getenv("STORE_CRASH_PATH"), store.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(os.Getenv("STORE_CRASH_READY"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	trial := os.Getenv("STORE_CRASH_TRIAL")
	big := bytes.Repeat([]byte{0xAB}, 16<<10)
	wallet := func(i int) string { return fmt.Sprintf("s%s-w%d", trial, i) }
	setUp := func(i int) {
		w := wallet(i)
		if err := s.PutShare(meta(w, kt, 1), append([]byte("sealed-"+w+"-1"), big...)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			return
		}
		m := meta(w, kt, 2)
		m.Status = store.StatusPending
		if err := s.PutShare(m, append([]byte("sealed-"+w+"-2"), big...)); err != nil {
			t.Fatal(err)
		}
	}
	setUp(0)
	for i := 0; ; i++ {
		setUp(i + 1)
		var retired *store.Record
		if i%2 == 1 {
			retired = retiredRec(wallet(i), kt, 2)
			retired.Sealed = append([]byte("retired-"+wallet(i)), big...)
		}
		if err := s.SwitchEpoch(wallet(i), kt, 2, retired); err != nil {
			t.Fatal(err)
		}
	}
}
