package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/relay"
	"github.com/hwsigner/signer/signer/devcluster"
)

// env is a real cluster (embedded NATS JetStream, 3 nodes on SoftHSM2
// tokens, 2 must sign) and the client keys bound to svcA and svcB.
type env struct {
	c      *devcluster.Cluster
	keys   map[string]ed25519.PrivateKey
	tokens map[string]string
	dir    string
}

func startEnv(t testing.TB) *env {
	t.Helper()
	testhsm.Setup(t)
	e := &env{keys: map[string]ed25519.PrivateKey{}, tokens: map[string]string{}, dir: t.TempDir()}
	var cfg policy.Config
	for _, id := range []string{"svcA", "svcB"} {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		e.keys[id] = k
		e.tokens[id] = "tok-" + id + "-" + randHex(16)
		pem, err := keyfile.MarshalPublicKeyPEM(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		cfg.Clients = append(cfg.Clients, policy.ClientConfig{Name: id, PublicKey: pem, ClientIDs: []string{id}, Ops: []string{"keygen", "sign", "reshare"}})
	}
	pol, err := policy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	uris := map[string]string{}
	c, err := devcluster.Start(ctx, devcluster.Options{
		Dir: filepath.Join(e.dir, "cluster"), Nodes: 3, Signers: 2,
		TokenURI: func(id string) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			if uris[id] == "" {
				uris[id] = testhsm.Token(t, "relay")
			}
			return uris[id], nil
		},
		Policy: pol, TestPreParams: fixtures.PreParams(t),
		SignTimeout: 60 * time.Second, KeygenTimeout: 2 * time.Minute,
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	e.c = c
	return e
}

func quietLogger() *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("RELAY_TEST_VERBOSE") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// config returns a relay config for svcA and svcB; hooks maps a clientID to
// its webhook receiver.
func (e *env) config(t testing.TB, hooks map[string]*receiver) relay.Config {
	t.Helper()
	cfg := relay.Config{Clients: map[string]*relay.ClientConfig{}}
	cfg.NATS.URL = e.c.URL
	cfg.Cluster = clusterConfig(t, e.c.NodeKeys, 2)
	for id, k := range e.keys {
		pem, _ := keyfile.MarshalPublicKeyPEM(k.Public())
		cc := &relay.ClientConfig{
			TokenSource: "file:" + writeFile(t, e.dir, id+".token", e.tokens[id]+"\n"),
			PublicKeys:  []string{pem},
		}
		if h := hooks[id]; h != nil {
			cc.Webhook = &relay.WebhookConfig{
				URL:            h.srv.URL + "/hook",
				SecretSource:   "file:" + writeFile(t, e.dir, id+".whsec", h.secret),
				Timeout:        2 * time.Second,
				MaxAge:         10 * time.Minute,
				InitialBackoff: 100 * time.Millisecond,
				MaxBackoff:     time.Second,
				Concurrency:    8,
			}
		}
		cfg.Clients[id] = cc
	}
	return cfg
}

// clusterConfig returns the relay's cluster section for node keys.
func clusterConfig(t testing.TB, keys map[string]crypto.PublicKey, signers int) relay.ClusterConfig {
	t.Helper()
	c := relay.ClusterConfig{Peers: map[string]string{}, Signers: signers}
	for id, k := range keys {
		pem, err := keyfile.MarshalPublicKeyPEM(k)
		if err != nil {
			t.Fatal(err)
		}
		c.Peers[id] = pem
	}
	return c
}

// running is one relay in this process, served by httptest.
type running struct {
	r      *relay.Relay
	srv    *httptest.Server
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startRelay(t testing.TB, cfg relay.Config) *running {
	t.Helper()
	r, err := relay.New(cfg, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &running{r: r, srv: httptest.NewServer(r.Handler()), cancel: cancel, done: make(chan error, 1)}
	go func() { run.done <- r.Run(ctx) }()
	t.Cleanup(run.kill)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(run.srv.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return run
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("relay not ready in time")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill drops the relay without a graceful shutdown: the context is cancelled
// (in-flight webhook posts abort unacked), client connections are cut and
// the NATS connections closed without draining.
func (run *running) kill() {
	run.once.Do(func() {
		run.cancel()
		run.srv.CloseClientConnections()
		run.srv.Close()
		<-run.done
	})
}

// signRequest builds a signed ed25519 signing request, as the Go client does.
func (e *env) signRequest(t testing.TB, clientID, walletID string) (raw []byte, requestID string) {
	t.Helper()
	requestID = randHex(16)
	req := &protocol.SigningRequest{
		Envelope: protocol.Envelope{ClientID: clientID, RequestID: requestID},
		WalletID: walletID, KeyType: protocol.KeyTypeEd25519, TxID: "tx-" + requestID[:8],
		Tx: []byte("pay " + requestID),
	}
	req.SetTimes(time.Now(), 5*time.Minute)
	raw, err := protocol.SignRequest(context.Background(), e.keys[clientID], protocol.OpSign, req)
	if err != nil {
		t.Fatal(err)
	}
	return raw, requestID
}

func (e *env) keygenRequest(t testing.TB, clientID, walletID string) (raw []byte, requestID string) {
	t.Helper()
	requestID = randHex(16)
	req := &protocol.KeygenRequest{
		Envelope: protocol.Envelope{ClientID: clientID, RequestID: requestID},
		WalletID: walletID, KeyTypes: []string{protocol.KeyTypeEd25519},
	}
	req.SetTimes(time.Now(), 5*time.Minute)
	raw, err := protocol.SignRequest(context.Background(), e.keys[clientID], protocol.OpKeygen, req)
	if err != nil {
		t.Fatal(err)
	}
	return raw, requestID
}

type apiAnswer struct {
	Status    int
	Code      string `json:"error_code"`
	RequestID string `json:"request_id"`
	Body      string
}

func post(t testing.TB, url, token string, body []byte) apiAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := apiAnswer{Status: resp.StatusCode, Body: string(b)}
	_ = json.Unmarshal(b, &a)
	return a
}

// submitSigns posts n signing requests (4 at a time) and returns their ids.
func (e *env) submitSigns(t testing.TB, base, clientID, walletID string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	var failed atomic.Value
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			raw, id := e.signRequest(t, clientID, walletID)
			a := post(t, base+"/v1/sign", e.tokens[clientID], raw)
			if a.Status != http.StatusAccepted || a.RequestID != id {
				failed.Store(fmt.Sprintf("sign %d: %d %s", i, a.Status, a.Body))
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatal(f)
	}
	return ids
}

// poll long-polls the client's results after cursor and verifies each.
func (e *env) poll(t testing.TB, base, token string, after uint64, wait string) (results []polledResult, next uint64) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/v1/results?after=%d&wait=%s", base, after, wait), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("poll: %d %s", resp.StatusCode, b)
	}
	var ans struct {
		Results []struct {
			Cursor       uint64          `json:"cursor"`
			Result       json.RawMessage `json:"result"`
			Attestations [][]byte        `json:"attestations"`
		} `json:"results"`
		NextCursor uint64 `json:"next_cursor"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		t.Fatal(err)
	}
	for _, r := range ans.Results {
		// The item is a delivery plus its cursor: verify it as one.
		item, _ := json.Marshal(map[string]any{"result": r.Result, "attestations": r.Attestations})
		results = append(results, polledResult{r.Cursor, e.decodeDelivery(t, item)})
	}
	return results, ans.NextCursor
}

type polledResult struct {
	Cursor uint64
	Res    *protocol.Result
}

// delivery is the relay's payload as a backend sees it (webhook body, SSE
// data, long-poll item), decoded here without the relay's code.
type delivery struct {
	Result       json.RawMessage   `json:"result"`
	Attestations [][]byte          `json:"attestations"`
	Nodes        map[string]string `json:"nodes"`
}

// verifyDelivery checks a delivery the way a backend in another language
// would (docs/canonical-encoding.md §7), with protocol.VerifyResult and the
// attest rules, not with the relay's code: every attestation is a node
// result that verifies against the cluster's keys and names the delivered
// request; fed to a collector they decide exactly the delivered result (or,
// for a TIMEOUT, nothing).
func (e *env) verifyDelivery(data []byte) (*protocol.Result, *delivery, error) {
	var d delivery
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, nil, fmt.Errorf("payload: %w", err)
	}
	res, err := protocol.DecodeResult(d.Result)
	if err != nil {
		return nil, nil, fmt.Errorf("payload result: %w", err)
	}
	if res.NodeID != "" || res.NodeSignature != "" {
		return nil, nil, errors.New("the attested result carries one node's id or signature")
	}
	col := attest.NewCollector(res.Op, attest.Rules{Nodes: e.c.NodeIDs, Signers: 2})
	var dec attest.Decision
	done := false
	for i, raw := range d.Attestations {
		a, err := protocol.VerifyResult(raw, e.c.NodeKeys)
		if err != nil {
			return nil, nil, fmt.Errorf("attestation %d: %w", i, err)
		}
		if a.Op != res.Op || a.RequestID != res.RequestID || a.ClientID != res.ClientID || a.KeyID != res.KeyID {
			return nil, nil, fmt.Errorf("attestation %d is for another request", i)
		}
		if !done {
			dec, done = col.Add(a, raw)
		}
	}
	switch {
	case !done && res.ErrorCode == protocol.CodeTimeout:
		return res, &d, nil // the relay stopped waiting: evidence, no outcome
	case !done:
		return nil, nil, fmt.Errorf("%d attestations decide nothing (result %s %s)", len(d.Attestations), res.ResultType, res.ErrorCode)
	}
	got := *dec.Result
	got.NodeID, got.NodeSignature = "", ""
	if res.Succeeded() != got.Succeeded() || (res.Succeeded() && got != *res) || res.ErrorCode != got.ErrorCode {
		return nil, nil, fmt.Errorf("the attestations decide %+v, the delivery says %+v", got, *res)
	}
	return res, &d, nil
}

func (e *env) decodeDelivery(t testing.TB, raw []byte) *protocol.Result {
	t.Helper()
	res, _, err := e.verifyDelivery(raw)
	if err != nil {
		t.Fatalf("delivery: %v", err)
	}
	return res
}

// waitResult long-polls until the result of requestID arrives.
func (e *env) waitResult(t testing.TB, base, token, requestID string, timeout time.Duration) *protocol.Result {
	t.Helper()
	var cursor uint64
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		rs, next := e.poll(t, base, token, cursor, "5s")
		for _, r := range rs {
			if r.Res.RequestID == requestID {
				return r.Res
			}
		}
		cursor = next
	}
	t.Fatalf("no result for %s within %s", requestID, timeout)
	return nil
}

// endCursor returns the cursor after every result the client has so far.
func (e *env) endCursor(t testing.TB, base, token string) uint64 {
	t.Helper()
	var c uint64
	for {
		rs, next := e.poll(t, base, token, c, "0s")
		if len(rs) == 0 {
			return c
		}
		c = next
	}
}

// receiver is a webhook endpoint that verifies every delivery with the
// Standard Webhooks reference library (not the relay's code) and its
// attestations (verifyDelivery). It keeps every body it accepted.
type receiver struct {
	srv      *httptest.Server
	secret   string
	down     atomic.Bool
	delay    atomic.Int64 // ns per answer
	clientID string

	mu       sync.Mutex
	byID     map[string][]byte    // webhook-id -> body
	byReq    map[string]string    // request_id -> webhook-id
	at       map[string]time.Time // request_id -> first verified delivery
	attempts int
	dups     int
	failures []string
	gotCh    chan struct{}
}

func newReceiver(t testing.TB, e *env, clientID string) *receiver {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	h := &receiver{secret: "whsec_" + base64.StdEncoding.EncodeToString(key), clientID: clientID,
		byID: map[string][]byte{}, byReq: map[string]string{}, at: map[string]time.Time{}, gotCh: make(chan struct{}, 1)}
	wh, err := standardwebhooks.NewWebhook(h.secret)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.attempts++
		h.mu.Unlock()
		if d := h.delay.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		if h.down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		fail := func(s string) {
			h.mu.Lock()
			h.failures = append(h.failures, s)
			h.mu.Unlock()
			http.Error(w, s, http.StatusBadRequest)
		}
		if err := wh.Verify(body, r.Header); err != nil {
			fail("standard webhooks verification: " + err.Error())
			return
		}
		res, _, err := e.verifyDelivery(body)
		if err != nil {
			fail("attestation: " + err.Error())
			return
		}
		if res.ClientID != clientID {
			fail("result of client " + res.ClientID + " at the webhook of " + clientID)
			return
		}
		id := r.Header.Get("webhook-id")
		h.mu.Lock()
		if prev, ok := h.byID[id]; ok {
			h.dups++
			if !bytes.Equal(prev, body) {
				h.failures = append(h.failures, "webhook-id "+id+" reused for another body")
			}
		} else {
			h.byID[id] = body
		}
		if prevID, ok := h.byReq[res.RequestID]; ok && prevID != id {
			h.failures = append(h.failures, "request "+res.RequestID+" delivered under two webhook-ids")
		}
		h.byReq[res.RequestID] = id
		if _, ok := h.at[res.RequestID]; !ok {
			h.at[res.RequestID] = time.Now()
		}
		h.mu.Unlock()
		select {
		case h.gotCh <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// waitFor waits until every request id has been delivered.
func (h *receiver) waitFor(t testing.TB, ids []string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		h.mu.Lock()
		missing := 0
		for _, id := range ids {
			if _, ok := h.byReq[id]; !ok {
				missing++
			}
		}
		failures := append([]string(nil), h.failures...)
		h.mu.Unlock()
		if len(failures) > 0 {
			t.Fatalf("receiver: %v", failures)
		}
		if missing == 0 {
			return
		}
		select {
		case <-h.gotCh:
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%d of %d results never reached the webhook of %s", missing, len(ids), h.clientID)
		}
	}
}

func (h *receiver) stats() (attempts, dups int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.attempts, h.dups
}

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	ID   string
	Data string
}

// openSSE connects to /v1/events and returns a channel of events; cancel
// disconnects.
func openSSE(t testing.TB, base, token, lastID string) (<-chan sseEvent, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		t.Fatalf("SSE: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sseEvent, 256)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Data != "" {
					select {
					case ch <- ev:
					case <-ctx.Done():
						return
					}
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				ev.ID = line[4:]
			case strings.HasPrefix(line, "data: "):
				ev.Data = line[6:]
			}
		}
	}()
	return ch, cancel
}
