package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/hsm"
	hsmuri "github.com/hwsigner/signer/hsm/uri"
	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
	"github.com/hwsigner/signer/signer/node"
	"github.com/hwsigner/signer/signer/store"
)

func buildSignerd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "signerd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type runNode struct {
	id, cfgPath, http string
	cmd               *exec.Cmd
	notify            *net.UnixConn
	log               *os.File
}

// procCluster is a cluster of `signerd run` processes on SoftHSM2 tokens,
// for one NATS server; clients svcA and svcB are in the policy.
type procCluster struct {
	t       *testing.T
	bin     string
	dir     string
	ids     []string
	nodes   map[string]*runNode
	peers   map[string]string // PEM identity keys
	clients map[string]ed25519.PrivateKey
	// clientTTL, when set, is the request TTL of the clients pc.client
	// makes: it is also how long a client holds a callback request that
	// its nodes' results do not decide before it decides TIMEOUT.
	clientTTL time.Duration
}

func newProcCluster(t *testing.T, natsURL string) *procCluster {
	return newProcClusterTimeout(t, natsURL, "60s", 1)
}

// newProcClusterTimeout sets the nodes' sign_timeout and nats.replicas.
func newProcClusterTimeout(t *testing.T, natsURL, signTimeout string, replicas int) *procCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pc := &procCluster{t: t, bin: buildSignerd(t), dir: t.TempDir(), ids: []string{"node0", "node1", "node2"},
		nodes: map[string]*runNode{}, peers: map[string]string{}, clients: map[string]ed25519.PrivateKey{}}
	pre := fixtures.PreParams(t)
	uris := map[string]string{}
	for i, id := range pc.ids {
		u := testhsm.Token(t, "run") // SOFTHSM2_CONF is inherited by the processes
		if err := hsmuri.Init(ctx, u, nil); err != nil {
			t.Fatal(err)
		}
		b, err := hsmuri.Open(ctx, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		idk, err := b.Identity(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pem, _ := keyfile.MarshalPublicKeyPEM(idk.Public())
		pc.peers[id], uris[id] = pem, u
		// A pre-params pool that is already full (public fixtures: tests only),
		// so that the nodes do not spend minutes on safe primes.
		st, err := store.Open(filepath.Join(pc.dir, id+".db"), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for k := 0; k < 3; k++ { // one more than the pool target: no generation after a keygen
			if err := node.AddPreParams(ctx, hsm.NewSealer(b), st, id, pre[(2*i+k)%len(pre)]); err != nil {
				t.Fatal(err)
			}
		}
		_ = st.Close()
		_ = b.Close()
	}
	var pol strings.Builder
	pol.WriteString("clients:\n")
	for _, name := range []string{"svcA", "svcB"} {
		cpub, cpriv, _ := ed25519.GenerateKey(rand.Reader)
		cpem, _ := keyfile.MarshalPublicKeyPEM(cpub)
		pc.clients[name] = cpriv
		fmt.Fprintf(&pol, "  - name: %s\n    public_key: |\n%s    client_ids: [%s]\n    ops: [keygen, sign]\n", name, indent(cpem, "      "), name)
		if name == "svcB" {
			// The chaos tests sign svcA's wallet from both clients.
			pol.WriteString("    wallet_grants: [{owner: svcA, wallets: [chaos]}]\n")
		}
	}
	policy := filepath.Join(pc.dir, "clients.yaml")
	writeFile(t, policy, pol.String())
	for _, id := range pc.ids {
		n := &runNode{id: id, http: freeAddr(t), cfgPath: filepath.Join(pc.dir, id+".yaml")}
		var pb strings.Builder
		for _, p := range pc.ids {
			fmt.Fprintf(&pb, "  %s: |\n%s", p, indent(pc.peers[p], "    "))
		}
		writeFile(t, n.cfgPath, fmt.Sprintf(`node_id: %s
nats: {url: %q, replicas: %d}
http: {listen: %q}
key_uri: %q
store_path: %s
threshold: 2
peers:
%spolicy_file: %s
sign_timeout: %s
keygen_timeout: 2m
drain_timeout: 30s
`, id, natsURL, replicas, n.http, uris[id], filepath.Join(pc.dir, id+".db"), pb.String(), policy, signTimeout))
		pc.nodes[id] = n
	}
	return pc
}

// start launches a node process, with a systemd notify socket and a 1 s
// watchdog; it is killed when the test ends.
func (pc *procCluster) start(n *runNode) {
	t := pc.t
	sock := filepath.Join(pc.dir, n.id+".notify")
	_ = os.Remove(sock)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n.notify = conn
	n.log, _ = os.OpenFile(filepath.Join(pc.dir, n.id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	n.cmd = exec.Command(pc.bin, "run", "--config", n.cfgPath, "--log-level", "debug")
	n.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=1000000")
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := n.cmd
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
}

// dumpLogsOnFailure prints every node's log if the test failed.
func (pc *procCluster) dumpLogsOnFailure() {
	pc.t.Cleanup(func() {
		if dir := os.Getenv("SIGNER_TEST_LOGS"); dir != "" { // keep every node's log, e.g. of a chaos run
			for _, id := range pc.ids {
				b, _ := os.ReadFile(filepath.Join(pc.dir, id+".log"))
				_ = os.WriteFile(filepath.Join(dir, pc.t.Name()+"-"+id+".log"), b, 0o600)
			}
		}
		if !pc.t.Failed() {
			return
		}
		for _, id := range pc.ids {
			b, _ := os.ReadFile(filepath.Join(pc.dir, id+".log"))
			pc.t.Logf("%s log:\n%s", id, b)
		}
	})
}

// notes waits for an sd_notify message containing want.
func (pc *procCluster) notes(n *runNode, want string, d time.Duration) string {
	buf := make([]byte, 4096)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		_ = n.notify.SetReadDeadline(deadline)
		k, err := n.notify.Read(buf)
		if err != nil {
			break
		}
		if msg := string(buf[:k]); strings.Contains(msg, want) {
			return msg
		}
	}
	pc.t.Fatalf("%s: no %q from sd_notify", n.id, want)
	return ""
}

// client connects a client of the policy.
func (pc *procCluster) client(natsURL, name string, opts ...nats.Option) *client.Client {
	t := pc.t
	nc, err := nats.Connect(natsURL, append([]nats.Option{nats.CustomInboxPrefix("_INBOX_" + name)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	nodeKeys := map[string]crypto.PublicKey{}
	for id, p := range pc.peers {
		if nodeKeys[id], err = keyfile.ParsePublicKey(p); err != nil {
			t.Fatal(err)
		}
	}
	copts := []client.Option{client.WithClientID(name), client.WithNodeKeys(nodeKeys)}
	if pc.clientTTL > 0 {
		copts = append(copts, client.WithRequestTTL(pc.clientTTL))
	}
	cl, err := client.New(nc, pc.clients[name], copts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// TestRunThreeProcesses runs three `signerd run` processes (SoftHSM2 tokens,
// one NATS server with JetStream) as an operator would: each becomes ready
// (systemd READY=1 and /readyz), creates a wallet and signs with both key
// types, exports Prometheus metrics, pings the systemd watchdog, and stops
// gracefully on SIGTERM (exit 0, STOPPING=1, leaves the ready set).
func TestRunThreeProcesses(t *testing.T) {
	srv := natstest.RunServer(t)
	pc := newProcCluster(t, srv.ClientURL())
	pc.dumpLogsOnFailure()
	ids, nodes := pc.ids, pc.nodes
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, id := range ids {
		pc.start(nodes[id])
	}
	for _, id := range ids {
		n := nodes[id]
		pc.notes(n, "READY=1", time.Minute)
		waitUntil(t, 30*time.Second, id+" /readyz", func() bool { c, _ := get("http://" + n.http + "/readyz"); return c == 200 })
		if c, body := get("http://" + n.http + "/healthz"); c != 200 || body != "ok\n" {
			t.Fatalf("%s /healthz: %d %q", id, c, body)
		}
		pc.notes(n, "WATCHDOG=1", 10*time.Second)
	}
	cl := pc.client(srv.ClientURL(), "svcA")
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	res, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: "w1"})
	if err != nil {
		t.Fatalf("keygen: %v", err)
	}
	digest := sha256.Sum256([]byte("pay"))
	sres, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "w1", KeyType: "secp256k1", TxID: "t1", Tx: digest[:]})
	if err != nil {
		t.Fatalf("ecdsa sign: %v", err)
	}
	ecPub, _ := hex.DecodeString(res.ECDSAPubKey)
	r, _ := hex.DecodeString(sres.R)
	s, _ := hex.DecodeString(sres.S)
	if err := client.VerifyECDSA(ecPub, digest[:], r, s, sres.SignatureRecovery); err != nil {
		t.Fatalf("ecdsa signature: %v", err)
	}
	eres, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "w1", KeyType: "ed25519", TxID: "t2", Tx: []byte{0, 1, 2}})
	if err != nil {
		t.Fatalf("eddsa sign: %v", err)
	}
	edPub, _ := hex.DecodeString(res.EdDSAPubKey)
	esig, _ := hex.DecodeString(eres.Signature)
	if err := client.VerifyEd25519(edPub, []byte{0, 1, 2}, esig); err != nil {
		t.Fatalf("eddsa signature: %v", err)
	}

	// Metrics: every node ran both keygens; the signers' counters and HSM
	// timings moved. (A signer counts its ceremony as it finishes, which can
	// be just after the client has the first result.)
	scrape := func(id string) string { _, m := get("http://" + nodes[id].http + "/metrics"); return m }
	waitUntil(t, 10*time.Second, "4 successful sign ceremonies in the metrics", func() bool {
		// Ceremonies only: signer_requests_finished_total counts a node's
		// signatures of both key types on one line, so it is 1 or 2
		// depending on which nodes were chosen.
		signs := 0
		for _, id := range ids {
			for _, l := range strings.Split(scrape(id), "\n") {
				if strings.HasPrefix(l, "signer_ceremonies_total{") && strings.HasSuffix(l, `op="sign",outcome="success"} 1`) {
					signs++
				}
			}
		}
		return signs == 4 // 2 signers x 2 signatures
	})
	for _, id := range ids {
		m := scrape(id)
		for _, want := range []string{
			`signer_ceremonies_total{key_type="secp256k1",op="keygen",outcome="success"} 1`,
			`signer_ceremonies_total{key_type="ed25519",op="keygen",outcome="success"} 1`,
			`signer_requests_total{op="keygen",outcome="accepted"} 1`,
			`signer_hsm_operation_duration_seconds_count{backend="pkcs11",op="wrap"}`,
			`signer_hsm_operation_duration_seconds_count{backend="pkcs11",op="sign"}`,
			`signer_sessions_active 0`,
			`signer_preparams_pool_depth 2`,
		} {
			if !strings.Contains(m, want) {
				t.Fatalf("%s /metrics lacks %s", id, want)
			}
		}
	}

	// Graceful stop: SIGTERM -> STOPPING=1, not ready, exit 0.
	n2 := nodes["node2"]
	if err := n2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	pc.notes(n2, "STOPPING=1", 10*time.Second)
	done := make(chan error, 1)
	go func() { done <- n2.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("node2 exit after SIGTERM: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("node2 did not stop within 40 s of SIGTERM")
	}
	b, _ := os.ReadFile(n2.log.Name())
	if !bytesContains(b, "every running session finished") {
		t.Fatalf("node2 did not drain:\n%s", b)
	}
	// With node2 gone (its readiness entry deleted on the way out), 2-of-3
	// signing still works on the other two.
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, routing.ReadyBucket)
	if err != nil {
		t.Fatal(err)
	}
	if ready, err := routing.ReadyNodes(ctx, kv); err != nil || strings.Join(ready, ",") != "node0,node1" {
		t.Fatalf("ready set after node2 stopped: %v %v", ready, err)
	}
	// A node whose readiness view still lags may pick node2: the nodes then
	// see that their signer sets differ, or node2 does not answer the
	// handshake, and answer NODES_NOT_READY within seconds (not after the
	// session deadline); a retry succeeds.
	for attempt := 1; ; attempt++ {
		t0 := time.Now()
		_, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "w1", KeyType: "ed25519", TxID: "t3", Tx: []byte("x")})
		if err == nil {
			break
		}
		var re *client.ResultError
		if !errors.As(err, &re) || re.Code != protocol.CodeNodesNotReady || attempt == 3 {
			t.Fatalf("sign with node2 stopped, attempt %d: %v", attempt, err)
		}
		if d := time.Since(t0); d > 20*time.Second {
			t.Fatalf("NODES_NOT_READY took %s to report", d)
		}
		t.Logf("attempt %d: %v (retrying)", attempt, err)
	}
}

func bytesContains(b []byte, s string) bool { return strings.Contains(string(b), s) }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func indent(s, prefix string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		b.WriteString(prefix + sc.Text() + "\n")
	}
	return b.String()
}
