package devcluster_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/policy"
)

// TestLoad: four clients send sign requests (EdDSA, every tenth ECDSA), each
// with 4 in flight, to a 2-of-3 cluster. It reports the success rate and
// p50/p95/p99, and checks that nothing is left behind once the load is
// over: the goroutines return to their level before the load and every
// node holds as many NATS subscriptions as before (sessions subscribe while
// they run). make test sends 4 x 25; make load sends 4 x 250 (1,000).
func TestLoad(t *testing.T) {
	perClient := envInt("SIGNER_LOAD_N", 25)
	_, edA, _ := ed25519.GenerateKey(rand.Reader)
	_, edB, _ := ed25519.GenerateKey(rand.Reader)
	_, edC, _ := ed25519.GenerateKey(rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keys := map[string]clientKey{
		"svcA": {edA, []string{"svcA"}}, "svcB": {edB, []string{"svcB"}},
		"svcC": {edC, []string{"svcC"}}, "svcD": {p256, []string{"svcD"}},
	}
	// svcA creates the wallet; the policy grants it to the other three
	// (a wallet serves only its owner unless the policy says otherwise).
	shared := []policy.WalletGrant{{Owner: "svcA", Wallets: []string{"load"}}}
	testhsm.Setup(t)
	c := startWithPolicy(t, 3, 1, policyWithGrants(t, keys, map[string][]policy.WalletGrant{"svcB": shared, "svcC": shared, "svcD": shared}),
		func(string) string { return testhsm.Token(t, "node") })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	clients := map[string]*client.Client{}
	for name := range keys {
		clients[name] = newClient(t, c, keys[name])
	}
	if _, err := clients["svcA"].KeygenAndWait(ctx, client.KeygenParams{WalletID: "load"}); err != nil {
		t.Fatal(err)
	}
	// Warm up: every client signs once with each key type (its result
	// consumer and subscriptions are set up on first use), then the baseline.
	d := sha256.Sum256([]byte("warm up"))
	for name, cl := range clients {
		for _, p := range []client.SignParams{{WalletID: "load", KeyType: "ed25519", TxID: name + "-w1", Tx: []byte("w")}, {WalletID: "load", KeyType: "secp256k1", TxID: name + "-w2", Tx: d[:]}} {
			if _, err := cl.SignAndWait(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	settle := func() (int, map[string]int, uint64) {
		time.Sleep(12 * time.Second) // observers of unchosen nodes live 10 s
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		subs := map[string]int{}
		for _, id := range c.NodeIDs {
			subs[id] = c.Subscriptions(id)
		}
		return runtime.NumGoroutine(), subs, ms.HeapAlloc
	}
	g0, subs0, heap0 := settle()

	var mu sync.Mutex
	var lat []time.Duration
	codes := map[string]int{}
	var wg sync.WaitGroup
	begin := time.Now()
	for name, cl := range clients {
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < perClient; i += 4 {
					p := client.SignParams{WalletID: "load", KeyType: "ed25519", TxID: fmt.Sprintf("%s-%d", name, i), Tx: []byte(fmt.Sprintf("load %s %d", name, i))}
					if i%10 == 9 {
						h := sha256.Sum256(p.Tx)
						p.KeyType, p.Tx = "secp256k1", h[:]
					}
					t0 := time.Now()
					_, err := cl.SignAndWait(ctx, p)
					mu.Lock()
					if err != nil {
						var re *client.ResultError
						if errors.As(err, &re) {
							codes[re.Code]++
						} else {
							codes["CLIENT:"+err.Error()]++
						}
					} else {
						lat = append(lat, time.Since(t0))
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	wall := time.Since(begin)
	total := 4 * perClient
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p/100*float64(len(lat))))] }
	g1, subs1, heap1 := settle()
	t.Logf("load: %d sign requests from 4 clients (4 in flight each) in %s: %d succeeded (%.1f%%), failed %v; %.1f signatures/s; p50 %s, p95 %s, p99 %s",
		total, wall.Round(time.Millisecond), len(lat), 100*float64(len(lat))/float64(total), codes, float64(len(lat))/wall.Seconds(),
		pct(50).Round(time.Millisecond), pct(95).Round(time.Millisecond), pct(99).Round(time.Millisecond))
	t.Logf("left behind: goroutines %d -> %d, node subscriptions %v -> %v, heap %.1f MiB -> %.1f MiB",
		g0, g1, subs0, subs1, float64(heap0)/(1<<20), float64(heap1)/(1<<20))
	if len(lat) != total {
		t.Fatalf("%d of %d succeeded: %v", len(lat), total, codes)
	}
	if g1 > g0+10 {
		t.Fatalf("goroutines grew from %d to %d after the load", g0, g1)
	}
	for id, n := range subs1 {
		if n != subs0[id] {
			t.Fatalf("%s holds %d NATS subscriptions after the load, %d before", id, n, subs0[id])
		}
	}
}
