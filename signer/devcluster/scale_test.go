package devcluster_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/internal/secret"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/signer/devcluster"
	"github.com/hwsigner/signer/signer/store"
)

// TestScaleWallets is `make bench`'s store-scale measurement (it runs only
// with SIGNER_BENCH=1). Two 2-of-3 clusters on SoftHSM2 each create one
// wallet by keygen. Signing (ECDSA and EdDSA, one request at a time)
// alternates batches between the two clusters, first while both stores hold
// that one wallet (the two clusters' own difference), then after every node
// store of the second cluster was filled up to SIGNER_SCALE_WALLETS wallets
// (default 10,000). The extra wallets are real records of the real size:
// each node, stopped, opens its real share of each key type with its own
// sealer and seals that plaintext again under every new wallet's binding,
// written with store.PutShares. The extra wallets cannot sign (their key
// material is the real wallet's). It prints the median latencies and their
// ratios, the store file bytes per wallet, the Go heap growth per wallet per
// node (runtime.MemStats after GC, before and after filling), and the time
// of `signerctl status` and `signerctl store inspect` at one wallet and at
// the filled size.
func TestScaleWallets(t *testing.T) {
	if os.Getenv("SIGNER_BENCH") != "1" {
		t.Skip("benchmark: run with SIGNER_BENCH=1 (make bench)")
	}
	wallets := envInt("SIGNER_SCALE_WALLETS", 10000)
	batches := envInt("SIGNER_BENCH_BATCHES", 12)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	ctl := buildSignerctl(t)

	testhsm.Setup(t)
	keys := newKeys(t)
	small := startWith(t, 3, 1, keys, func(string) string { return testhsm.Token(t, "small") })
	bigURIs := map[string]string{}
	big := startWith(t, 3, 1, keys, func(id string) string {
		bigURIs[id] = testhsm.Token(t, "big-"+id)
		return bigURIs[id]
	})
	clSmall, clBig := newClient(t, small, keys["svcA"]), newClient(t, big, keys["svcA"])
	for _, cl := range []*client.Client{clSmall, clBig} {
		if _, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: "bench"}); err != nil {
			t.Fatal(err)
		}
	}
	var seq atomic.Int64
	digest := sha256.Sum256([]byte("scale"))
	signer := func(cl *client.Client, kt string) func() error {
		tx := []byte("scale message")
		if kt == protocol.KeyTypeSecp256k1 {
			tx = digest[:]
		}
		return func() error {
			_, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "bench", KeyType: kt, TxID: fmt.Sprint("tx-", seq.Add(1)), Tx: tx})
			return err
		}
	}
	ops := []struct {
		name, kt string
		perBatch int
	}{{"sign-ecdsa", protocol.KeyTypeSecp256k1, 2}, {"sign-eddsa", protocol.KeyTypeEd25519, 5}}
	// compare alternates batches of one operation on the small and the big
	// cluster and returns both medians.
	compare := func(kt string, perBatch int) (time.Duration, time.Duration) {
		var s, b []time.Duration
		for i := 0; i < batches; i++ {
			l, _ := batch(t, 1, perBatch, signer(clSmall, kt))
			s = append(s, l...)
			l, _ = batch(t, 1, perBatch, signer(clBig, kt))
			b = append(b, l...)
		}
		return median(s), median(b)
	}
	warmUp := func() {
		for _, o := range ops {
			batch(t, 1, 1, signer(clSmall, o.kt))
			batch(t, 1, 1, signer(clBig, o.kt))
		}
	}
	warmUp()
	type lat struct{ small, big time.Duration }
	before := map[string]lat{}
	for _, o := range ops {
		s, b := compare(o.kt, o.perBatch)
		before[o.name] = lat{s, b}
	}
	statusSmall := timeCmd(t, ctl, "--cluster", clusterFile(t, small), "status")
	statusBig1 := timeCmd(t, ctl, "--cluster", clusterFile(t, big), "status")

	file0 := fileSize(t, big.StorePath("node0"))
	heap0 := heapAfterGC()
	fillStart := time.Now()
	var used0, used1 int64 // node0's store pages in use, in bytes
	for _, id := range big.NodeIDs {
		u0, u1 := fillStore(t, ctx, big, id, bigURIs[id], wallets-1)
		if id == "node0" {
			used0, used1 = u0, u1
		}
	}
	fillTime := time.Since(fillStart)
	warmUp()
	heap1 := heapAfterGC()
	file1 := fileSize(t, big.StorePath("node0"))

	after := map[string]lat{}
	for _, o := range ops {
		s, b := compare(o.kt, o.perBatch)
		after[o.name] = lat{s, b}
	}
	statusBig := timeCmd(t, ctl, "--cluster", clusterFile(t, big), "status")
	small.StopNode("node0")
	big.StopNode("node0")
	inspectSmall := timeCmd(t, ctl, "store", "inspect", "--store", small.StorePath("node0"))
	inspectBig := timeCmd(t, ctl, "store", "inspect", "--store", big.StorePath("node0"))
	inspectBigJSON := timeCmd(t, ctl, "--json", "store", "inspect", "--store", big.StorePath("node0"))
	if st, err := store.Open(big.StorePath("node0"), store.Options{ReadOnly: true}); err != nil {
		t.Fatal(err)
	} else {
		s, err := st.Stats()
		_ = st.Close()
		if err != nil || s.Shares != 2*wallets {
			t.Fatalf("filled store holds %d share records (%v), want %d", s.Shares, err, 2*wallets)
		}
	}

	ms := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	fmt.Printf("\nstore scale: 2-of-3 on SoftHSM2, 1 wallet vs %d wallets in every node's store, %d alternating batches, one request at a time\n", wallets, batches)
	fmt.Printf("%-11s %-14s | %10s %10s %7s\n", "op", "stores", "1 wallet", "big", "ratio")
	for _, o := range ops {
		b, a := before[o.name], after[o.name]
		fmt.Printf("%-11s %-14s | %10s %10s %6.3fx\n", o.name, "1 vs 1", ms(b.small), ms(b.big), float64(b.big)/float64(b.small))
		fmt.Printf("%-11s %-14s | %10s %10s %6.3fx\n", o.name, fmt.Sprint("1 vs ", wallets), ms(a.small), ms(a.big), float64(a.big)/float64(a.small))
	}
	n := float64(wallets - 1)
	fmt.Printf("fill: %d wallets x 2 key types x 3 nodes re-sealed and stored in %s\n", wallets-1, fillTime.Round(time.Second))
	fmt.Printf("store (node0): pages in use %d bytes at 1 wallet, %d at %d: %.0f bytes per wallet (both key types); file %d -> %d bytes\n",
		used0, used1, wallets, float64(used1-used0)/n, file0, file1)
	fmt.Printf("Go heap (3 nodes, 2 clusters, after GC): %d -> %d bytes: %.1f bytes per wallet per node\n", heap0, heap1, float64(int64(heap1)-int64(heap0))/n/3)
	fmt.Printf("signerctl status: %s (1 wallet), %s (big cluster at 1 wallet), %s (big cluster at %d)\n", ms(statusSmall), ms(statusBig1), ms(statusBig), wallets)
	fmt.Printf("signerctl store inspect: %s (1 wallet), %s (%d wallets, table), %s (%d wallets, --json)\n", ms(inspectSmall), ms(inspectBig), wallets, ms(inspectBigJSON), wallets)
}

// fillStore stops a node and adds n wallets to its store: the node's real
// shares of wallet "bench", opened with its own sealer and sealed again under
// each new wallet's binding (the binding the node uses for shares), then
// restarts the node. It returns the store's size in pages in use (bytes)
// before and after.
func fillStore(t *testing.T, ctx context.Context, c *devcluster.Cluster, id, uri string, n int) (before, after int64) {
	t.Helper()
	c.StopNode(id)
	if err := c.DetachHardware(id); err != nil {
		t.Fatal(err)
	}
	withHardware(t, ctx, uri, c.StorePath(id), func(b hsm.Backend, st *store.Store) {
		before = storeSize(t, st)
		sealer := hsm.NewSealer(b)
		bind := func(wallet, kt string, epoch uint64) hsm.Binding {
			return hsm.Binding{NodeID: id, Purpose: "share", WalletID: wallet, KeyType: kt, Epoch: epoch}
		}
		type real struct {
			meta  store.WalletMeta
			plain []byte
		}
		var reals []real
		for _, kt := range []string{protocol.KeyTypeSecp256k1, protocol.KeyTypeEd25519} {
			m, sealed, err := st.Share("bench", kt)
			if err != nil {
				t.Fatal(err)
			}
			pt, err := sealer.Open(ctx, sealed, bind(m.WalletID, kt, m.Epoch))
			if err != nil {
				t.Fatalf("%s: open its %s share: %v", id, kt, err)
			}
			defer secret.Zero(pt)
			reals = append(reals, real{m, pt})
		}
		const perTx = 200 // wallets per transaction
		var recs []store.Record
		for i := 0; i < n; i++ {
			wallet := randomWalletID(t)
			for _, r := range reals {
				sealed, err := sealer.Seal(ctx, r.plain, bind(wallet, r.meta.KeyType, r.meta.Epoch))
				if err != nil {
					t.Fatal(err)
				}
				m := r.meta
				m.WalletID, m.CreatedAt = wallet, time.Now().UTC()
				recs = append(recs, store.Record{Meta: m, Sealed: sealed})
			}
			if len(recs) >= 2*perTx || i == n-1 {
				if err := st.PutShares(recs...); err != nil {
					t.Fatal(err)
				}
				recs = recs[:0]
			}
		}
		after = storeSize(t, st)
	})
	if err := c.RestartNode(ctx, id); err != nil {
		t.Fatal(err)
	}
	return before, after
}

func storeSize(t *testing.T, st *store.Store) int64 {
	t.Helper()
	s, err := st.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s.FileSize
}

// randomWalletID is a 32-hex-digit ID: the new wallets spread over the key
// space on both sides of "bench", as real wallet IDs would.
func randomWalletID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// buildSignerctl builds the signerctl command into a temporary directory.
func buildSignerctl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "signerctl")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/hwsigner/signer/cmd/signerctl").CombinedOutput()
	if err != nil {
		t.Fatalf("build signerctl: %v\n%s", err, out)
	}
	return bin
}

// clusterFile writes the cluster file signerctl reads: NATS URL and the
// nodes' identity keys.
func clusterFile(t *testing.T, c *devcluster.Cluster) string {
	t.Helper()
	peers := map[string]string{}
	for id, k := range c.NodeKeys {
		pem, err := keyfile.MarshalPublicKeyPEM(k)
		if err != nil {
			t.Fatal(err)
		}
		peers[id] = pem
	}
	b, err := json.Marshal(map[string]any{"nats_url": c.URL, "peers": peers})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cluster.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// timeCmd runs signerctl with args three times (output discarded) and
// returns the median wall time.
func timeCmd(t *testing.T, bin string, args ...string) time.Duration {
	t.Helper()
	var d []time.Duration
	for i := 0; i < 3; i++ {
		cmd := exec.Command(bin, args...)
		t0 := time.Now()
		if out, err := cmd.Output(); err != nil {
			t.Fatalf("signerctl %v: %v\n%s", args, err, out)
		}
		d = append(d, time.Since(t0))
	}
	return median(d)
}
