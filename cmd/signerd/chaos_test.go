package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/hsm"
	hsmuri "github.com/hwsigner/signer/hsm/uri"
	"github.com/hwsigner/signer/internal/secret"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
	"github.com/hwsigner/signer/signer/config"
	"github.com/hwsigner/signer/signer/store"
)

// chaosRun tracks every request of the run and every result delivered.
type chaosRun struct {
	mu        sync.Mutex
	sent      map[string]string            // request ID -> client
	sentAt    map[string]time.Time         // request ID -> first submission
	latency   map[string]time.Duration     // request ID -> submission to first decision
	results   map[string][]protocol.Result // request ID -> deliveries
	misrouted int
	retries   atomic.Int64 // submissions retried through the NATS outage
}

func (r *chaosRun) record(clientName string, res protocol.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sent[res.RequestID] != clientName || res.ClientID != clientName {
		r.misrouted++
		return
	}
	if _, ok := r.latency[res.RequestID]; !ok {
		r.latency[res.RequestID] = time.Since(r.sentAt[res.RequestID])
	}
	r.results[res.RequestID] = append(r.results[res.RequestID], res)
}

func (r *chaosRun) answered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.results)
}

// TestChaos: three `signerd run` processes on SoftHSM2 and a NATS server with
// file-backed JetStream; two clients send sign requests (EdDSA, every fifth
// ECDSA). During the run one node is killed with SIGKILL and restarted, and
// the NATS server is restarted. Every request must get exactly one terminal
// result (a signature or a coded error), none misrouted, and afterwards every
// share is intact and the restarted node signs again. make test runs 2x20
// requests; make chaos runs 2x150 (SIGNER_CHAOS_N).
func TestChaos(t *testing.T) {
	port := freePort(t)
	opts := &server.Options{Port: port, StoreDir: t.TempDir()}
	srv := natstest.RunServerWithOptions(t, opts)
	url := srv.ClientURL()
	pc := newProcClusterTimeout(t, url, "15s", 1)
	n1 := pc.nodes["node1"]
	runChaos(t, pc, url, chaosN(20),
		func() {
			t.Log("kill -9 node1")
			_ = n1.cmd.Process.Kill()
			_ = n1.cmd.Wait()
			time.Sleep(2 * time.Second)
			pc.start(n1)
		},
		func() {
			t.Log("restarting the NATS server")
			srv.Shutdown()
			srv.WaitForShutdown()
			time.Sleep(time.Second)
			srv = natstest.RunServerWithOptions(t, opts)
		})
}

// TestChaosNATSCluster: the same load against a three-server NATS cluster
// with JetStream replicas 3; one NATS server is killed mid-run and comes
// back later.
func TestChaosNATSCluster(t *testing.T) {
	servers, opts := natsCluster(t, 3)
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.ClientURL())
	}
	url := strings.Join(urls, ",")
	pc := newProcClusterTimeout(t, url, "15s", 3)
	runChaos(t, pc, url, chaosN(20),
		func() {
			t.Logf("killing NATS server %s", servers[1].Name())
			servers[1].Shutdown()
			servers[1].WaitForShutdown()
		},
		func() {
			t.Logf("bringing NATS server %s back", opts[1].ServerName)
			servers[1] = natstest.RunServerWithOptions(t, opts[1])
		})
}

func chaosN(def int) int {
	if n, err := strconv.Atoi(os.Getenv("SIGNER_CHAOS_N")); err == nil && n > 0 {
		return n
	}
	return def
}

// natsCluster starts n clustered NATS servers with JetStream and waits for
// a JetStream meta leader.
func natsCluster(t *testing.T, n int) ([]*server.Server, []*server.Options) {
	t.Helper()
	clusterPorts := make([]int, n)
	for i := range clusterPorts {
		clusterPorts[i] = freePort(t)
	}
	var routes []*neturl.URL
	for _, p := range clusterPorts {
		routes = append(routes, &neturl.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	servers := make([]*server.Server, n)
	opts := make([]*server.Options, n)
	for i := 0; i < n; i++ {
		opts[i] = &server.Options{
			ServerName: fmt.Sprintf("nats%d", i), Port: freePort(t), StoreDir: t.TempDir(),
			Cluster: server.ClusterOpts{Name: "signer-test", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:  routes,
		}
		servers[i] = natstest.RunServerWithOptions(t, opts[i])
	}
	waitUntil(t, 30*time.Second, "a JetStream meta leader", func() bool {
		nc, err := nats.Connect(servers[0].ClientURL())
		if err != nil {
			return false
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err == nil
	})
	return servers, opts
}

// runChaos starts the nodes, creates a wallet, has clients svcA and svcB
// send perClient sign requests each (EdDSA, every fifth ECDSA) while the
// faults run at a third and at two thirds of the submissions, and checks
// that every request got exactly one terminal result, none misrouted, that
// node1 signs afterwards and that every share still opens.
func runChaos(t *testing.T, pc *procCluster, url string, perClient int, atThird, atTwoThirds func()) {
	pc.dumpLogsOnFailure()
	for _, id := range pc.ids {
		pc.start(pc.nodes[id])
	}
	for _, id := range pc.ids {
		// READY=1 says the process is up; /readyz that it consumes requests.
		n := pc.nodes[id]
		pc.notes(n, "READY=1", time.Minute)
		waitUntil(t, 90*time.Second, id+" /readyz", func() bool { c, _ := get("http://" + n.http + "/readyz"); return c == 200 })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	reconnect := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	// A signer cut off mid-session (killed, or its NATS server restarted)
	// makes its peers re-run the request on another committee: a stall
	// (10 s) or a handshake timeout (10 s), then the re-run. A request that
	// still got no attested outcome is decided TIMEOUT by the client once it
	// held it for the request TTL; two minutes keeps that inside the test's
	// wait for the answers.
	pc.clientTTL = 2 * time.Minute
	clients := map[string]*client.Client{"svcA": pc.client(url, "svcA", reconnect...), "svcB": pc.client(url, "svcB", reconnect...)}
	if _, err := clients["svcA"].KeygenAndWait(ctx, client.KeygenParams{WalletID: "chaos"}); err != nil {
		t.Fatalf("keygen: %v", err)
	}
	run := &chaosRun{sent: map[string]string{}, sentAt: map[string]time.Time{}, latency: map[string]time.Duration{}, results: map[string][]protocol.Result{}}
	for name, cl := range clients {
		if err := cl.OnSignResult(func(res protocol.Result) { run.record(name, res) }); err != nil {
			t.Fatal(err)
		}
	}

	total := 2 * perClient
	var submitted atomic.Int64
	var wg sync.WaitGroup
	for name, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, 3)
			for i := 0; i < perClient; i++ {
				sem <- struct{}{}
				p := client.SignParams{WalletID: "chaos", KeyType: protocol.KeyTypeEd25519, TxID: fmt.Sprintf("%s-%d", name, i),
					Tx: []byte(fmt.Sprintf("chaos %s %d", name, i)), RequestID: fmt.Sprintf("%s-req-%04d", name, i)}
				if i%5 == 4 {
					d := sha256.Sum256(p.Tx)
					p.KeyType, p.Tx = protocol.KeyTypeSecp256k1, d[:]
				}
				run.mu.Lock()
				run.sent[p.RequestID] = name
				run.sentAt[p.RequestID] = time.Now()
				run.mu.Unlock()
				// Submit until JetStream has it (the same request ID makes a
				// retry idempotent), through the NATS restart.
				for {
					sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
					_, err := cl.Sign(sctx, p)
					scancel()
					if err == nil {
						break
					}
					if ctx.Err() != nil {
						t.Errorf("%s: %v", p.RequestID, err)
						return
					}
					run.retries.Add(1)
					time.Sleep(200 * time.Millisecond)
				}
				submitted.Add(1)
				// Pace: at most 3 of this client's requests unanswered.
				go func(id string) {
					for ctx.Err() == nil {
						run.mu.Lock()
						_, done := run.results[id]
						run.mu.Unlock()
						if done {
							break
						}
						time.Sleep(50 * time.Millisecond)
					}
					<-sem
				}(p.RequestID)
			}
		}()
	}

	// The faults, at a third and at two thirds of the submissions.
	waitSubmitted := func(n int) {
		for int(submitted.Load()) < n && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitSubmitted(total / 3)
	t.Logf("fault 1 after %d submissions", submitted.Load())
	atThird()
	waitSubmitted(2 * total / 3)
	t.Logf("fault 2 after %d submissions", submitted.Load())
	atTwoThirds()

	wg.Wait()
	deadline := time.Now().Add(5 * time.Minute)
	for run.answered() < total && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // room for a duplicate to show up

	run.mu.Lock()
	ok, lost, dup := 0, 0, 0
	codes := map[string]int{}
	for id := range run.sent {
		rs := run.results[id]
		switch {
		case len(rs) == 0:
			lost++
			t.Errorf("lost: %s", id)
		case len(rs) > 1:
			dup++
			t.Errorf("%s: %d results", id, len(rs))
		}
		if len(rs) > 0 {
			if rs[0].Succeeded() {
				ok++
			} else {
				codes[rs[0].ErrorCode]++
			}
		}
	}
	misrouted := run.misrouted
	// Which requests were re-run: those with a plan on MPC_ATTEMPTS.
	reran := chaosReran(t, ctx, url, run)
	var plainLat, rerunLat []time.Duration
	for id, d := range run.latency {
		if reran[id] {
			rerunLat = append(rerunLat, d)
		} else {
			plainLat = append(plainLat, d)
		}
	}
	run.mu.Unlock()
	var cs []string
	for c, n := range codes {
		cs = append(cs, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(cs)
	t.Logf("chaos: sent %d, succeeded %d (%.1f%%), failed %v, lost %d, misrouted %d, duplicated %d, re-run %d, submissions retried through the NATS outage %d",
		total, ok, 100*float64(ok)/float64(total), cs, lost, misrouted, dup, len(reran), run.retries.Load())
	t.Logf("chaos: decision latency median %s without a re-run (%d), %s with one (%d)",
		medianDur(plainLat), len(plainLat), medianDur(rerunLat), len(rerunLat))
	if lost != 0 || misrouted != 0 || dup != 0 {
		t.Fatalf("lost %d, misrouted %d, duplicated %d", lost, misrouted, dup)
	}
	if 100*ok < 99*total {
		t.Fatalf("succeeded %d of %d: below 99%%", ok, total)
	}

	// The restarted node caught up and signs: stop node0 so that node1 must
	// take part. Until the readiness TTL drops node0 a request may still
	// choose it: its peer then re-runs the request without it.
	_ = pc.nodes["node0"].cmd.Process.Kill()
	_ = pc.nodes["node0"].cmd.Wait()
	actx, acancel := context.WithTimeout(ctx, 90*time.Second)
	_, err := clients["svcB"].SignAndWait(actx, client.SignParams{WalletID: "chaos", KeyType: protocol.KeyTypeEd25519, TxID: "after", Tx: []byte("after")})
	acancel()
	if err != nil {
		t.Fatalf("sign with node1 and node2 after the chaos: %v", err)
	}

	// No share lost or damaged: every node's shares open from its token.
	for _, id := range pc.ids {
		_ = pc.nodes[id].cmd.Process.Kill()
		_ = pc.nodes[id].cmd.Wait()
	}
	for _, id := range pc.ids {
		checkShares(t, ctx, pc, id)
	}
}

func checkShares(t *testing.T, ctx context.Context, pc *procCluster, id string) {
	t.Helper()
	cfg, err := config.Parse(mustRead(t, pc.nodes[id].cfgPath))
	if err != nil {
		t.Fatal(err)
	}
	b, err := hsmuri.Open(ctx, cfg.KeyURI, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st, err := store.Open(cfg.StorePath, store.Options{})
	if err != nil {
		t.Fatalf("%s store after kill -9: %v", id, err)
	}
	defer st.Close()
	for _, kt := range []string{protocol.KeyTypeSecp256k1, protocol.KeyTypeEd25519} {
		meta, sealed, err := st.Share("chaos", kt)
		if err != nil {
			t.Fatalf("%s %s share: %v", id, kt, err)
		}
		bind := hsm.Binding{NodeID: id, Purpose: "share", WalletID: "chaos", KeyType: kt, Epoch: meta.Epoch}
		pt, err := hsm.NewSealer(b).Open(ctx, sealed, bind)
		if err != nil {
			t.Fatalf("%s %s share does not open: %v", id, kt, err)
		}
		secret.Zero(pt)
	}
}

// chaosReran returns the requests of run that have a re-run plan on
// MPC_ATTEMPTS (run.mu held).
func chaosReran(t *testing.T, ctx context.Context, url string, run *chaosRun) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Logf("chaos: re-runs not counted: %v", err)
		return out
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Logf("chaos: re-runs not counted: %v", err)
		return out
	}
	st, err := js.Stream(ctx, routing.AttemptStream)
	if err != nil {
		t.Logf("chaos: re-runs not counted: %v", err)
		return out
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Logf("chaos: re-runs not counted: %v", err)
		return out
	}
	for id, cl := range run.sent {
		if info.State.Subjects[routing.AttemptSubject(cl, id)] > 0 {
			out[id] = true
		}
	}
	return out
}

func medianDur(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(time.Millisecond)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
