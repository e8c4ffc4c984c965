package relay_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/relay"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
)

// nodeSim plays the three nodes of a 2-of-3 cluster on a bare JetStream:
// the relay's collection, hold and restart behaviour without tss-lib.
type nodeSim struct {
	js    jetstream.JetStream
	keys  map[string]crypto.Signer
	pubs  map[string]crypto.PublicKey
	keyID string
}

func (s *nodeSim) publish(t *testing.T, node string, res protocol.Result) {
	t.Helper()
	raw, err := protocol.SignResult(context.Background(), s.keys[node], node, &res)
	if err != nil {
		t.Fatal(err)
	}
	subj, err := routing.ResultSubject(&res)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.js.Publish(context.Background(), subj, raw, jetstream.WithMsgID(routing.ResultMsgID(res.ClientID, res.RequestID, node, raw))); err != nil {
		t.Fatal(err)
	}
}

func (s *nodeSim) success(requestID string) protocol.Result {
	return protocol.Result{Op: protocol.OpSign, ResultType: protocol.ResultSuccess, RequestID: requestID, ClientID: "svcA",
		KeyID: s.keyID, WalletID: "w1", TxID: "tx1", KeyType: protocol.KeyTypeEd25519,
		PubKey: strings.Repeat("ab", 32), Signature: strings.Repeat("cd", 64)}
}

// metric returns the value of one Prometheus sample line (0 if absent).
func metric(t *testing.T, base, sample string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func waitMetric(t *testing.T, base, sample string, atLeast float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, base, sample) < atLeast {
		if time.Now().After(deadline) {
			t.Fatalf("%s stayed below %v", sample, atLeast)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRelayHoldsDecidesOnceAndSurvivesRestart: an undecided request is
// decided TIMEOUT after cluster.hold, with what was seen as evidence; a
// result after a decision is dropped; results the relay cannot attest
// (unknown key_id, another client) never count; a relay stopped while a
// request is half collected loses nothing: the next run decides it, once.
func TestRelayHoldsDecidesOnceAndSurvivesRestart(t *testing.T) {
	srv := natstest.RunServer(t)
	_, js := natstest.JetStream(t, srv)
	ctx := context.Background()
	if err := routing.EnsureStreams(ctx, js, routing.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	_, client, _ := ed25519.GenerateKey(rand.Reader)
	keyID, _ := protocol.KeyID(client.Public())
	sim := &nodeSim{js: js, keys: map[string]crypto.Signer{}, pubs: map[string]crypto.PublicKey{}, keyID: keyID}
	for _, id := range []string{"node0", "node1", "node2"} {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		sim.keys[id], sim.pubs[id] = k, k.Public()
	}
	dir := t.TempDir()
	pem, _ := keyfile.MarshalPublicKeyPEM(client.Public())
	token := "tok-svcA-" + randHex(16)
	cfg := relay.Config{Clients: map[string]*relay.ClientConfig{"svcA": {
		TokenSource: "file:" + writeFile(t, dir, "tok", token+"\n"), PublicKeys: []string{pem},
	}}}
	cfg.NATS.URL = srv.ClientURL()
	cfg.Streams.Storage = "memory"
	cfg.Cluster = clusterConfig(t, sim.pubs, 2)
	cfg.Cluster.Hold = 2 * time.Second
	run := startRelay(t, cfg)
	verify := func(data []byte) (*protocol.Result, *relay.Delivery) {
		t.Helper()
		res, err := relay.VerifyDelivery(data, sim.pubs, attest.Rules{Nodes: []string{"node0", "node1", "node2"}, Signers: 2})
		if err != nil {
			t.Fatalf("delivery %s: %v", data, err)
		}
		d, _, _ := relay.ParseDelivery(data)
		return res, d
	}
	// next long-polls one decision after cursor.
	next := func(after uint64, wait string) (*protocol.Result, *relay.Delivery, uint64) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, run.srv.URL+"/v1/results?limit=1&after="+strconv.FormatUint(after, 10)+"&wait="+wait, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ans struct {
			Results    []json.RawMessage `json:"results"`
			NextCursor uint64            `json:"next_cursor"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
			t.Fatal(err)
		}
		if len(ans.Results) == 0 {
			return nil, nil, after
		}
		// An item is a delivery plus its cursor.
		res, d := verify(ans.Results[0])
		return res, d, ans.NextCursor
	}

	// Undecided: one node's result only. TIMEOUT after the hold, with it as
	// evidence; not before.
	start := time.Now()
	sim.publish(t, "node0", sim.success("r-hold"))
	res, d, cursor := next(0, "20s")
	if res == nil || res.RequestID != "r-hold" || res.ErrorCode != protocol.CodeTimeout || len(d.Attestations) != 1 || d.Nodes["node0"] == "" {
		t.Fatalf("undecided request: %+v %+v", res, d)
	}
	if waited := time.Since(start); waited < cfg.Cluster.Hold {
		t.Fatalf("decided TIMEOUT after %s, before the hold of %s", waited, cfg.Cluster.Hold)
	}
	// A straggler after the decision is dropped, so is what cannot be
	// attested; then an honest pair decides at once.
	sim.publish(t, "node1", sim.success("r-hold"))
	unknownKey := sim.success("r-key")
	unknownKey.KeyID = strings.Repeat("0", 32)
	sim.publish(t, "node0", unknownKey)
	sim.publish(t, "node1", unknownKey)
	sim.publish(t, "node0", sim.success("r-ok"))
	sim.publish(t, "node2", sim.success("r-ok"))
	res, d, cursor = next(cursor, "20s")
	if res == nil || res.RequestID != "r-ok" || !res.Succeeded() || len(d.Attestations) != 2 {
		t.Fatalf("after the straggler: %+v", res)
	}
	waitMetric(t, run.srv.URL, `signer_relay_results_forwarded_total{client_id="svcA",outcome="straggler"}`, 1)
	waitMetric(t, run.srv.URL, `signer_relay_results_forwarded_total{client_id="svcA",outcome="rejected"}`, 2)

	// Stopped half way: node0's result is collected, node1's comes after a
	// restart. The next run decides success (node0's result came back),
	// and the history holds the decision once.
	collected := metric(t, run.srv.URL, `signer_relay_results_forwarded_total{client_id="svcA",outcome="collected"}`)
	sim.publish(t, "node0", sim.success("r-restart"))
	waitMetric(t, run.srv.URL, `signer_relay_results_forwarded_total{client_id="svcA",outcome="collected"}`, collected+1)
	run.kill()
	run = startRelay(t, cfg)
	sim.publish(t, "node1", sim.success("r-restart"))
	res, d, cursor = next(cursor, "20s")
	if res == nil || res.RequestID != "r-restart" || !res.Succeeded() || len(d.Attestations) != 2 {
		t.Fatalf("after a restart mid-collection: %+v", res)
	}
	// Nothing else: no second decision, no TIMEOUT for the straggler, the
	// unknown key or r-restart once its hold passes.
	if res, _, _ := next(cursor, "3s"); res != nil {
		t.Fatalf("extra decision %+v", res)
	}
}
