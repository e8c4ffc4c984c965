package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
)

// answeringNode stands in for a signer node: it records the envelope of
// every request it consumes and, when code is set, answers each with that
// error, signed with its identity key; else it stays silent (a frozen
// node).
type answeringNode struct {
	id   string
	key  *ecdsa.PrivateKey
	code string

	mu   sync.Mutex
	seen []protocol.Envelope
}

func (n *answeringNode) start(t *testing.T, ctx context.Context, js jetstream.JetStream) {
	t.Helper()
	cons, err := routing.NodeConsumer(ctx, js, n.id)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		defer func() { _ = m.Ack() }()
		op, _, err := routing.ParseRequestSubject(m.Subject())
		if err != nil {
			return
		}
		req, err := protocol.DecodeRequest(op, m.Data())
		if err != nil {
			return
		}
		n.mu.Lock()
		n.seen = append(n.seen, *req.Env())
		n.mu.Unlock()
		if n.code == "" {
			return
		}
		res := protocol.NewResult(req)
		res.SetError(n.code, "answered by the test's "+n.id)
		raw, err := protocol.SignResult(ctx, n.key, n.id, res)
		if err != nil {
			return
		}
		subject, _ := routing.ResultSubject(res)
		_, _ = js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: raw},
			jetstream.WithMsgID(routing.ResultMsgID(res.ClientID, res.RequestID, n.id, raw)))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}

func (n *answeringNode) requests() []protocol.Envelope {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.seen)
}

// waitRequests polls until n has consumed at least one request and returns
// what it consumed.
func (n *answeringNode) waitRequests(t *testing.T) []protocol.Envelope {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(n.requests()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s consumed no request", n.id)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return n.requests()
}

// decisionCluster is an embedded NATS with the streams and a cluster file
// naming three nodes (node0..node2) and a client key bound to nothing: the
// test's nodes answer without a policy.
type decisionCluster struct {
	url, clusterFile string
	js               jetstream.JetStream
	ctx              context.Context
	keys             map[string]*ecdsa.PrivateKey
}

func newDecisionCluster(t *testing.T) *decisionCluster {
	t.Helper()
	srv := natstest.RunServer(t)
	_, js := natstest.JetStream(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	if err := routing.EnsureStreams(ctx, js, routing.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	keyPath := filepath.Join(dir, "client.key")
	writeTestFile(t, keyPath, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	dc := &decisionCluster{url: srv.ClientURL(), js: js, ctx: ctx, keys: map[string]*ecdsa.PrivateKey{}}
	cf := clusterFile{NATSURL: dc.url, ClientKey: keyPath, Peers: map[string]string{}, Threshold: 2}
	for _, id := range []string{"node0", "node1", "node2"} {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		dc.keys[id] = k
		cf.Peers[id], _ = keyfile.MarshalPublicKeyPEM(k.Public())
	}
	b, _ := json.Marshal(cf)
	dc.clusterFile = filepath.Join(dir, "cluster.json")
	writeTestFile(t, dc.clusterFile, string(b))
	return dc
}

// nodes starts node0..node2; answers[id] is the error code node id answers
// ("" or absent: silent).
func (dc *decisionCluster) nodes(t *testing.T, answers map[string]string) []*answeringNode {
	t.Helper()
	var out []*answeringNode
	for _, id := range []string{"node0", "node1", "node2"} {
		n := &answeringNode{id: id, key: dc.keys[id], code: answers[id]}
		n.start(t, dc.ctx, dc.js)
		out = append(out, n)
	}
	return out
}

// signerctl runs the command in-process; stdout is what it printed there.
func signerctl(ctx context.Context, args ...string) (stdout string, err error) {
	var out bytes.Buffer
	root := rootCmd()
	root.SetOut(&out)
	root.SetErr(io.Discard)
	root.SetArgs(args)
	err = root.ExecuteContext(ctx)
	return out.String(), err
}

// --ttl sets the request TTL (default: --timeout, never longer); a failed
// or TIMEOUT decision fails the command and, with --json, is printed on
// stdout as an error object naming what each node reported; a TIMEOUT is
// reported only once the request has expired (plus the grace).
func TestRequestTTLAndJSONErrors(t *testing.T) {
	grace := expiryGrace
	t.Cleanup(func() { expiryGrace = grace }) // after the parallel subtests
	expiryGrace = 300 * time.Millisecond
	sign := []string{"sign", "--wallet", "w1", "--key-type", "ed25519", "--message", "00ff"}
	tests := []struct {
		name      string
		flags     []string // global flags
		cmd       []string
		answers   map[string]string
		wantTTL   time.Duration
		wantCode  string
		wantNodes []string
	}{
		{"sign, no node answers: TIMEOUT at the expiry", []string{"--ttl", "1500ms", "--timeout", "1m"}, sign, nil,
			1500 * time.Millisecond, protocol.CodeTimeout, nil},
		{"sign, no node answers, no --ttl: TIMEOUT once --timeout expired", []string{"--timeout", "1500ms"}, sign, nil,
			1500 * time.Millisecond, protocol.CodeTimeout, nil},
		{"sign, one node's error: TIMEOUT with it as evidence", []string{"--ttl", "1500ms"}, sign,
			map[string]string{"node1": protocol.CodeNodesNotReady}, 1500 * time.Millisecond, protocol.CodeTimeout, []string{"node1"}},
		{"sign, t+1 errors: the attested error", []string{"--timeout", "30s"}, sign,
			map[string]string{"node0": protocol.CodeUnknownWallet, "node2": protocol.CodeUnknownWallet}, 30 * time.Second,
			protocol.CodeUnknownWallet, []string{"node0", "node2"}},
		{"wallet create, the TTL is --timeout", []string{"--timeout", "1500ms"}, []string{"wallet", "create", "--wallet", "w2"},
			map[string]string{"node0": protocol.CodeWalletExists}, 1500 * time.Millisecond, protocol.CodeWalletExists, []string{"node0"}},
		{"reshare, no node answers", []string{"--ttl", "1s", "--timeout", "5s"},
			[]string{"reshare", "--wallet", "w1", "--key-type", "ed25519", "--nodes", "node0,node1", "--threshold", "2", "--session-id", "s1"},
			nil, time.Second, protocol.CodeTimeout, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dc := newDecisionCluster(t)
			nodes := dc.nodes(t, tc.answers)
			args := append([]string{"--cluster", dc.clusterFile, "--client-id", "ops", "--json"}, tc.flags...)
			start := time.Now()
			out, err := signerctl(dc.ctx, append(args, tc.cmd...)...)
			took := time.Since(start)
			if err == nil {
				t.Fatalf("the command succeeded: %s", out)
			}
			reqs := nodes[0].waitRequests(t)
			if len(reqs) != 1 {
				t.Fatalf("%d requests published, want 1", len(reqs))
			}
			env := reqs[0]
			if ttl := time.Duration(env.ExpiresAt-env.CreatedAt) * time.Millisecond; ttl != tc.wantTTL {
				t.Fatalf("request TTL %s, want %s", ttl, tc.wantTTL)
			}
			var rep errorReport
			dec := json.NewDecoder(strings.NewReader(out))
			if err := dec.Decode(&rep); err != nil || dec.More() {
				t.Fatalf("stdout %q: %v; want one JSON object", out, err)
			}
			got := slices.Sorted(maps.Keys(rep.Nodes))
			if rep.ResultType != protocol.ResultError || rep.ErrorCode != tc.wantCode || rep.RequestID != env.RequestID ||
				rep.Op != env.Op || rep.WalletID == "" || !slices.Equal(got, tc.wantNodes) || rep.Nodes == nil ||
				rep.IsTimeout != (tc.wantCode == protocol.CodeTimeout) || !strings.Contains(err.Error(), tc.wantCode) {
				t.Fatalf("error object %+v (err %v)", rep, err)
			}
			for _, n := range tc.wantNodes {
				if !strings.Contains(rep.Nodes[n], tc.answers[n]) {
					t.Fatalf("%s reported %q, want %s", n, rep.Nodes[n], tc.answers[n])
				}
			}
			if exp, _ := time.Parse(time.RFC3339Nano, rep.ExpiresAt); !exp.Equal(env.Expires()) {
				t.Fatalf("expires_at %q, the request's %s", rep.ExpiresAt, env.Expires())
			}
			if tc.wantCode == protocol.CodeTimeout {
				// Reported once the request had expired for the nodes,
				// plus the grace, by the client; not at the backstop's
				// deadline.
				if !rep.Expired || time.Now().Before(env.Expires().Add(expiryGrace)) || errors.Is(err, context.DeadlineExceeded) ||
					len(tc.wantNodes) == 0 && !strings.Contains(rep.ErrorReason, "no node answered") {
					t.Fatalf("TIMEOUT after %s (TTL %s): %+v", took, tc.wantTTL, rep)
				}
			} else if rep.Expired || rep.IsTimeout {
				t.Fatalf("an attested error reported as expired: %+v", rep)
			}
		})
	}
}

// --ttl longer than --timeout, or not positive, and a --timeout not
// positive are refused before anything is sent; the help text names --ttl.
func TestTTLFlagChecked(t *testing.T) {
	defer func(g time.Duration) { expiryGrace = g }(expiryGrace)
	expiryGrace = 300 * time.Millisecond
	dc := newDecisionCluster(t)
	nodes := dc.nodes(t, nil)
	for _, flags := range [][]string{{"--ttl", "2m", "--timeout", "1m"}, {"--ttl", "-1s"}, {"--timeout", "0s"}} {
		args := append([]string{"--cluster", dc.clusterFile, "--client-id", "ops", "--json"}, flags...)
		out, err := signerctl(dc.ctx, append(args, "sign", "--wallet", "w1", "--key-type", "ed25519", "--message", "00")...)
		if err == nil || !strings.Contains(err.Error(), flags[0]) || out != "" {
			t.Fatalf("%v: %q, %v", flags, out, err)
		}
	}
	// Nothing was sent: the one request the node sees is the next one.
	if _, err := signerctl(dc.ctx, "--cluster", dc.clusterFile, "--client-id", "ops", "--timeout", "300ms", "--json",
		"sign", "--wallet", "w1", "--key-type", "ed25519", "--message", "00"); err == nil {
		t.Fatal("a sign nobody answered succeeded")
	}
	if reqs := nodes[0].waitRequests(t); len(reqs) != 1 {
		t.Fatalf("%d requests reached the nodes, want 1 (the refused ones must not)", len(reqs))
	}
	help, err := signerctl(dc.ctx, "--help")
	if err != nil || !strings.Contains(help, "--ttl duration") || !strings.Contains(help, "expired") {
		t.Fatalf("help: %v\n%s", err, help)
	}
}

// Through the binary: a failed decision exits 1 and prints the error
// object, alone, on stdout.
func TestJSONErrorExitStatus(t *testing.T) {
	bin := buildCLI(t)
	dc := newDecisionCluster(t)
	dc.nodes(t, map[string]string{"node0": protocol.CodeUnknownWallet, "node1": protocol.CodeUnknownWallet})
	out, stderr, err := run(t, nil, bin, "--cluster", dc.clusterFile, "--client-id", "ops", "--json", "--timeout", "30s",
		"sign", "--wallet", "w1", "--key-type", "ed25519", "--message", "00")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr, protocol.CodeUnknownWallet) {
		t.Fatalf("exit %v, stderr %q", err, stderr)
	}
	var rep errorReport
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(&rep); err != nil || dec.More() || rep.ErrorCode != protocol.CodeUnknownWallet || len(rep.Nodes) != 2 {
		t.Fatalf("stdout %q: %v", out, err)
	}
}
