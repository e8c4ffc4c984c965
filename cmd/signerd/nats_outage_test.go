package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing/natstest"
)

// noteLog records every sd_notify datagram a node sends, read as they
// arrive: an unread notify socket fills up (net.unix.max_dgram_qlen) and
// would block the node's notify calls.
type noteLog struct {
	mu   sync.Mutex
	msgs []note
}

type note struct {
	at  time.Time
	msg string
}

func (pc *procCluster) collectNotes(n *runNode) *noteLog {
	l := &noteLog{}
	conn := n.notify
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return // closed at the end of the test
			}
			l.mu.Lock()
			l.msgs = append(l.msgs, note{time.Now(), string(buf[:k])})
			l.mu.Unlock()
		}
	}()
	pc.t.Cleanup(func() { _ = conn.Close() })
	return l
}

// count returns how many datagrams since `since` contain want.
func (l *noteLog) count(want string, since time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := 0
	for _, m := range l.msgs {
		if !m.at.Before(since) && strings.Contains(m.msg, want) {
			k++
		}
	}
	return k
}

// last returns the newest datagram since `since` that contains want ("" if none).
func (l *noteLog) last(want string, since time.Time) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.msgs) - 1; i >= 0; i-- {
		if m := l.msgs[i]; !m.at.Before(since) && strings.Contains(m.msg, want) {
			return m.msg
		}
	}
	return ""
}

// readyz returns a node's /readyz status code and body.
func readyz(t *testing.T, n *runNode) (int, ready) {
	t.Helper()
	code, body := get("http://" + n.http + "/readyz")
	var r ready
	if code != 0 {
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("%s /readyz: %d %q: %v", n.id, code, body, err)
		}
	}
	return code, r
}

type ready struct {
	Ready  bool              `json:"ready"`
	Checks map[string]string `json:"checks"`
}

func logOf(t *testing.T, n *runNode) string {
	t.Helper()
	b, err := os.ReadFile(n.log.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRunBeforeNATSAndThroughOutage: three `signerd run` processes start
// while their NATS server is not running yet. Each sends READY=1 (the
// process is up), a STATUS= saying it waits for NATS, keeps pinging the
// systemd watchdog and answers /healthz, while /readyz says not ready and
// why. Once NATS starts on its port every node becomes ready, and a keygen
// and signatures of both key types work. Then NATS stops for several
// watchdog intervals (WATCHDOG_USEC is 1 s): the pings go on, /readyz and
// STATUS= say NATS is down; with NATS back the nodes are ready again and
// sign.
func TestRunBeforeNATSAndThroughOutage(t *testing.T) {
	port := freePort(t)
	natsOpts := &server.Options{Port: port, StoreDir: t.TempDir()}
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	pc := newProcCluster(t, url)
	pc.dumpLogsOnFailure()
	notes := map[string]*noteLog{}
	t0 := time.Now()
	for _, id := range pc.ids {
		pc.start(pc.nodes[id])
		notes[id] = pc.collectNotes(pc.nodes[id])
	}

	// NATS not running: up (READY=1), pinging, serving /healthz, not ready.
	for _, id := range pc.ids {
		n, nl := pc.nodes[id], notes[id]
		waitUntil(t, time.Minute, id+" READY=1", func() bool { return nl.count("READY=1", t0) == 1 })
		waitUntil(t, 30*time.Second, id+" STATUS= waiting for NATS", func() bool {
			return nl.last("STATUS=node "+id+" not ready: nats: not connected", t0) != ""
		})
		if s := nl.last("STATUS=", t0); !strings.Contains(s, "node: starting: waiting for NATS") {
			t.Fatalf("%s STATUS while NATS is down: %q", id, s)
		}
		// Several watchdog intervals with NATS down, and the pings go on.
		pingsFrom := time.Now()
		waitUntil(t, 30*time.Second, id+" watchdog pings with NATS down", func() bool { return nl.count("WATCHDOG=1", pingsFrom) >= 6 })
		code, r := readyz(t, n)
		if code != 503 || r.Ready || !strings.HasPrefix(r.Checks["nats"], "not connected (RECONNECTING) since ") ||
			r.Checks["node"] != "starting: waiting for NATS" || r.Checks["hsm"] != "ok" {
			t.Fatalf("%s /readyz with NATS down: %d %+v", id, code, r)
		}
		if c, body := get("http://" + n.http + "/healthz"); c != 200 || body != "ok\n" {
			t.Fatalf("%s /healthz with NATS down: %d %q", id, c, body)
		}
	}
	downFor := time.Since(t0)
	for _, id := range pc.ids {
		// The connection's state changes are logged once each, not at
		// every retry (about one per natsReconnectWait).
		l := logOf(t, pc.nodes[id])
		if k := strings.Count(l, "NATS not connected at start"); k != 1 {
			t.Fatalf("%s logged %q %d times", id, "NATS not connected at start", k)
		}
		if k := strings.Count(l, "NATS connection attempt failed; retrying"); k != 1 {
			t.Fatalf("%s logged the failed connection attempts at warn level %d times in %s", id, k, downFor)
		}
	}

	srv := natstest.RunServerWithOptions(t, natsOpts)
	t.Logf("NATS started after %s", time.Since(t0).Round(time.Millisecond))
	t1 := time.Now()
	for _, id := range pc.ids {
		n, nl := pc.nodes[id], notes[id]
		waitUntil(t, 90*time.Second, id+" /readyz after NATS came up", func() bool { c, _ := readyz(t, n); return c == 200 })
		waitUntil(t, 10*time.Second, id+" STATUS= serving", func() bool { return nl.last("STATUS=node "+id+" serving", t1) != "" })
		if l := logOf(t, n); !strings.Contains(l, `"msg":"NATS connected"`) || !strings.Contains(l, "node running") {
			t.Fatalf("%s log lacks the connection or the node start:\n%s", id, l)
		}
	}
	t.Logf("nodes ready %s after NATS started", time.Since(t1).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl := pc.client(srv.ClientURL(), "svcA", nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	var res *protocol.Result
	var err error
	for attempt := 1; ; attempt++ {
		// A keygen needs every node in every node's readiness view.
		res, err = cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: "late"})
		var re *client.ResultError
		if err == nil || attempt == 3 || !errors.As(err, &re) || re.Code != protocol.CodeNodesNotReady {
			break
		}
		t.Logf("keygen, attempt %d: %v (retrying)", attempt, err)
		time.Sleep(time.Second)
	}
	if err != nil {
		t.Fatalf("keygen: %v", err)
	}
	signBoth(t, ctx, cl, res, "before")

	// A NATS outage of several watchdog intervals.
	srv.Shutdown()
	srv.WaitForShutdown()
	t2 := time.Now()
	for _, id := range pc.ids {
		n, nl := pc.nodes[id], notes[id]
		waitUntil(t, 30*time.Second, id+" not ready with NATS stopped", func() bool {
			c, r := readyz(t, n)
			return c == 503 && strings.HasPrefix(r.Checks["nats"], "not connected (RECONNECTING) since ")
		})
		waitUntil(t, 30*time.Second, id+" watchdog pings during the outage", func() bool {
			return nl.count("WATCHDOG=1", time.Now().Add(-4*time.Second)) >= 6 && time.Since(t2) > 4*time.Second
		})
		if s := nl.last("STATUS=", t2); !strings.Contains(s, "not ready: nats: not connected") {
			t.Fatalf("%s STATUS during the outage: %q", id, s)
		}
		if c, _ := get("http://" + n.http + "/healthz"); c != 200 {
			t.Fatalf("%s /healthz during the outage: %d", id, c)
		}
	}
	t.Logf("NATS down for %s; pings during it: %d, %d, %d", time.Since(t2).Round(time.Millisecond),
		notes["node0"].count("WATCHDOG=1", t2), notes["node1"].count("WATCHDOG=1", t2), notes["node2"].count("WATCHDOG=1", t2))
	for _, id := range pc.ids {
		if k := strings.Count(logOf(t, pc.nodes[id]), "NATS disconnected"); k != 1 {
			t.Fatalf("%s logged the disconnect %d times", id, k)
		}
	}

	srv = natstest.RunServerWithOptions(t, natsOpts)
	t3 := time.Now()
	for _, id := range pc.ids {
		n, nl := pc.nodes[id], notes[id]
		waitUntil(t, 90*time.Second, id+" /readyz after the outage", func() bool { c, _ := readyz(t, n); return c == 200 })
		waitUntil(t, 10*time.Second, id+" STATUS= serving after the outage", func() bool { return nl.last("STATUS=node "+id+" serving", t3) != "" })
		if l := logOf(t, n); !strings.Contains(l, "NATS reconnected") {
			t.Fatalf("%s log lacks the reconnection", id)
		}
	}
	t.Logf("nodes ready %s after NATS restarted", time.Since(t3).Round(time.Millisecond))
	signBoth(t, ctx, cl, res, "after")
	for _, id := range pc.ids {
		if pc.nodes[id].cmd.ProcessState != nil {
			t.Fatalf("%s exited", id)
		}
	}
}

// signBoth signs with both keys of res's wallet and checks the signatures.
// Right after a start or a NATS restart the nodes' readiness views may
// still differ: an attempt that fails with NODES_NOT_READY or TIMEOUT is
// retried.
func signBoth(t *testing.T, ctx context.Context, cl *client.Client, res *protocol.Result, tag string) {
	t.Helper()
	digest := sha256.Sum256([]byte("pay " + tag))
	ecPub, _ := hex.DecodeString(res.ECDSAPubKey)
	edPub, _ := hex.DecodeString(res.EdDSAPubKey)
	msg := []byte("message " + tag)
	for _, p := range []client.SignParams{
		{WalletID: res.WalletID, KeyType: protocol.KeyTypeSecp256k1, TxID: tag + "-ec", Tx: digest[:]},
		{WalletID: res.WalletID, KeyType: protocol.KeyTypeEd25519, TxID: tag + "-ed", Tx: msg},
	} {
		var sres *protocol.Result
		var err error
		for attempt := 1; ; attempt++ {
			actx, acancel := context.WithTimeout(ctx, 90*time.Second)
			sres, err = cl.SignAndWait(actx, p)
			acancel()
			var re *client.ResultError
			if err == nil || attempt == 4 || !errors.As(err, &re) || (re.Code != protocol.CodeNodesNotReady && re.Code != protocol.CodeTimeout) {
				break
			}
			t.Logf("%s sign %s, attempt %d: %v (retrying)", tag, p.KeyType, attempt, err)
			time.Sleep(time.Second)
		}
		if err != nil {
			t.Fatalf("%s sign %s: %v", tag, p.KeyType, err)
		}
		if p.KeyType == protocol.KeyTypeSecp256k1 {
			r, _ := hex.DecodeString(sres.R)
			s, _ := hex.DecodeString(sres.S)
			if err := client.VerifyECDSA(ecPub, digest[:], r, s, sres.SignatureRecovery); err != nil {
				t.Fatalf("%s ecdsa signature: %v", tag, err)
			}
		} else {
			sig, _ := hex.DecodeString(sres.Signature)
			if err := client.VerifyEd25519(edPub, msg, sig); err != nil {
				t.Fatalf("%s eddsa signature: %v", tag, err)
			}
		}
	}
}
