//go:build unix

package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/relay"
)

// backend is a client's webhook receiver. Until up() it fails every
// delivery: by answering HTTP 500 (answers500) or by not being there at
// all (its port is bound but not listening: every connection is refused,
// and nothing else can take the port). From up() on it answers 204 to every
// delivery whose Standard Webhooks signature verifies (reference library,
// not the relay's code). It records every attempt.
type backend struct {
	url  string
	up   func()
	wh   *standardwebhooks.Webhook
	isUp chan struct{}

	mu       sync.Mutex
	attempts []attempt
}

type attempt struct {
	id       string // webhook-id
	body     []byte
	accepted bool // answered 2xx
	verified error
}

func newBackend(t *testing.T, secret string, answers500 bool) *backend {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{wh: wh, isUp: make(chan struct{})}
	srv := &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 10 * time.Second}
	t.Cleanup(func() { _ = srv.Close() })
	var once sync.Once
	if answers500 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(ln) }()
		b.url = "http://" + ln.Addr().String()
		b.up = func() { once.Do(func() { close(b.isUp) }) }
	} else {
		addr, listen := boundPort(t)
		b.url = "http://" + addr
		b.up = func() {
			once.Do(func() {
				ln := listen()
				go func() { _ = srv.Serve(ln) }()
				close(b.isUp)
			})
		}
	}
	return b
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a := attempt{id: r.Header.Get("webhook-id"), body: body}
	select {
	case <-b.isUp:
		a.verified = b.wh.Verify(body, r.Header)
		a.accepted = a.verified == nil
	default:
	}
	b.mu.Lock()
	b.attempts = append(b.attempts, a)
	b.mu.Unlock()
	switch {
	case a.accepted:
		w.WriteHeader(http.StatusNoContent)
	case a.verified != nil:
		http.Error(w, "bad signature", http.StatusBadRequest)
	default:
		http.Error(w, "backend broken", http.StatusInternalServerError)
	}
}

// tally returns the attempts for webhook-id id: all, and those accepted.
func (b *backend) tally(id string) (all int, accepted []attempt) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, a := range b.attempts {
		if a.id == id {
			all++
			if a.accepted {
				accepted = append(accepted, a)
			}
		}
	}
	return all, accepted
}

func (b *backend) verifyFailures() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, a := range b.attempts {
		if a.verified != nil {
			out = append(out, a.id+": "+a.verified.Error())
		}
	}
	return out
}

// boundPort binds a TCP socket to a free port of 127.0.0.1 without
// listening on it: connections to addr are refused until listen() is
// called, and no other socket can take the port meanwhile (a port closed
// and bound again later could be).
func boundPort(t *testing.T) (addr string, listen func() net.Listener) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "webhook-port")
	t.Cleanup(func() { _ = f.Close() })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	return addr, func() net.Listener {
		if err := syscall.Listen(fd, 128); err != nil {
			t.Fatal(err)
		}
		ln, err := net.FileListener(f)
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
}

// TestDeadLetterListReplayEndToEnd: a real cluster (devcluster: embedded
// NATS JetStream, three nodes on SoftHSM2) decides a keygen and a signing
// request sent through `signer-relay run`; the client's webhook keeps
// failing (HTTP 500, or connection refused), so after the webhook's max_age
// of retries both deliveries move to RELAY_DLQ. `signer-relay dlq list`
// shows them (webhook-id, history sequence, last error without the URL),
// the backend comes back, `signer-relay dlq replay` (by sequence numbers,
// or --all) sends them again, and the backend receives exactly the
// original deliveries (same webhook-id, the history's bytes, a valid
// Standard Webhooks signature, attestations that verify with
// relay.VerifyDelivery), each accepted once; they are no longer listed,
// and SSE / long polling never see a replay.
func TestDeadLetterListReplayEndToEnd(t *testing.T) {
	cases := []struct {
		name, client string
		answers500   bool
		lastError    string // what dlq list shows as the last error
		outcome      string // signer_relay_webhook_deliveries_total's outcome of a failure
		// replayArgs: the selection after `dlq replay --config C --client X`.
		replayArgs func([]relay.DeadLetter) []string
	}{
		{"backend answers 500, replayed by sequence", "svcA", true, "webhook answered HTTP 500", "http_error",
			func(dls []relay.DeadLetter) []string {
				var seqs []string
				for _, d := range dls {
					seqs = append(seqs, strconv.FormatUint(d.Seq, 10))
				}
				return seqs
			}},
		{"backend unreachable, replayed with --all", "svcB", false, "connection refused", "network_error",
			func([]relay.DeadLetter) []string { return []string{"--all"} }},
	}
	var ids []string
	for _, c := range cases {
		ids = append(ids, c.client)
	}
	cl := startCluster(t, ids...)
	dir := t.TempDir()
	hooks := map[string]*backend{}
	tokens := map[string]string{}
	// A query secret in the URL must never show in a dead letter or a log.
	const urlSecret = "qs-never-logged-7f3a"
	secrets := []string{urlSecret}
	config := "listen: \"127.0.0.1:0\"\nnats:\n  url: \"" + cl.c.URL + "\"\nstreams:\n  storage: memory\n" +
		clusterYAML(t, cl.c.NodeKeys) + "clients:\n"
	for _, c := range cases {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
		hooks[c.client] = newBackend(t, secret, c.answers500)
		tokens[c.client] = "tok-" + c.client + "-" + randHex(16)
		secrets = append(secrets, tokens[c.client], secret)
		config += clientYAML(t, dir, c.client, tokens[c.client], cl.keys[c.client].Public()) + fmt.Sprintf(`    webhook:
      url: "%s/hook?k=%s"
      secret_source: "file:%s"
      timeout: 5s
      max_age: 4s
      initial_backoff: 100ms
      max_backoff: 400ms
      concurrency: 4
`, hooks[c.client].url, urlSecret, writeFile(t, dir, c.client+".whsec", secret+"\n"))
	}
	rc := startRelayCmd(t, dir, config, http.DefaultClient, "http")
	cfgPath := dir + "/relay.yaml"
	base := "http://" + rc.addr
	hc := http.DefaultClient
	nc, err := nats.Connect(cl.c.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, tok := hooks[c.client], tokens[c.client]
			keyID, err := protocol.KeyID(cl.keys[c.client].Public())
			if err != nil {
				t.Fatal(err)
			}
			// A keygen, then a signing request with the new wallet: two
			// decisions in the client's history, both undeliverable.
			wallet := "w-" + c.client
			raw, kid := cl.signedRequest(t, protocol.OpKeygen, c.client, wallet)
			submit(t, hc, base+"/v1/wallets", tok, raw)
			keygen := waitResult(t, hc, base, tok, kid, cl.c.NodeKeys)
			if !keygen.Result.Succeeded() {
				t.Fatalf("keygen: %+v", keygen.Result)
			}
			raw, sid := cl.signedRequest(t, protocol.OpSign, c.client, wallet)
			submit(t, hc, base+"/v1/sign", tok, raw)
			sign := waitResult(t, hc, base, tok, sid, cl.c.NodeKeys)
			if !sign.Result.Succeeded() {
				t.Fatalf("sign: %+v", sign.Result)
			}
			want := map[string]polledItem{ // webhook-id -> the history's delivery
				relay.DecisionMsgID(c.client, protocol.OpKeygen, kid, keyID): keygen,
				relay.DecisionMsgID(c.client, protocol.OpSign, sid, keyID):   sign,
			}

			// Moved to RELAY_DLQ after max_age of failed attempts.
			var dls []relay.DeadLetter
			for end := time.Now().Add(deadline); len(dls) < len(want); {
				if dls = dlqList(t, cfgPath, c.client); len(dls) >= len(want) {
					break
				}
				if time.Now().After(end) {
					t.Fatalf("%d of %d deliveries in the dead-letter stream after %s", len(dls), len(want), deadline)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if len(dls) != len(want) {
				t.Fatalf("dlq list: %+v, want %d dead letters", dls, len(want))
			}
			for _, d := range dls {
				it, ok := want[d.WebhookID]
				switch {
				case !ok:
					t.Errorf("dead letter with webhook-id %q, want one of the decisions", d.WebhookID)
				case d.ClientID != c.client || !d.Attested || d.HistorySeq != strconv.FormatUint(it.Cursor, 10):
					t.Errorf("dead letter %+v, want client %s, attested, history seq %d", d, c.client, it.Cursor)
				case !strings.Contains(d.LastError, c.lastError):
					t.Errorf("dead letter's last error %q, want %q", d.LastError, c.lastError)
				case strings.Contains(d.LastError, urlSecret) || strings.Contains(d.LastError, "/hook"):
					t.Errorf("dead letter's last error %q repeats the webhook URL", d.LastError)
				}
				if c.answers500 {
					// Retried before the move: every attempt was the
					// delivery itself, under its webhook-id.
					n, _ := h.tally(d.WebhookID)
					if n < 2 {
						t.Errorf("%s: %d attempts before the dead letter, want retries", d.WebhookID, n)
					}
				}
			}
			if n := metric(t, hc, base, `signer_relay_webhook_dead_letters_total{client_id="`+c.client+`"}`); n != float64(len(want)) {
				t.Errorf("signer_relay_webhook_dead_letters_total %v, want %d", n, len(want))
			}
			// Retried before the move (max_age is 4s, backoff at most
			// 400ms).
			failed := `signer_relay_webhook_deliveries_total{client_id="` + c.client + `",outcome="` + c.outcome + `"}`
			if n := metric(t, hc, base, failed); n < float64(2*len(want)) {
				t.Errorf("%s %v, want retries before the dead letters", failed, n)
			}
			// The text listing of every client shows them too.
			out, err := cli(t, "dlq", "list", "--config", cfgPath)
			if err != nil {
				t.Fatalf("dlq list: %v\n%s", err, out)
			}
			for _, d := range dls {
				if !strings.Contains(out, d.WebhookID) || !strings.Contains(out, fmt.Sprintf("%d ", d.Seq)) {
					t.Errorf("dlq list misses seq %d %s:\n%s", d.Seq, d.WebhookID, out)
				}
			}
			for _, other := range cases {
				if other.client == c.client {
					continue
				}
				for _, d := range dlqList(t, cfgPath, other.client) {
					if _, mine := want[d.WebhookID]; mine || d.ClientID != other.client {
						t.Errorf("dlq list --client %s shows %+v", other.client, d)
					}
				}
			}
			if _, err := cli(t, "dlq", "replay", "--config", cfgPath); err == nil || !strings.Contains(err.Error(), "--client") {
				t.Errorf("dlq replay without --client: %v", err)
			}

			// The backend is back; replay.
			h.up()
			args := append([]string{"dlq", "replay", "--config", cfgPath, "--client", c.client}, c.replayArgs(dls)...)
			out, err = cli(t, args...)
			if err != nil || !strings.Contains(out, fmt.Sprintf("replayed %d dead letter(s) of %s", len(want), c.client)) {
				t.Fatalf("signer-relay %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			if dls := dlqList(t, cfgPath, c.client); len(dls) != 0 {
				t.Fatalf("dlq list after the replay: %+v", dls)
			}

			// Delivered: exactly the original delivery, once each.
			wc, err := js.Consumer(context.Background(), relay.HistoryStream, relay.WebhookConsumerName(c.client))
			if err != nil {
				t.Fatal(err)
			}
			for end := time.Now().Add(deadline); ; {
				done := 0
				for id := range want {
					if _, acc := h.tally(id); len(acc) > 0 {
						done++
					}
				}
				info, err := wc.Info(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				// Everything handed to the consumer is acked: no
				// delivery is still to come.
				if done == len(want) && info.NumPending == 0 && info.NumAckPending == 0 {
					break
				}
				if time.Now().After(end) {
					t.Fatalf("%d of %d replays accepted by the backend within %s (consumer: %d pending, %d unacked)", done, len(want), deadline, info.NumPending, info.NumAckPending)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if f := h.verifyFailures(); len(f) > 0 {
				t.Fatalf("the backend refused signatures: %v", f)
			}
			for id, it := range want {
				_, acc := h.tally(id)
				if len(acc) != 1 {
					t.Errorf("%s accepted %d times, want once", id, len(acc))
					continue
				}
				res, err := relay.VerifyDelivery(acc[0].body, cl.c.NodeKeys, rules(cl.c.NodeKeys))
				if err != nil {
					t.Errorf("replayed %s: %v", id, err)
					continue
				}
				if res.RequestID != it.Result.RequestID || res.Op != it.Result.Op || !res.Succeeded() {
					t.Errorf("replayed %s is %+v, want the decision of %s", id, res, it.Result.RequestID)
				}
				if !sameDelivery(t, acc[0].body, it.Delivery) {
					t.Errorf("replayed %s:\n%s\nthe history holds:\n%s", id, acc[0].body, it.Delivery)
				}
				if c.answers500 {
					// The same bytes as every failed attempt.
					h.mu.Lock()
					for _, a := range h.attempts {
						if a.id == id && string(a.body) != string(acc[0].body) {
							t.Errorf("%s: the replay's body differs from a failed attempt's", id)
						}
					}
					h.mu.Unlock()
				}
			}
			if dls := dlqList(t, cfgPath, c.client); len(dls) != 0 {
				t.Fatalf("dlq list after the redelivery: %+v", dls)
			}
			// SSE and long polling read the history only: each decision
			// once, the replays not again.
			items, _ := longPoll(t, hc, base, tok, 0, "0s", cl.c.NodeKeys)
			if len(items) != len(want) {
				t.Errorf("long poll from the start: %d results, want %d", len(items), len(want))
			}
		})
	}
	rc.stop()
	for _, s := range secrets {
		if strings.Contains(rc.logs.String(), s) {
			t.Errorf("the relay's log holds a secret (%s...)", s[:4])
		}
	}
}

// sameDelivery reports whether a webhook body and a long-poll item carry
// the same delivery (result, attestations, nodes).
func sameDelivery(t *testing.T, a, b []byte) bool {
	t.Helper()
	var da, db relay.Delivery
	if err := json.Unmarshal(a, &da); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &db); err != nil {
		t.Fatal(err)
	}
	ea, _ := json.Marshal(da)
	eb, _ := json.Marshal(db)
	return string(ea) == string(eb)
}
