package devcluster_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/signer/ceremony"
)

// TestCompareRawVsNode is `make bench`'s side-by-side measurement (it runs
// only with SIGNER_BENCH=1). For 2-of-3 ECDSA signing, EdDSA signing and
// keygen (pre-params ready), at concurrency 1 and 4, it alternates batches
// of the raw in-process ceremony (tss-lib parties over Go channels: no NATS,
// no HSM, no store) and of the full node path (Go client, signed request on
// JetStream, three nodes on SoftHSM2 tokens, share unsealed, round messages
// signed and encrypted over NATS, signed result back), and prints for each
// the median latency, the throughput and node/raw ratios. Alternating keeps
// both sides under the same machine noise. SIGNER_BENCH_BATCHES sets the
// number of batches per side (default 3), SIGNER_BENCH_OPS picks operations.
func TestCompareRawVsNode(t *testing.T) {
	if os.Getenv("SIGNER_BENCH") != "1" {
		t.Skip("benchmark: run with SIGNER_BENCH=1 (make bench)")
	}
	batches := envInt("SIGNER_BENCH_BATCHES", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()

	pre := fixtures.PreParams(t)
	ids := []string{"node0", "node1", "node2"}
	raw := newRawCluster(t, ctx, ids, pre)

	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	cl := newClient(t, c, keys["svcA"])
	if _, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: "bench"}); err != nil {
		t.Fatal(err)
	}

	var seq atomic.Int64
	next := func() int64 { return seq.Add(1) }
	digest := sha256.Sum256([]byte("bench"))
	msg := []byte("bench message")
	type op struct {
		name    string
		perSlot int // operations per concurrent slot in a batch
		raw     func() error
		node    func() error
	}
	ops := []op{
		{"sign-ecdsa", 4,
			func() error { return raw.signECDSA(ctx, fmt.Sprint("rs-", next()), digest[:]) },
			func() error {
				_, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "bench", KeyType: "secp256k1", TxID: fmt.Sprint("tx-", next()), Tx: digest[:]})
				return err
			}},
		{"sign-eddsa", 8,
			func() error { return raw.signEdDSA(ctx, fmt.Sprint("re-", next()), msg) },
			func() error {
				_, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "bench", KeyType: "ed25519", TxID: fmt.Sprint("tx-", next()), Tx: msg})
				return err
			}},
		{"keygen", 1,
			func() error { return raw.keygen(ctx, fmt.Sprint("rk-", next())) },
			func() error {
				_, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: fmt.Sprint("w-", next())})
				return err
			}},
	}
	fmt.Printf("\n%-11s %4s | %12s %12s %7s | %10s %10s %7s\n", "op", "conc", "raw p50", "node p50", "ratio", "raw ops/s", "node ops/s", "ratio")
	only := os.Getenv("SIGNER_BENCH_OPS") // e.g. "sign-ecdsa,sign-eddsa"; empty: all
	for _, o := range ops {
		if only != "" && !slices.Contains(strings.Split(only, ","), o.name) {
			continue
		}
		for _, conc := range []int{1, 4} {
			var rawLat, nodeLat []time.Duration
			var rawTput, nodeTput []float64
			for b := 0; b < batches; b++ {
				l, tp := batch(t, conc, o.perSlot, o.raw)
				rawLat, rawTput = append(rawLat, l...), append(rawTput, tp)
				l, tp = batch(t, conc, o.perSlot, o.node)
				nodeLat, nodeTput = append(nodeLat, l...), append(nodeTput, tp)
			}
			rl, nl := median(rawLat), median(nodeLat)
			rt, nt := medianF(rawTput), medianF(nodeTput)
			fmt.Printf("%-11s %4d | %12s %12s %6.2fx | %10.2f %10.2f %6.2fx\n", o.name, conc,
				rl.Round(time.Millisecond), nl.Round(time.Millisecond), float64(nl)/float64(rl), rt, nt, nt/rt)
		}
	}
}

// batch runs conc slots of n operations each and returns every latency and
// the batch throughput (operations per second of wall time).
func batch(t *testing.T, conc, n int, f func() error) ([]time.Duration, float64) {
	t.Helper()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	errs := make(chan error, conc*n)
	begin := time.Now()
	for s := 0; s < conc; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				t0 := time.Now()
				if err := f(); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(t0))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return lat, float64(conc*n) / time.Since(begin).Seconds()
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianF(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func envInt(name string, def int) int {
	var n int
	if _, err := fmt.Sscan(os.Getenv(name), &n); err == nil && n > 0 {
		return n
	}
	return def
}

// rawCluster runs the ceremonies in process: parties over ceremony.MemNetwork
// (Go channels), keys in memory.
type rawCluster struct {
	ids   []string
	pre   []*ecdsakeygen.LocalPreParams
	ecdsa []*ecdsakeygen.LocalPartySaveData
	eddsa []*eddsakeygen.LocalPartySaveData
}

func newRawCluster(t *testing.T, ctx context.Context, ids []string, pre []*ecdsakeygen.LocalPreParams) *rawCluster {
	t.Helper()
	r := &rawCluster{ids: ids, pre: pre, ecdsa: make([]*ecdsakeygen.LocalPartySaveData, len(ids)), eddsa: make([]*eddsakeygen.LocalPartySaveData, len(ids))}
	net := ceremony.NewMemNetwork(ids)
	err := parallel(ids, func(i int, id string) (err error) {
		r.ecdsa[i], err = ceremony.KeygenECDSA(ctx, ceremony.Session{ID: "raw-kg", Self: id, Parties: ids, Threshold: 1}, pre[i%len(pre)], net.Transport(id))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	net = ceremony.NewMemNetwork(ids)
	err = parallel(ids, func(i int, id string) (err error) {
		r.eddsa[i], err = ceremony.KeygenEdDSA(ctx, ceremony.Session{ID: "raw-ekg", Self: id, Parties: ids, Threshold: 1}, net.Transport(id))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// parallel runs f for every party and returns the first error.
func parallel(ids []string, f func(i int, id string) error) error {
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i, id)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *rawCluster) signECDSA(ctx context.Context, sid string, digest []byte) error {
	signers := r.ids[:2]
	net := ceremony.NewMemNetwork(signers)
	return parallel(signers, func(i int, id string) error {
		_, err := ceremony.SignECDSA(ctx, ceremony.Session{ID: sid, Self: id, Parties: signers, Threshold: 1}, *r.ecdsa[i], digest, nil, net.Transport(id))
		return err
	})
}

func (r *rawCluster) signEdDSA(ctx context.Context, sid string, msg []byte) error {
	signers := r.ids[:2]
	net := ceremony.NewMemNetwork(signers)
	return parallel(signers, func(i int, id string) error {
		_, err := ceremony.SignEdDSA(ctx, ceremony.Session{ID: sid, Self: id, Parties: signers, Threshold: 1}, *r.eddsa[i], msg, net.Transport(id))
		return err
	})
}

// keygen runs both key types, as a node keygen does.
func (r *rawCluster) keygen(ctx context.Context, sid string) error {
	net := ceremony.NewMemNetwork(r.ids)
	err := parallel(r.ids, func(i int, id string) error {
		_, err := ceremony.KeygenECDSA(ctx, ceremony.Session{ID: sid + "-ec", Self: id, Parties: r.ids, Threshold: 1}, r.pre[i%len(r.pre)], net.Transport(id))
		return err
	})
	if err != nil {
		return err
	}
	net = ceremony.NewMemNetwork(r.ids)
	return parallel(r.ids, func(i int, id string) error {
		_, err := ceremony.KeygenEdDSA(ctx, ceremony.Session{ID: sid + "-ed", Self: id, Parties: r.ids, Threshold: 1}, net.Transport(id))
		return err
	})
}
