package relay_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/relay"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
)

// wsEnv is a relay for svcA and svcB over simulated nodes (real node keys,
// synthetic results) on an embedded JetStream.
type wsEnv struct {
	sim    *nodeSim
	srv    *server.Server
	ckeys  map[string]ed25519.PrivateKey // the clients' request-signing keys
	keyIDs map[string]string
	tokens map[string]string
	run    *running
	verify func(data []byte) (*protocol.Result, error)
	wsURL  string
}

func startWSEnv(t *testing.T, ws relay.WebSocketConfig) *wsEnv {
	return startSimEnv(t, ws, nil)
}

// startSimEnv starts the relay after mod (if any) has changed its config.
func startSimEnv(t *testing.T, ws relay.WebSocketConfig, mod func(dir string, cfg *relay.Config)) *wsEnv {
	t.Helper()
	srv := natstest.RunServer(t)
	_, js := natstest.JetStream(t, srv)
	if err := routing.EnsureStreams(context.Background(), js, routing.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	e := &wsEnv{sim: &nodeSim{js: js, keys: map[string]crypto.Signer{}, pubs: map[string]crypto.PublicKey{}},
		keyIDs: map[string]string{}, tokens: map[string]string{}, ckeys: map[string]ed25519.PrivateKey{}, srv: srv}
	for _, id := range []string{"node0", "node1", "node2"} {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		e.sim.keys[id], e.sim.pubs[id] = k, k.Public()
	}
	dir := t.TempDir()
	cfg := relay.Config{Clients: map[string]*relay.ClientConfig{}, WebSocket: ws}
	for _, id := range []string{"svcA", "svcB"} {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		e.keyIDs[id], _ = protocol.KeyID(k.Public())
		e.ckeys[id] = k
		pem, _ := keyfile.MarshalPublicKeyPEM(k.Public())
		e.tokens[id] = "tok-" + id + "-" + randHex(16)
		cfg.Clients[id] = &relay.ClientConfig{TokenSource: "file:" + writeFile(t, dir, id+".tok", e.tokens[id]+"\n"), PublicKeys: []string{pem}}
	}
	cfg.NATS.URL = srv.ClientURL()
	cfg.Streams.Storage = "memory"
	cfg.Cluster = clusterConfig(t, e.sim.pubs, 2)
	if mod != nil {
		mod(dir, &cfg)
	}
	e.run = startRelay(t, cfg)
	e.wsURL = "ws" + strings.TrimPrefix(e.run.srv.URL, "http") + "/v1/ws"
	rules := attest.Rules{Nodes: []string{"node0", "node1", "node2"}, Signers: 2}
	e.verify = func(data []byte) (*protocol.Result, error) {
		return relay.VerifyDelivery(data, e.sim.pubs, rules)
	}
	return e
}

// decide has two nodes publish the success of one request of clientID.
func (e *wsEnv) decide(t *testing.T, clientID, requestID string) {
	t.Helper()
	for _, node := range []string{"node0", "node2"} {
		e.sim.publish(t, node, protocol.Result{Op: protocol.OpSign, ResultType: protocol.ResultSuccess, RequestID: requestID, ClientID: clientID,
			KeyID: e.keyIDs[clientID], WalletID: "w1", TxID: "tx1", KeyType: protocol.KeyTypeEd25519,
			PubKey: strings.Repeat("ab", 32), Signature: strings.Repeat("cd", 64)})
	}
}

func (e *wsEnv) dial(t *testing.T, token, after string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	if opts == nil {
		opts = &websocket.DialOptions{}
	}
	if token != "" {
		opts.HTTPHeader = http.Header{"Authorization": {"Bearer " + token}}
	}
	u := e.wsURL
	if after != "" {
		u += "?after=" + after
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, u, opts)
	if c != nil {
		c.SetReadLimit(1 << 20)
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

// wsItem is one WebSocket message, verified as a delivery.
type wsItem struct {
	Cursor uint64
	Res    *protocol.Result
}

// next reads one message within the deadline and verifies it.
func (e *wsEnv) next(t *testing.T, c *websocket.Conn, within time.Duration) (wsItem, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		return wsItem{}, err
	}
	if typ != websocket.MessageText {
		t.Fatalf("message type %v", typ)
	}
	var m struct {
		Cursor       uint64            `json:"cursor"`
		Result       json.RawMessage   `json:"result"`
		Attestations [][]byte          `json:"attestations"`
		Nodes        map[string]string `json:"nodes"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("message %s: %v", b, err)
	}
	d, _ := json.Marshal(map[string]any{"result": m.Result, "attestations": m.Attestations, "nodes": m.Nodes})
	res, err := e.verify(d)
	if err != nil {
		t.Fatalf("delivery over the WebSocket: %v", err)
	}
	return wsItem{m.Cursor, res}, nil
}

// expect reads the results of ids (in the history's order, which need not
// be the order of ids: requests are decided concurrently), each once, with
// increasing cursors.
func (e *wsEnv) expect(t *testing.T, c *websocket.Conn, clientID string, ids ...string) []wsItem {
	t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var got []wsItem
	for len(got) < len(ids) {
		it, err := e.next(t, c, 20*time.Second)
		if err != nil {
			t.Fatalf("%s: %d of %d results came: %v", clientID, len(got), len(ids), err)
		}
		if !want[it.Res.RequestID] || it.Res.ClientID != clientID {
			t.Fatalf("%s: got %s of %s, unexpected or repeated (want %v)", clientID, it.Res.RequestID, it.Res.ClientID, ids)
		}
		delete(want, it.Res.RequestID)
		if len(got) > 0 && it.Cursor <= got[len(got)-1].Cursor {
			t.Fatalf("cursor %d after %d", it.Cursor, got[len(got)-1].Cursor)
		}
		got = append(got, it)
	}
	return got
}

// TestWebSocketResumeIsolationAuth: GET /v1/ws needs the bearer token of a
// client (401 before any upgrade otherwise) and streams that client's
// decisions only, as they arrive; a client that reconnects with
// ?after=<last cursor> gets exactly what it missed, nothing repeated; a
// bad cursor is 400.
func TestWebSocketResumeIsolationAuth(t *testing.T) {
	// No pings here (TestWebSocketPing): these clients read only when the
	// test expects something.
	e := startWSEnv(t, relay.WebSocketConfig{PingInterval: time.Hour, WriteTimeout: 10 * time.Second})
	for _, tok := range []string{"", "tok-nope", e.tokens["svcA"] + "x"} {
		_, resp, err := e.dial(t, tok, "", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("token %q: err %v, resp %v", tok, err, resp)
		}
	}
	if _, resp, err := e.dial(t, e.tokens["svcA"], "x1", nil); err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad cursor: err %v resp %v", err, resp)
	}
	a, _, err := e.dial(t, e.tokens["svcA"], "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := e.dial(t, e.tokens["svcB"], "", nil)
	if err != nil {
		t.Fatal(err)
	}
	e.decide(t, "svcA", "a1")
	e.decide(t, "svcB", "b1")
	e.decide(t, "svcA", "a2")
	e.decide(t, "svcA", "a3")
	e.decide(t, "svcB", "b2")
	got := e.expect(t, a, "svcA", "a1", "a2", "a3")
	e.expect(t, b, "svcB", "b1", "b2") // expect fails on any result of svcA

	e.decide(t, "svcA", "a4")
	got = append(got, e.expect(t, a, "svcA", "a4")...)

	// Disconnect; what is decided meanwhile comes on the reconnect after
	// the last cursor seen, once and in order.
	a.Close(websocket.StatusNormalClosure, "")
	e.decide(t, "svcA", "a5")
	e.decide(t, "svcA", "a6")
	last := got[len(got)-1].Cursor
	a2, _, err := e.dial(t, e.tokens["svcA"], fmt.Sprint(last), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.expect(t, a2, "svcA", "a5", "a6")
	e.decide(t, "svcA", "a7")
	e.expect(t, a2, "svcA", "a7")
	// From the start again: the whole history, in order.
	a3, _, err := e.dial(t, e.tokens["svcA"], "0", nil)
	if err != nil {
		t.Fatal(err)
	}
	e.expect(t, a3, "svcA", "a1", "a2", "a3", "a4", "a5", "a6", "a7")
	// svcB saw none of it.
	if it, err := e.next(t, b, 500*time.Millisecond); err == nil {
		t.Fatalf("svcB got %s of %s", it.Res.RequestID, it.Res.ClientID)
	}
}

// TestWebSocketSlowReaderCutOff: a client that stops reading is
// disconnected once its send queue is full (close code 1008), counted as
// slow_reader; one that does not answer pings is disconnected too
// (ping_timeout). Neither holds more than the queue in the relay.
func TestWebSocketSlowReaderCutOff(t *testing.T) {
	e := startWSEnv(t, relay.WebSocketConfig{SendQueue: 4, PingInterval: time.Hour, WriteTimeout: time.Second})
	// A tiny receive window: the relay's writes block soon.
	small := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	hc := &http.Client{Transport: &http.Transport{DialContext: small.DialContext}}
	// And a small send buffer on the relay's side of the connection (no
	// autotuning to megabytes): a listener of its own for the slow reader.
	srv := httptest.NewUnstartedServer(e.run.r.Handler())
	srv.Listener = smallSendListener{srv.Listener}
	srv.Start()
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	fastURL := e.wsURL
	e.wsURL = "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws"
	slow, _, err := e.dial(t, e.tokens["svcA"], "", &websocket.DialOptions{HTTPClient: hc})
	e.wsURL = fastURL
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	for i := range n {
		e.decide(t, "svcA", fmt.Sprintf("s%03d", i))
	}
	sample := `signer_relay_ws_disconnects_total{client_id="svcA",reason="slow_reader"}`
	waitMetric(t, e.run.srv.URL, sample, 1)
	// What the client still gets is what was in flight: then the close.
	read := 0
	for {
		_, err := e.next(t, slow, 20*time.Second)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) && ce.Code != websocket.StatusPolicyViolation {
				t.Fatalf("closed with %v", ce)
			}
			break
		}
		read++
	}
	if read >= n {
		t.Fatalf("the slow reader got all %d results", read)
	}
	t.Logf("slow reader cut off after %d of %d results", read, n)
	// A reader that keeps up gets everything, from the start.
	fast, _, err := e.dial(t, e.tokens["svcA"], "", nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs := readAll(fast, n, 60*time.Second)
	if len(msgs) != n {
		t.Fatalf("a reader keeping up got %d of %d", len(msgs), n)
	}
	seen := map[string]bool{}
	for i, b := range msgs {
		var m struct {
			Result json.RawMessage `json:"result"`
		}
		_ = json.Unmarshal(b, &m)
		res, err := protocol.DecodeResult(m.Result)
		if err != nil || !strings.HasPrefix(res.RequestID, "s") || seen[res.RequestID] {
			t.Fatalf("message %d: %v %v (repeated: %v)", i, res, err, err == nil && seen[res.RequestID])
		}
		seen[res.RequestID] = true
	}
}

// smallSendListener gives each accepted connection a 4 KiB send buffer.
type smallSendListener struct{ net.Listener }

func (l smallSendListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// readAll reads up to n messages as fast as they come (verification
// after: a reader that keeps up).
func readAll(c *websocket.Conn, n int, within time.Duration) [][]byte {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var out [][]byte
	for len(out) < n {
		_, b, err := c.Read(ctx)
		if err != nil {
			break
		}
		out = append(out, b)
	}
	return out
}

// TestWebSocketPing: the relay pings; a client that never reads (so never
// answers) is disconnected after write_timeout, one that reads stays.
func TestWebSocketPing(t *testing.T) {
	// The reader must answer a ping within write_timeout: 3s leaves room
	// for a slow machine.
	e := startWSEnv(t, relay.WebSocketConfig{PingInterval: 200 * time.Millisecond, WriteTimeout: 3 * time.Second})
	reader, _, err := e.dial(t, e.tokens["svcB"], "", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 16)
	go func() { // reading answers the pings
		defer close(got)
		for {
			_, b, err := reader.Read(context.Background())
			if err != nil {
				return
			}
			got <- b
		}
	}()
	if _, _, err := e.dial(t, e.tokens["svcB"], "", nil); err != nil { // never read
		t.Fatal(err)
	}
	waitMetric(t, e.run.srv.URL, `signer_relay_ws_disconnects_total{client_id="svcB",reason="ping_timeout"}`, 1)
	e.decide(t, "svcB", "p1")
	select {
	case b, ok := <-got:
		if !ok || !strings.Contains(string(b), `"request_id":"p1"`) {
			t.Fatalf("the reading client: %q (open %v)", b, ok)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the reading client got nothing")
	}
	if v := metric(t, e.run.srv.URL, `signer_relay_ws_disconnects_total{client_id="svcB",reason="ping_timeout"}`); v != 1 {
		t.Fatalf("%v ping timeouts, want 1 (the reader answers)", v)
	}
}
