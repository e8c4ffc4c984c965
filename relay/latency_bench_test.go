package relay_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/relay"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
)

// TestRelayLatency (a benchmark: `make bench`, SIGNER_BENCH=1) measures what
// the relay adds over a native NATS consumer, in one run, for webhook, SSE
// and long-poll delivery: 200 signing results arriving in a burst, and
// results arriving one at a time (SIGNER_BENCH_IDLE, default 50). Three
// simulated nodes (real node identity keys, signed synthetic results, 2 of
// 3 sign) publish to MPC_RESULTS on an embedded NATS with file storage, so
// the numbers are the relay's, not tss-lib's. WebSocket delivery (GET
// /v1/ws) is measured beside them. The native time of a request
// is when a core subscription to its result subject has seen the second
// signer's result: the earliest a native client can decide it. The extra
// latency of a channel is its arrival time at a local backend (webhook
// receiver verifying Standard Webhooks signatures, an SSE stream, a long
// poller) minus that native time. The webhook posts at most
// SIGNER_BENCH_WEBHOOK_CONCURRENCY (default: webhook.concurrency's default)
// at a time.
func TestRelayLatency(t *testing.T) {
	if os.Getenv("SIGNER_BENCH") != "1" {
		t.Skip("benchmark: run with SIGNER_BENCH=1 (make bench)")
	}
	idleN := envIntDefault("SIGNER_BENCH_IDLE", 50)
	const burstN = 200
	b := startLatencyBench(t)
	// Warm up: connections, consumers, the first file blocks.
	b.round(t, "warmup", 5, false)
	idle := b.round(t, "idle", idleN, false)
	burst := b.round(t, "burst", burstN, true)
	for _, r := range []roundStats{idle, burst} {
		for _, ch := range []string{"webhook", "sse", "ws", "poll"} {
			d := r.extra[ch]
			t.Logf("relay latency %-5s %-7s n=%d extra over native: median %7.2fms p99 %7.2fms max %7.2fms",
				r.name, ch, len(d), ms(pct(d, 50)), ms(pct(d, 99)), ms(d[len(d)-1]))
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, len(d)*p/100)]
}

func envIntDefault(name string, def int) int {
	var n int
	if _, err := fmt.Sscan(os.Getenv(name), &n); err != nil || n <= 0 {
		return def
	}
	return n
}

type latencyBench struct {
	js     jetstream.JetStream
	nodes  map[string]crypto.Signer
	keyID  string
	base   string
	token  string
	seq    int
	mu     sync.Mutex
	seen   map[string]map[string]time.Time // channel -> request_id -> first arrival
	native map[string][]time.Time          // request_id -> node result arrivals
	kick   chan struct{}
}

type roundStats struct {
	name  string
	extra map[string][]time.Duration
}

func startLatencyBench(t *testing.T) *latencyBench {
	srv := natstest.RunServer(t)
	_, js := natstest.JetStream(t, srv)
	ctx := context.Background()
	if err := routing.EnsureStreams(ctx, js, routing.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	_, client, _ := ed25519.GenerateKey(rand.Reader)
	keyID, _ := protocol.KeyID(client.Public())
	b := &latencyBench{js: js, nodes: map[string]crypto.Signer{}, keyID: keyID,
		seen:   map[string]map[string]time.Time{"webhook": {}, "sse": {}, "poll": {}, "ws": {}},
		native: map[string][]time.Time{}, kick: make(chan struct{}, 1)}
	pubs := map[string]crypto.PublicKey{}
	for _, id := range []string{"node0", "node1", "node2"} {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		b.nodes[id], pubs[id] = k, k.Public()
	}

	// The webhook receiver verifies like a backend would.
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := wh.Verify(body, r.Header); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.arrived("webhook", body)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)

	dir := t.TempDir()
	pem, _ := keyfile.MarshalPublicKeyPEM(client.Public())
	b.token = "tok-svcA-" + randHex(16)
	cfg := relay.Config{Clients: map[string]*relay.ClientConfig{"svcA": {
		TokenSource: "file:" + writeFile(t, dir, "tok", b.token+"\n"), PublicKeys: []string{pem},
		Webhook: &relay.WebhookConfig{
			URL: hook.URL + "/hook", SecretSource: "file:" + writeFile(t, dir, "whsec", secret),
			Timeout: 5 * time.Second, MaxAge: 10 * time.Minute,
			InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
			Concurrency: envIntDefault("SIGNER_BENCH_WEBHOOK_CONCURRENCY", relay.DefaultConcurrency),
		},
	}}}
	cfg.NATS.URL = srv.ClientURL()
	cfg.Streams.Storage = os.Getenv("SIGNER_BENCH_STORAGE") // "memory"; file by default
	cfg.Cluster = clusterConfig(t, pubs, 2)
	cfg.Cluster.Hold = time.Minute
	run := startRelay(t, cfg)
	b.base = run.srv.URL

	// The native consumer: what a Go client subscribed to the results sees.
	nc := natstest.Connect(t, srv)
	subj, _ := routing.SigningResultSubject("svcA")
	if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
		at := time.Now()
		res, err := protocol.DecodeResult(m.Data)
		if err != nil {
			return
		}
		b.mu.Lock()
		b.native[res.RequestID] = append(b.native[res.RequestID], at)
		b.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	sctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go b.sse(t, sctx)
	go b.longPoll(sctx)
	go b.ws(t, sctx, "ws"+strings.TrimPrefix(b.base, "http")+"/v1/ws")
	return b
}

// arrived records the first arrival of a delivery on a channel.
func (b *latencyBench) arrived(ch string, data []byte) {
	at := time.Now()
	var d relay.Delivery
	if json.Unmarshal(data, &d) != nil {
		return
	}
	res, err := protocol.DecodeResult(d.Result)
	if err != nil {
		return
	}
	b.mu.Lock()
	if _, ok := b.seen[ch][res.RequestID]; !ok {
		b.seen[ch][res.RequestID] = at
	}
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *latencyBench) sse(t *testing.T, ctx context.Context) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.base+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			t.Error(err)
		}
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			b.arrived("sse", []byte(data))
		}
	}
}

func (b *latencyBench) ws(t *testing.T, ctx context.Context, url string) {
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + b.token}}})
	if err != nil {
		t.Error(err)
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		b.arrived("ws", data) // a long-poll item: a delivery plus its cursor
	}
}

func (b *latencyBench) longPoll(ctx context.Context) {
	var cursor uint64
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v1/results?after=%d&wait=30s&limit=1000", b.base, cursor), nil)
		req.Header.Set("Authorization", "Bearer "+b.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		var ans struct {
			Results    []json.RawMessage `json:"results"`
			NextCursor uint64            `json:"next_cursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&ans)
		resp.Body.Close()
		if err != nil {
			continue
		}
		for _, r := range ans.Results {
			b.arrived("poll", r) // an item is a delivery plus its cursor
		}
		cursor = ans.NextCursor
	}
}

// signed is one node result ready to publish.
type signed struct {
	subj, msgID string
	raw         []byte
}

// sign has two of the three nodes sign the success of one request.
func (b *latencyBench) sign(t *testing.T, requestID string) []signed {
	var out []signed
	for _, node := range []string{"node0", "node1"} {
		res := protocol.Result{Op: protocol.OpSign, ResultType: protocol.ResultSuccess, RequestID: requestID, ClientID: "svcA",
			KeyID: b.keyID, WalletID: "w1", TxID: "tx-" + requestID, KeyType: protocol.KeyTypeEd25519,
			PubKey: strings.Repeat("ab", 32), Signature: strings.Repeat("cd", 64)}
		raw, err := protocol.SignResult(context.Background(), b.nodes[node], node, &res)
		if err != nil {
			t.Fatal(err)
		}
		subj, _ := routing.ResultSubject(&res)
		out = append(out, signed{subj, routing.ResultMsgID(res.ClientID, res.RequestID, node, raw), raw})
	}
	return out
}

// publish publishes signed results asynchronously: a burst goes out as
// fast as NATS takes it.
func (b *latencyBench) publish(t *testing.T, rs []signed) {
	for _, r := range rs {
		if _, err := b.js.PublishAsync(r.subj, r.raw, jetstream.WithMsgID(r.msgID)); err != nil {
			t.Fatal(err)
		}
	}
}

// round publishes n requests (all at once, or each after the previous one
// reached every channel) and returns the sorted extra latencies.
func (b *latencyBench) round(t *testing.T, name string, n int, burst bool) roundStats {
	ids := make([]string, n)
	for i := range ids {
		b.seq++
		ids[i] = fmt.Sprintf("%s-%04d-%s", name, b.seq, randHex(4))
	}
	// Signed beforehand: the burst is only publishing.
	rs := make([][]signed, n)
	for i, id := range ids {
		rs[i] = b.sign(t, id)
	}
	if burst {
		start := time.Now()
		b.publish(t, slices.Concat(rs...))
		<-b.js.PublishAsyncComplete()
		t.Logf("%s: %d node results published in %s", name, 2*n, time.Since(start))
		b.waitAll(t, ids)
	} else {
		for i, id := range ids {
			b.publish(t, rs[i])
			b.waitAll(t, []string{id})
		}
	}
	st := roundStats{name: name, extra: map[string][]time.Duration{}}
	b.mu.Lock()
	defer b.mu.Unlock()
	if burst {
		first, last := b.native[ids[0]][1], b.native[ids[0]][1]
		for _, id := range ids {
			if at := b.native[id][1]; at.Before(first) {
				first = at
			} else if at.After(last) {
				last = at
			}
		}
		t.Logf("%s: the native consumer could decide them within %s", name, last.Sub(first))
	}
	for ch, seen := range b.seen {
		for _, id := range ids {
			nat := b.native[id]
			if len(nat) < 2 {
				t.Fatalf("%s: the native consumer saw %d results of %s", name, len(nat), id)
			}
			st.extra[ch] = append(st.extra[ch], seen[id].Sub(nat[1]))
		}
		slices.Sort(st.extra[ch])
	}
	return st
}

func (b *latencyBench) waitAll(t *testing.T, ids []string) {
	deadline := time.After(5 * time.Minute)
	for {
		b.mu.Lock()
		missing := 0
		for _, seen := range b.seen {
			for _, id := range ids {
				if _, ok := seen[id]; !ok {
					missing++
				}
			}
		}
		for _, id := range ids {
			if len(b.native[id]) < 2 {
				missing++
			}
		}
		b.mu.Unlock()
		if missing == 0 {
			return
		}
		select {
		case <-b.kick:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%d deliveries missing after 5 minutes", missing)
		}
	}
}
