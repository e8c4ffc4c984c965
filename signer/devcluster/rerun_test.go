package devcluster_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/attempt"
	"github.com/hwsigner/signer/signer/committee"
	"github.com/hwsigner/signer/signer/devcluster"
)

// signJob is one sign request of a test and what the client decided.
type signJob struct {
	p   client.SignParams
	res *protocol.Result
	err error
	dur time.Duration
}

// signAll sends the jobs concurrently and waits for every decision.
func signAll(ctx context.Context, cl *client.Client, jobs []*signJob) {
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			j.res, j.err = cl.SignAndWait(ctx, j.p)
			j.dur = time.Since(start)
		}()
	}
	wg.Wait()
}

// requestIDsChoosing returns n request IDs (with prefix) for which every
// node that sees all of ids ready chooses a signer set containing node.
func requestIDsChoosing(t *testing.T, prefix, node string, ids []string, n int) []string {
	t.Helper()
	ready := map[string]bool{}
	for _, id := range ids {
		ready[id] = true
	}
	var out []string
	for i := 0; len(out) < n; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		s, err := committee.Signers(id, ids, ready, 1)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(s, node) {
			out = append(out, id)
		}
	}
	return out
}

// TestSignedDespiteDeadSigner: a node crashes while sign requests run (its
// readiness entry stays until the TTL, so its peers go on choosing it), and
// more requests that choose it come right after. Every request is signed:
// the live signers re-run it on a committee without the dead node (a plan
// on MPC_ATTEMPTS), and the client decides one success per request.
func TestSignedDespiteDeadSigner(t *testing.T) {
	keys := newKeys(t)
	testhsm.Setup(t)
	c := startWithOptions(t, 3, 1, policyFor(t, keys), func(string) string { return testhsm.Token(t, "node") },
		func(o *devcluster.Options) { o.DrainTimeout = 500 * time.Millisecond })
	cl := newClient(t, c, keys["svcA"])
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	kg, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: "w-rerun"})
	if err != nil {
		t.Fatal(err)
	}
	pubs := map[string][]byte{protocol.KeyTypeEd25519: mustHex(t, kg.EdDSAPubKey), protocol.KeyTypeSecp256k1: mustHex(t, kg.ECDSAPubKey)}
	job := func(id string, i int) *signJob {
		p := client.SignParams{WalletID: "w-rerun", KeyType: protocol.KeyTypeEd25519, TxID: id, RequestID: id, Tx: []byte("rerun " + id)}
		if i%3 == 2 {
			d := sha256.Sum256(p.Tx)
			p.KeyType, p.Tx = protocol.KeyTypeSecp256k1, d[:]
		}
		return &signJob{p: p}
	}
	var during, after []*signJob
	for i, id := range requestIDsChoosing(t, "during", "node1", c.NodeIDs, 6) {
		during = append(during, job(id, i))
	}
	for i, id := range requestIDsChoosing(t, "after", "node1", c.NodeIDs, 6) {
		after = append(after, job(id, i))
	}

	// The first six run while node1 crashes: it has taken them all when it
	// goes (some may be finished, the others are cut mid-session).
	done := make(chan struct{})
	go func() { signAll(ctx, cl, during); close(done) }()
	n1 := c.Node("node1")
	waitFor(t, func() bool { return n1.Stats().Accepted >= int64(len(during)) })
	c.CrashNode("node1")
	t.Log("node1 crashed")
	signAll(ctx, cl, after)
	<-done

	var plain, rerun []time.Duration
	for _, j := range append(during, after...) {
		if j.err != nil {
			t.Errorf("%s: %v", j.p.RequestID, j.err)
			continue
		}
		if err := client.VerifySignResult(j.res, pubs[j.p.KeyType], j.p.Tx); err != nil {
			t.Errorf("%s: %v", j.p.RequestID, err)
		}
		if j.dur > 5*time.Second {
			rerun = append(rerun, j.dur)
		} else {
			plain = append(plain, j.dur)
		}
	}
	plans := c.Node("node0").Stats().Plans + c.Node("node2").Stats().Plans
	reruns := c.Node("node0").Stats().Reruns + c.Node("node2").Stats().Reruns
	t.Logf("12 signed; plans published %d, re-run attempts joined %d; latency median %s without a re-run (%d), %s with one (%d)",
		plans, reruns, medianOr0(plain), len(plain), medianOr0(rerun), len(rerun))
	if plans == 0 || reruns == 0 {
		t.Fatalf("no request was re-run (plans %d, re-runs %d): the requests chosen to include node1 were not exercised", plans, reruns)
	}
}

func medianOr0(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return median(ds).Round(time.Millisecond)
}

// TestForgedPlanIgnored: a rogue publisher with NATS credentials but no
// node identity key publishes, before a request arrives, a plan of its
// attempt 1 in node0's name with another signer set. Every node drops it
// (counted), and the request is signed by its first attempt's signers: no
// node re-runs it.
func TestForgedPlanIgnored(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	cl := newClient(t, c, keys["svcA"])
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kg, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: "w-forged-plan", KeyTypes: []string{protocol.KeyTypeEd25519}})
	if err != nil {
		t.Fatal(err)
	}
	id := requestIDsChoosing(t, "forged-plan", "node1", c.NodeIDs, 1)[0]
	rogueKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := attempt.Sign(ctx, rogueKey, attempt.Plan{ClientID: "svcA", RequestID: id, Attempt: 1,
		Signers: []string{"node0", "node2"}, Excluded: []string{"node1"}, Reason: "forged", From: "node0"})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, routing.AttemptSubject("svcA", id), raw); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		for _, n := range c.NodeIDs {
			if c.Node(n).Stats().Drops["plan_forged"] < 1 {
				return false
			}
		}
		return true
	})
	msg := []byte("forged plan")
	res, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "w-forged-plan", KeyType: protocol.KeyTypeEd25519, TxID: id, RequestID: id, Tx: msg})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.VerifySignResult(res, mustHex(t, kg.EdDSAPubKey), msg); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.NodeIDs {
		if s := c.Node(n).Stats(); s.Reruns != 0 || s.Plans != 0 {
			t.Fatalf("%s re-ran the request (plans %d, re-runs %d): it followed a forged plan", n, s.Plans, s.Reruns)
		}
	}
}

// TestRestartResumesAcceptedRequest: node1, a chosen signer, crashes while
// its session waits for the other chosen signer (node2, crashed too, still
// in the readiness views), so no node planned a re-run and node0 was not
// chosen. When node1 restarts it finds the request journalled "accepted",
// reads it back from MPC_REQUESTS and runs it again at once (not when the
// server redelivers it, 2 minutes later): its attempt finds node2 silent,
// plans a re-run without it, and node0 and node1 sign.
func TestRestartResumesAcceptedRequest(t *testing.T) {
	keys := newKeys(t)
	testhsm.Setup(t)
	c := startWithOptions(t, 3, 1, policyFor(t, keys), func(string) string { return testhsm.Token(t, "node") },
		func(o *devcluster.Options) { o.DrainTimeout = 500 * time.Millisecond })
	cl := newClient(t, c, keys["svcA"])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kg, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: "w-resume", KeyTypes: []string{protocol.KeyTypeEd25519}})
	if err != nil {
		t.Fatal(err)
	}
	// A request whose first signers are node1 and node2.
	var id string
	all := map[string]bool{"node0": true, "node1": true, "node2": true}
	for i := 0; id == ""; i++ {
		cand := fmt.Sprintf("resume-%d", i)
		if s, _ := committee.Signers(cand, c.NodeIDs, all, 1); slices.Equal(s, []string{"node1", "node2"}) {
			id = cand
		}
	}
	decided := make(chan attest.Decision, 4)
	if err := cl.OnSignDecision(func(d attest.Decision) {
		if d.Result != nil && d.Result.RequestID == id {
			decided <- d
		}
	}); err != nil {
		t.Fatal(err)
	}
	c.CrashNode("node2")
	n1 := c.Node("node1")
	before := n1.Stats().Accepted
	msg := []byte("resumed after a restart")
	if _, err := cl.Sign(ctx, client.SignParams{WalletID: "w-resume", KeyType: protocol.KeyTypeEd25519, TxID: id, RequestID: id, Tx: msg}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return n1.Stats().Accepted > before })
	c.CrashNode("node1") // mid-handshake: node2 never answers
	restarted := time.Now()
	if err := c.RestartNode(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	var d attest.Decision
	select {
	case d = <-decided:
	case <-time.After(60 * time.Second):
		t.Fatal("request not decided within 60 s of node1's restart (the server redelivers it after 2 min)")
	}
	if d.Err != nil {
		t.Fatalf("decided %v", d.Err)
	}
	if err := client.VerifySignResult(d.Result, mustHex(t, kg.EdDSAPubKey), msg); err != nil {
		t.Fatal(err)
	}
	t.Logf("signed %s after node1's restart", time.Since(restarted).Round(time.Millisecond))
	if s := c.Node("node1").Stats(); s.Plans == 0 {
		t.Fatalf("node1 resumed without planning the re-run without node2 (stats %+v)", s)
	}
}
