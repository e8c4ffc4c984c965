//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
	"github.com/hwsigner/signer/signer/committee"
)

// TestSignTimeoutFrozenSigners: a TIMEOUT end to end. Three `signerd run`
// processes (2-of-3) create a wallet and sign; then node1 and node2 are
// frozen with SIGSTOP, so that no two live nodes exist, and three sign
// requests with a 20 s request TTL go out at once:
//
//   - A, for svcA's callback, whose chosen signers are node0 and a frozen
//     node: node0 alone answers (an error, after its handshake timeout),
//     which decides nothing; the client decides it TIMEOUT at its expiry
//     plus the grace, once, with node0's signed result as the evidence;
//   - B, a SignAndWait of svcB until B's expiry, whose chosen signers are
//     both frozen: TIMEOUT at the deadline, the evidence what was seen
//     (nothing);
//   - C, for svcA's callback, whose chosen signers are both frozen: no node
//     answers while they are frozen; the client decides it TIMEOUT ("no
//     node answered") at its expiry plus the grace.
//
// Then both are resumed (SIGCONT): they find A, B and C expired and answer
// EXPIRED; for A the client acks those as results of a request already
// decided (no second decision, A is never a success), C is decided once.
// Once every node is ready again a new signature is made and verifies under
// the wallet key. No node is left stopped (SIGCONT in a cleanup).
func TestSignTimeoutFrozenSigners(t *testing.T) {
	const (
		ttl    = 20 * time.Second
		margin = time.Second // clock granularity between the test and the client's keeper
		wallet = "chaos"     // the policy grants svcB svcA's wallet "chaos"
	)
	t0 := time.Now()
	srv := natstest.RunServer(t)
	url := srv.ClientURL()
	pc := newProcCluster(t, url) // sign_timeout 60 s: longer than the 10 s handshake timeout
	pc.dumpLogsOnFailure()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, id := range pc.ids {
		pc.start(pc.nodes[id])
	}
	for _, id := range pc.ids {
		pc.notes(pc.nodes[id], "READY=1", time.Minute)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	// READY=1 comes once the process is up: the nodes create the readiness
	// bucket when their setup reaches NATS.
	var kv jetstream.KeyValue
	for deadline := time.Now().Add(time.Minute); ; {
		if kv, err = js.KeyValue(ctx, routing.ReadyBucket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readiness bucket: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitClusterReady(t, pc, kv, time.Minute)

	nodeKeys := nodeKeysOf(t, pc)
	logA := &clientLog{}
	clA := newTimeoutClient(t, pc, url, "svcA", ttl, logA)
	clB := newTimeoutClient(t, pc, url, "svcB", ttl, &clientLog{})
	tapA, tapB := tapSignResults(t, url, "svcA", nodeKeys), tapSignResults(t, url, "svcB", nodeKeys)
	decisions := &decisionLog{at: map[string][]timedDecision{}}
	if err := clA.OnSignDecision(decisions.add); err != nil {
		t.Fatal(err)
	}

	kres, err := clA.KeygenAndWait(ctx, client.KeygenParams{WalletID: wallet, KeyTypes: []string{protocol.KeyTypeSecp256k1}})
	if err != nil {
		t.Fatalf("keygen: %v", err)
	}
	ecPub, _ := hex.DecodeString(kres.ECDSAPubKey)
	signOK := func(what string, cl *client.Client, tx string) {
		t.Helper()
		digest := sha256.Sum256([]byte(tx))
		res, err := cl.SignAndWait(ctx, client.SignParams{WalletID: wallet, KeyType: protocol.KeyTypeSecp256k1, TxID: tx, Tx: digest[:]})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		r, _ := hex.DecodeString(res.R)
		s, _ := hex.DecodeString(res.S)
		if err := client.VerifyECDSA(ecPub, digest[:], r, s, res.SignatureRecovery); err != nil {
			t.Fatalf("%s: signature does not verify under the wallet key: %v", what, err)
		}
	}
	signOK("sign before the freeze", clA, "before")
	tSetup := time.Since(t0)

	// Freeze node1 and node2. The cleanup (registered first, so it runs
	// before the processes are killed) resumes them whatever happens.
	frozen := []*runNode{pc.nodes["node1"], pc.nodes["node2"]}
	t.Cleanup(func() {
		for _, n := range frozen {
			_ = syscall.Kill(n.cmd.Process.Pid, syscall.SIGCONT)
		}
	})
	for _, n := range frozen {
		if err := syscall.Kill(n.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP %s: %v", n.id, err)
		}
	}
	for _, n := range frozen {
		waitUntil(t, 10*time.Second, n.id+" stopped", func() bool { return procState(n.cmd.Process.Pid) == "T" })
	}
	tFreeze := time.Now()

	// Request IDs whose signers (as every node chooses them while all three
	// are in its readiness view) are node0 and a frozen node (A), or both
	// frozen nodes (B, C).
	all := map[string]bool{"node0": true, "node1": true, "node2": true}
	pick := func(prefix string, want func([]string) bool) string {
		for i := 0; ; i++ {
			id := fmt.Sprintf("%s-%d", prefix, i)
			if s, err := committee.Signers(id, pc.ids, all, 1); err == nil && want(s) {
				return id
			}
		}
	}
	withNode0 := func(s []string) bool { return slices.Contains(s, "node0") }
	onlyFrozen := func(s []string) bool { return !slices.Contains(s, "node0") }
	reqA, reqB, reqC := pick("timeout-a", withNode0), pick("timeout-b", onlyFrozen), pick("timeout-c", onlyFrozen)
	params := func(id string) client.SignParams {
		d := sha256.Sum256([]byte("tx " + id))
		return client.SignParams{WalletID: wallet, KeyType: protocol.KeyTypeSecp256k1, TxID: "tx-" + id, Tx: d[:], RequestID: id}
	}
	sentAt := time.Now() // before the client stamps created_at: expires_at >= sentAt + ttl
	for _, id := range []string{reqA, reqC} {
		if _, err := clA.Sign(ctx, params(id)); err != nil {
			t.Fatalf("sign %s: %v", id, err)
		}
	}
	type waitOut struct {
		res *protocol.Result
		err error
		at  time.Time
	}
	bDone := make(chan waitOut, 1)
	go func() {
		wctx, wcancel := context.WithDeadline(ctx, time.Now().Add(ttl)) // B's expiry, as the client stamps it
		defer wcancel()
		res, err := clB.SignAndWait(wctx, params(reqB))
		bDone <- waitOut{res, err, time.Now()}
	}()

	// A: decided once, TIMEOUT, by the client's hold, with what was seen.
	var dA timedDecision
	waitUntil(t, ttl+40*time.Second, "the decision of "+reqA, func() bool {
		ds := decisions.of(reqA)
		if len(ds) > 0 {
			dA = ds[0]
		}
		return len(ds) > 0
	})
	seenA := tapA.of(reqA) // what had been published for A when it was decided
	if len(seenA) == 0 {
		t.Fatalf("%s decided with no node result published", reqA)
	}
	checkTimeout(t, reqA, dA.d, seenA, dA.at, nodeKeys)
	if dA.at.Before(sentAt.Add(ttl - margin)) {
		t.Fatalf("%s decided %s after it was sent: before its expiry (TTL %s)", reqA, dA.at.Sub(sentAt), ttl)
	}
	// A request this client sent is decided at its expiry plus the grace,
	// whenever node0's result came (after one handshake timeout, or after a
	// re-run's second one).
	if at := dA.at.Sub(sentAt); at < ttl+client.DefaultExpiryGrace-margin || at > ttl+client.DefaultExpiryGrace+15*time.Second {
		t.Fatalf("%s decided %s after it was sent: want its expiry (TTL %s) plus the grace (%s)", reqA, at, ttl, client.DefaultExpiryGrace)
	}
	if !logA.has("request undecided after the hold; delivering TIMEOUT", reqA, "") {
		t.Fatalf("%s: the client did not log its TIMEOUT", reqA)
	}

	// B: the Wait helper's TIMEOUT at its deadline.
	var b waitOut
	select {
	case b = <-bDone:
	case <-time.After(30 * time.Second):
		t.Fatalf("SignAndWait of %s did not return 30 s after A was decided", reqB)
	}
	var reB *client.ResultError
	if !errors.As(b.err, &reB) || reB.Code != protocol.CodeTimeout || !reB.IsTimeout || !errors.Is(b.err, context.DeadlineExceeded) || b.res != nil {
		t.Fatalf("SignAndWait of %s: %v, %v; want a TIMEOUT ResultError wrapped with the deadline", reqB, b.res, b.err)
	}
	if b.at.Before(sentAt.Add(ttl - margin)) {
		t.Fatalf("%s: TIMEOUT %s after it was sent, before its expiry", reqB, b.at.Sub(sentAt))
	}
	var seenB []published
	for _, p := range tapB.of(reqB) {
		if p.at.Before(b.at) {
			seenB = append(seenB, p)
		}
	}
	if len(reB.Nodes) != len(seenB) {
		t.Fatalf("%s: the TIMEOUT names %v, but %d results were published", reqB, reB.Nodes, len(seenB))
	}
	if len(seenB) == 0 && !strings.Contains(reB.Reason, "no node answered") {
		t.Fatalf("%s: reason %q", reqB, reB.Reason)
	}
	t.Logf("%s: %v", reqB, b.err)

	// Nothing from the frozen nodes, and no success, for A, B or C so far.
	for _, p := range slices.Concat(tapA.of(reqA), tapB.of(reqB), tapA.of(reqC)) {
		if p.res.NodeID != "node0" || p.res.Succeeded() {
			t.Fatalf("%s published %s for %s while node1 and node2 were frozen", p.res.NodeID, p.res.ResultType, p.res.RequestID)
		}
	}
	cBefore := len(decisions.of(reqC))
	tResume := time.Now()
	for _, n := range frozen {
		if err := syscall.Kill(n.cmd.Process.Pid, syscall.SIGCONT); err != nil {
			t.Fatalf("SIGCONT %s: %v", n.id, err)
		}
	}
	t.Logf("resumed node1 and node2 %s after the freeze (C had %d decisions by then)", tResume.Sub(tFreeze).Round(time.Millisecond), cBefore)

	// The resumed nodes answer A (expired by now); the client takes their
	// results as stragglers of a decided request: A stays decided once.
	for _, n := range frozen {
		waitUntil(t, time.Minute, n.id+"'s result for "+reqA+" acked as a straggler", func() bool {
			return logA.has("result of a request already decided", reqA, n.id)
		})
	}
	waitUntil(t, time.Minute, "the decision of "+reqC, func() bool { return len(decisions.of(reqC)) > 0 })
	waitClusterReady(t, pc, kv, time.Minute)
	tReady := time.Now()
	for attempt := 1; ; attempt++ {
		digest := sha256.Sum256([]byte("after"))
		actx, acancel := context.WithTimeout(ctx, 40*time.Second)
		res, err := clA.SignAndWait(actx, client.SignParams{WalletID: wallet, KeyType: protocol.KeyTypeSecp256k1, TxID: "after", Tx: digest[:]})
		acancel()
		var re *client.ResultError
		if err != nil && errors.As(err, &re) && re.Code == protocol.CodeNodesNotReady && attempt < 3 {
			// A readiness view that still lags (the watchers catching up
			// after the freeze): the nodes say so within seconds.
			t.Logf("sign after the resume, attempt %d: %v (retrying)", attempt, err)
			continue
		}
		if err != nil {
			t.Fatalf("sign after the resume, attempt %d: %v", attempt, err)
		}
		r, _ := hex.DecodeString(res.R)
		s, _ := hex.DecodeString(res.S)
		if err := client.VerifyECDSA(ecPub, digest[:], r, s, res.SignatureRecovery); err != nil {
			t.Fatalf("signature after the resume does not verify under the wallet key: %v", err)
		}
		break
	}
	tSigned := time.Now()

	// The client decided A and C once each; nothing ever reported A as a
	// success.
	if ds := decisions.of(reqA); len(ds) != 1 {
		t.Fatalf("%s decided %d times: %+v", reqA, len(ds), ds)
	}
	ds := decisions.of(reqC)
	if len(ds) != 1 || ds[0].d.Err == nil || ds[0].d.Result.Succeeded() {
		t.Fatalf("%s: decisions %+v; want one, not a success", reqC, ds)
	}
	for _, p := range tapA.of(reqA) {
		if p.res.Succeeded() {
			t.Fatalf("%s reported a success for %s", p.res.NodeID, reqA)
		}
	}
	describe := func(tap *resultTap, id string) string {
		var parts []string
		for _, p := range tap.of(id) {
			parts = append(parts, fmt.Sprintf("%s %s at +%s", p.res.NodeID, p.res.ErrorCode, p.at.Sub(sentAt).Round(100*time.Millisecond)))
		}
		return strings.Join(parts, ", ")
	}
	t.Logf("%s (callback): TIMEOUT at +%s (first result at +%s): %s", reqA, dA.at.Sub(sentAt).Round(100*time.Millisecond),
		seenA[0].at.Sub(sentAt).Round(100*time.Millisecond), dA.d.Err)
	t.Logf("%s (callback): %s at +%s (resumed at +%s): %v", reqC, ds[0].d.Err.(*attest.Error).Code, ds[0].at.Sub(sentAt).Round(100*time.Millisecond),
		tResume.Sub(sentAt).Round(100*time.Millisecond), ds[0].d.Err)
	t.Logf("published: %s: [%s]; %s: [%s]; %s: [%s]", reqA, describe(tapA, reqA), reqB, describe(tapB, reqB), reqC, describe(tapA, reqC))
	t.Logf("client stats svcA %+v, svcB %+v", clA.Stats(), clB.Stats())
	t.Logf("durations: setup (build, start, keygen, sign) %s; freeze to resume %s; resume to ready %s; sign after resume %s; total %s",
		tSetup.Round(100*time.Millisecond), tResume.Sub(tFreeze).Round(100*time.Millisecond), tReady.Sub(tResume).Round(100*time.Millisecond),
		tSigned.Sub(tReady).Round(100*time.Millisecond), time.Since(t0).Round(100*time.Millisecond))
}

// checkTimeout checks a client-made TIMEOUT decision of request id: an
// error result of the client's making (no node_id) with the request's ids,
// and as evidence exactly the signed results seen (published) before it,
// none a success.
func checkTimeout(t *testing.T, id string, d attest.Decision, seen []published, at time.Time, keys map[string]crypto.PublicKey) {
	t.Helper()
	var ae *attest.Error
	if !errors.As(d.Err, &ae) || ae.Code != protocol.CodeTimeout {
		t.Fatalf("%s: decision %v; want TIMEOUT", id, d.Err)
	}
	r := d.Result
	if r == nil || r.Succeeded() || r.ErrorCode != protocol.CodeTimeout || !r.IsTimeout || r.NodeID != "" || r.RequestID != id || r.TxID != "tx-"+id {
		t.Fatalf("%s: TIMEOUT result %+v", id, r)
	}
	before := map[string]published{} // node -> its first result (the collector keeps a node's first)
	for _, p := range seen {
		if _, dup := before[p.res.NodeID]; !dup && !p.at.After(at) {
			before[p.res.NodeID] = p
		}
	}
	if len(d.Attestations) != len(before) || len(ae.Nodes) != len(before) {
		t.Fatalf("%s: evidence %d results, nodes %v; %d were published before the decision", id, len(d.Attestations), ae.Nodes, len(before))
	}
	for i, raw := range d.Attestations {
		res, err := protocol.VerifyResult(raw, keys)
		if err != nil {
			t.Fatalf("%s: evidence %d does not verify: %v", id, i, err)
		}
		if res.Succeeded() || res.RequestID != id {
			t.Fatalf("%s: evidence %d is %+v", id, i, res)
		}
		if !bytes.Equal(raw, before[res.NodeID].raw) {
			t.Fatalf("%s: evidence %d is not what %s published first", id, i, res.NodeID)
		}
		if !strings.Contains(ae.Nodes[res.NodeID], res.ErrorCode) || !strings.Contains(ae.Reason, res.NodeID+": error "+res.ErrorCode) {
			t.Fatalf("%s: the TIMEOUT does not say that %s reported %s: %q %v", id, res.NodeID, res.ErrorCode, ae.Reason, ae.Nodes)
		}
	}
}

// waitClusterReady polls until every node's /readyz answers 200 and the
// readiness bucket lists all of them.
func waitClusterReady(t *testing.T, pc *procCluster, kv jetstream.KeyValue, d time.Duration) {
	t.Helper()
	want := strings.Join(pc.ids, ",")
	waitUntil(t, d, "every node ready", func() bool {
		for _, id := range pc.ids {
			if c, _ := get("http://" + pc.nodes[id].http + "/readyz"); c != 200 {
				return false
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		ready, err := routing.ReadyNodes(ctx, kv)
		return err == nil && strings.Join(ready, ",") == want
	})
}

// procState is the state letter of /proc/<pid>/stat ("T": stopped).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // after "pid (comm)"
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

// nodeKeysOf returns pc's node identity keys, as clients take them.
func nodeKeysOf(t *testing.T, pc *procCluster) map[string]crypto.PublicKey {
	t.Helper()
	keys := map[string]crypto.PublicKey{}
	for id, p := range pc.peers {
		k, err := keyfile.ParsePublicKey(p)
		if err != nil {
			t.Fatal(err)
		}
		keys[id] = k
	}
	return keys
}

// newTimeoutClient is pc.client with a request TTL (also the callback hold),
// a 2 s result AckWait (the keeper, which decides held requests TIMEOUT,
// runs every AckWait/2) and a logger that records into log.
func newTimeoutClient(t *testing.T, pc *procCluster, url, name string, ttl time.Duration, log *clientLog) *client.Client {
	t.Helper()
	nc, err := nats.Connect(url, nats.CustomInboxPrefix("_INBOX_"+name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cl, err := client.New(nc, pc.clients[name], client.WithClientID(name), client.WithNodeKeys(nodeKeysOf(t, pc)),
		client.WithRequestTTL(ttl), client.WithResultAckWait(2*time.Second), client.WithLogger(slog.New(&recordingHandler{log: log})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// published is one node result seen on a client's signing result subject.
type published struct {
	at  time.Time
	res *protocol.Result
	raw []byte
}

// resultTap keeps every verified node result published on a client's
// signing result subject (a core subscription: the client's own consumer
// still consumes and decides), by request ID, in arrival order.
type resultTap struct {
	mu sync.Mutex
	by map[string][]published
}

func tapSignResults(t *testing.T, url, clientID string, keys map[string]crypto.PublicKey) *resultTap {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	subj, err := routing.SigningResultSubject(clientID)
	if err != nil {
		t.Fatal(err)
	}
	tap := &resultTap{by: map[string][]published{}}
	if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
		res, err := protocol.VerifyResult(m.Data, keys)
		if err != nil {
			return
		}
		tap.mu.Lock()
		tap.by[res.RequestID] = append(tap.by[res.RequestID], published{time.Now(), res, bytes.Clone(m.Data)})
		tap.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return tap
}

func (r *resultTap) of(id string) []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.by[id])
}

func (r *resultTap) all() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []published
	for _, ps := range r.by {
		out = append(out, ps...)
	}
	return out
}

// decisionLog records the decisions a client hands its sign callback.
type decisionLog struct {
	mu sync.Mutex
	at map[string][]timedDecision
}

type timedDecision struct {
	at time.Time
	d  attest.Decision
}

func (l *decisionLog) add(d attest.Decision) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.at[d.Result.RequestID] = append(l.at[d.Result.RequestID], timedDecision{time.Now(), d})
}

func (l *decisionLog) of(id string) []timedDecision {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.at[id])
}

// clientLog keeps a client's log records (message and attributes).
type clientLog struct {
	mu   sync.Mutex
	recs []map[string]string
}

// has reports whether a record with message msg and request_id id (and, if
// node is not empty, node) was logged.
func (l *clientLog) has(msg, id, node string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r["msg"] == msg && r["request_id"] == id && (node == "" || r["node"] == node) {
			return true
		}
	}
	return false
}

type recordingHandler struct {
	log   *clientLog
	attrs []slog.Attr
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message}
	for _, a := range h.attrs {
		m[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	h.log.mu.Lock()
	h.log.recs = append(h.log.recs, m)
	h.log.mu.Unlock()
	return nil
}

func (h *recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordingHandler{log: h.log, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *recordingHandler) WithGroup(string) slog.Handler { return h }
