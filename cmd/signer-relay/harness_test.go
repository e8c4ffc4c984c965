package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/relay"
	"github.com/hwsigner/signer/signer/devcluster"
)

// The end-to-end tests of this package drive the real cobra commands in
// process (rootCmd().ExecuteContext with arguments), as an operator runs
// them: `signer-relay run --config`, `signer-relay dlq list|replay`.

// deadline is how long a test waits for a state it expects (a slow shared
// CI machine, never a fixed sleep).
const deadline = 45 * time.Second

// syncBuffer is a bytes.Buffer safe for the relay's logger writing while the
// test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// relayCmd is one `signer-relay run --config <path>` running in process.
type relayCmd struct {
	addr string // host:port of the HTTP listener
	logs *syncBuffer
	stop func()
}

// startRelayCmd writes config (YAML, listen 127.0.0.1:0) to dir and runs
// `signer-relay run --config` until the test ends; it returns once the
// listener's address is logged and, unless ready is nil, /readyz answers
// 200 (polled with ready and scheme).
func startRelayCmd(t *testing.T, dir, config string, ready *http.Client, scheme string) *relayCmd {
	t.Helper()
	path := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	rc := &relayCmd{logs: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan struct{})
	var runErr error // set before exited is closed
	cmd := rootCmd()
	cmd.SetArgs([]string{"run", "--config", path})
	cmd.SetOut(rc.logs)
	cmd.SetErr(rc.logs)
	go func() {
		runErr = cmd.ExecuteContext(ctx)
		close(exited)
	}()
	var once sync.Once
	rc.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-exited:
				if runErr != nil {
					t.Errorf("signer-relay run: %v", runErr)
				}
			case <-time.After(deadline):
				t.Errorf("signer-relay run did not stop within %s", deadline)
			}
		})
	}
	t.Cleanup(func() {
		rc.stop()
		if t.Failed() { // the relay logs no secret (the tests check)
			t.Logf("signer-relay log:\n%s", rc.logs)
		}
	})
	end := time.Now().Add(deadline)
	for rc.addr == "" {
		select {
		case <-exited:
			t.Fatalf("signer-relay run ended: %v", runErr)
		default:
		}
		for line := range strings.Lines(rc.logs.String()) {
			var l struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "signer-relay listening" {
				rc.addr = l.Addr
			}
		}
		if time.Now().After(end) {
			t.Fatalf("signer-relay run logged no listening address within %s:\n%s", deadline, rc.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for ready != nil {
		select {
		case <-exited:
			t.Fatalf("signer-relay run ended: %v", runErr)
		default:
		}
		resp, err := ready.Get(scheme + "://" + rc.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return rc
			}
		}
		if time.Now().After(end) {
			t.Fatalf("relay not ready within %s (last: %v)", deadline, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return rc
}

// cli runs one signer-relay command line in process and returns its output.
func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// dlqList runs `signer-relay dlq list --json` (of one client if given).
func dlqList(t *testing.T, config string, client string) []relay.DeadLetter {
	t.Helper()
	args := []string{"dlq", "list", "--config", config, "--json"}
	if client != "" {
		args = append(args, "--client", client)
	}
	out, err := cli(t, args...)
	if err != nil {
		t.Fatalf("signer-relay %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var dls []relay.DeadLetter
	if err := json.Unmarshal([]byte(out), &dls); err != nil || dls == nil {
		t.Fatalf("dlq list --json: %q (%v), want a JSON array", out, err)
	}
	return dls
}

// writeFile writes content (mode 0600) into dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// pkix64 is a public key as base64 PKIX, a form the relay's config takes
// for client and node keys alike.
func pkix64(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

// testPKI is a self-signed CA, a server certificate it issued for
// 127.0.0.1, ::1 and localhost and a client certificate (for NATS mutual
// TLS), as PEM files in a directory.
type testPKI struct {
	CAFile, CertFile, KeyFile string
	ClientCertFile, ClientKey string
	Pool                      *x509.CertPool
	Cert                      tls.Certificate
	caCert                    *x509.Certificate
	caKey                     *ecdsa.PrivateKey
}

func newTestPKI(t *testing.T, dir string) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "signer-relay test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{caKey: caKey, Pool: x509.NewCertPool()}
	if p.caCert, err = x509.ParseCertificate(caDER); err != nil {
		t.Fatal(err)
	}
	p.Pool.AddCert(p.caCert)
	p.CAFile = writeFile(t, dir, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})))
	p.CertFile, p.KeyFile = p.issue(t, dir, "server", &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	})
	p.ClientCertFile, p.ClientKey = p.issue(t, dir, "client", &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: "signer-relay"},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if p.Cert, err = tls.LoadX509KeyPair(p.CertFile, p.KeyFile); err != nil {
		t.Fatal(err)
	}
	return p
}

// issue signs a certificate (a fresh P-256 key) with the CA and writes
// name.pem and name.key.
func (p *testPKI) issue(t *testing.T, dir, name string, tmpl *x509.Certificate) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, name+".pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))),
		writeFile(t, dir, name+".key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
}

// cluster is a real signer cluster (embedded NATS JetStream, three nodes on
// SoftHSM2 tokens, two must sign: signer/devcluster, as the relay's own
// end-to-end tests) and the request-signing keys of its clients.
type cluster struct {
	c    *devcluster.Cluster
	keys map[string]ed25519.PrivateKey
}

func startCluster(t *testing.T, clientIDs ...string) *cluster {
	t.Helper()
	testhsm.Setup(t)
	cl := &cluster{keys: map[string]ed25519.PrivateKey{}}
	var pcfg policy.Config
	for _, id := range clientIDs {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		cl.keys[id] = k
		pem, err := keyfile.MarshalPublicKeyPEM(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		pcfg.Clients = append(pcfg.Clients, policy.ClientConfig{Name: id, PublicKey: pem, ClientIDs: []string{id}, Ops: []string{"keygen", "sign"}})
	}
	pol, err := policy.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var mu sync.Mutex
	uris := map[string]string{}
	c, err := devcluster.Start(ctx, devcluster.Options{
		Dir: t.TempDir(), Nodes: 3, Signers: 2,
		TokenURI: func(id string) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			if uris[id] == "" {
				uris[id] = testhsm.Token(t, "relaycmd")
			}
			return uris[id], nil
		},
		Policy: pol, TestPreParams: fixtures.PreParams(t),
		SignTimeout: deadline, KeygenTimeout: deadline,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	cl.c = c
	return cl
}

// clusterYAML is the relay's cluster section for node keys (2 must sign).
func clusterYAML(t *testing.T, keys map[string]crypto.PublicKey) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("cluster:\n  signers: 2\n  peers:\n")
	for _, id := range slices.Sorted(maps.Keys(keys)) {
		fmt.Fprintf(&b, "    %s: %q\n", id, pkix64(t, keys[id]))
	}
	return b.String()
}

// clientYAML is the start of a client's section (under clients:): its
// token file and request-signing public key.
func clientYAML(t *testing.T, dir, id, token string, pub crypto.PublicKey) string {
	t.Helper()
	return fmt.Sprintf("  %s:\n    token_source: \"file:%s\"\n    public_keys: [%q]\n", id, writeFile(t, dir, id+".token", token+"\n"), pkix64(t, pub))
}

// signedRequest returns a signed keygen (walletID, ed25519) or signing
// request of clientID, as the Go client builds it.
func (cl *cluster) signedRequest(t *testing.T, op, clientID, walletID string) (raw []byte, requestID string) {
	t.Helper()
	requestID = randHex(16)
	env := protocol.Envelope{ClientID: clientID, RequestID: requestID}
	var req interface {
		SetTimes(time.Time, time.Duration)
	}
	switch op {
	case protocol.OpKeygen:
		req = &protocol.KeygenRequest{Envelope: env, WalletID: walletID, KeyTypes: []string{protocol.KeyTypeEd25519}}
	case protocol.OpSign:
		req = &protocol.SigningRequest{Envelope: env, WalletID: walletID, KeyType: protocol.KeyTypeEd25519,
			TxID: "tx-" + requestID[:8], Tx: []byte("pay " + requestID)}
	default:
		t.Fatalf("op %s", op)
	}
	req.SetTimes(time.Now(), 5*time.Minute)
	raw, err := protocol.SignRequest(context.Background(), cl.keys[clientID], op, req)
	if err != nil {
		t.Fatal(err)
	}
	return raw, requestID
}

// polledItem is one long-poll item: a delivery and its cursor.
type polledItem struct {
	Cursor   uint64
	Delivery []byte // {"result","attestations"[,"nodes"]}, without the cursor
	Result   *protocol.Result
}

// longPoll returns the client's results after cursor (GET /v1/results),
// each verified with relay.VerifyDelivery.
func longPoll(t *testing.T, hc *http.Client, base, token string, after uint64, wait string, nodeKeys map[string]crypto.PublicKey) ([]polledItem, uint64) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/v1/results?after=%d&wait=%s", base, after, wait), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("long poll: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("long poll: %d %s", resp.StatusCode, b)
	}
	var ans struct {
		Results []struct {
			Cursor uint64 `json:"cursor"`
			relay.Delivery
		} `json:"results"`
		NextCursor uint64 `json:"next_cursor"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		t.Fatal(err)
	}
	var items []polledItem
	for _, r := range ans.Results {
		d, err := json.Marshal(r.Delivery)
		if err != nil {
			t.Fatal(err)
		}
		res, err := relay.VerifyDelivery(d, nodeKeys, rules(nodeKeys))
		if err != nil {
			t.Fatalf("long-poll item %d: %v", r.Cursor, err)
		}
		items = append(items, polledItem{Cursor: r.Cursor, Delivery: d, Result: res})
	}
	return items, ans.NextCursor
}

// waitResult long-polls until the decision of requestID arrives.
func waitResult(t *testing.T, hc *http.Client, base, token, requestID string, nodeKeys map[string]crypto.PublicKey) polledItem {
	t.Helper()
	var cursor uint64
	end := time.Now().Add(deadline)
	for time.Now().Before(end) {
		items, next := longPoll(t, hc, base, token, cursor, "5s", nodeKeys)
		for _, it := range items {
			if it.Result.RequestID == requestID {
				return it
			}
		}
		cursor = next
	}
	t.Fatalf("no decision for request %s within %s", requestID, deadline)
	return polledItem{}
}

// rules are the attestation rules of a 2-of-n cluster with these nodes.
func rules(nodeKeys map[string]crypto.PublicKey) attest.Rules {
	return attest.Rules{Nodes: slices.Sorted(maps.Keys(nodeKeys)), Signers: 2}
}

// submit POSTs a signed request to the relay and wants 202.
func submit(t *testing.T, hc *http.Client, url, token string, raw []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, b)
	}
}

// metric returns the value of one Prometheus sample line of the relay (0 if
// absent).
func metric(t *testing.T, hc *http.Client, base, sample string) float64 {
	t.Helper()
	resp, err := hc.Get(base + "/metrics")
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
