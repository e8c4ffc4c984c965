package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/relay"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
)

// nodes plays the three nodes of a 2-of-3 cluster on a bare JetStream (as
// relay/collect_test.go does): each result is signed with the node's
// identity key and published like signerd publishes it, so the relay
// attests it exactly as a real node's.
type nodes struct {
	js   jetstream.JetStream
	keys map[string]crypto.Signer
	pubs map[string]crypto.PublicKey
}

func newNodes(js jetstream.JetStream) *nodes {
	n := &nodes{js: js, keys: map[string]crypto.Signer{}, pubs: map[string]crypto.PublicKey{}}
	for _, id := range []string{"node0", "node1", "node2"} {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		n.keys[id], n.pubs[id] = k, k.Public()
	}
	return n
}

func (n *nodes) publish(t *testing.T, node string, res protocol.Result) {
	t.Helper()
	raw, err := protocol.SignResult(context.Background(), n.keys[node], node, &res)
	if err != nil {
		t.Fatal(err)
	}
	subj, err := routing.ResultSubject(&res)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if _, err := n.js.Publish(ctx, subj, raw, jetstream.WithMsgID(routing.ResultMsgID(res.ClientID, res.RequestID, node, raw))); err != nil {
		t.Fatal(err)
	}
}

// TestRelayOverTLS runs `signer-relay run` with tls.cert_file/key_file (a
// CA and server certificate made here): a backend trusting the CA gets a
// verified delivery over https by SSE and by long polling; plain http to
// the TLS port (logged in the relay's JSON log) and https without the CA
// get nothing. With NATS over TLS (nats.tls.ca_file, plus cert_file and
// key_file for mutual TLS) against a NATS server started with the same CA,
// the relay and `signer-relay dlq list` work end to end too, while the
// server refuses connections without TLS or without the client
// certificate. A relay that cannot connect (it trusts another CA, or lacks
// the client certificate) stays unready and logs why. Stopping the relay
// ends an open SSE stream at once.
func TestRelayOverTLS(t *testing.T) {
	cases := []struct {
		name     string
		natsTLS  bool   // the NATS server requires TLS
		natsMTLS bool   // ...and a client certificate
		relayCA  string // the relay's nats.tls.ca_file: "test", "other" (another CA) or "" (none)
		relayMTL bool   // the relay has nats.tls.cert_file/key_file
		// refused: the relay cannot connect; its log says this, /readyz
		// stays 503.
		refused string
	}{
		{name: "https, NATS plain"},
		{name: "https, NATS over TLS", natsTLS: true, relayCA: "test"},
		{name: "https, NATS mutual TLS", natsTLS: true, natsMTLS: true, relayCA: "test", relayMTL: true},
		{name: "NATS over TLS, the relay trusts another CA", natsTLS: true, relayCA: "other",
			refused: "certificate signed by unknown authority"},
		{name: "NATS mutual TLS, the relay has no client certificate", natsTLS: true, natsMTLS: true, relayCA: "test",
			refused: "certificate required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			pki := newTestPKI(t, dir)
			opts := &server.Options{}
			var natsOpts []nats.Option
			if c.natsTLS {
				opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pki.Cert}, MinVersion: tls.VersionTLS12}
				opts.TLSTimeout = deadline.Seconds()
				natsOpts = append(natsOpts, nats.RootCAs(pki.CAFile))
				if c.natsMTLS {
					opts.TLSConfig.ClientCAs, opts.TLSConfig.ClientAuth = pki.Pool, tls.RequireAndVerifyClientCert
					opts.TLSVerify = true
					natsOpts = append(natsOpts, nats.ClientCert(pki.ClientCertFile, pki.ClientKey))
				}
			}
			natsYAML := ""
			switch c.relayCA {
			case "test":
				natsYAML = "  tls:\n    ca_file: \"" + pki.CAFile + "\"\n"
			case "other":
				natsYAML = "  tls:\n    ca_file: \"" + newTestPKI(t, t.TempDir()).CAFile + "\"\n"
			}
			if c.relayMTL {
				natsYAML += "    cert_file: \"" + pki.ClientCertFile + "\"\n    key_file: \"" + pki.ClientKey + "\"\n"
			}
			srv := natstest.RunServerWithOptions(t, opts)
			// nats:// and the tls section only: the ca_file alone must
			// make the relay speak TLS.
			url := "nats://" + srv.Addr().String()
			_, js := natstest.JetStream(t, srv, natsOpts...)
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			if err := routing.EnsureStreams(ctx, js, routing.StreamOptions{}); err != nil {
				t.Fatal(err)
			}
			if c.natsTLS {
				// The server really refuses what is not TLS (or lacks the
				// client certificate).
				refused := [][]nats.Option{{nats.Timeout(5 * time.Second)}}
				if c.natsMTLS {
					refused = append(refused, []nats.Option{nats.RootCAs(pki.CAFile), nats.Timeout(5 * time.Second)})
				}
				for _, o := range refused {
					if nc, err := nats.Connect(url, o...); err == nil {
						nc.Close()
						t.Fatalf("NATS accepted a connection without TLS or client certificate")
					}
				}
			}
			sim := newNodes(js)
			pub, client, _ := ed25519.GenerateKey(rand.Reader)
			keyID, _ := protocol.KeyID(pub)
			token := "tok-svcA-" + randHex(16)
			config := fmt.Sprintf("listen: \"127.0.0.1:0\"\ntls:\n  cert_file: %q\n  key_file: %q\nnats:\n  url: %q\n%sstreams:\n  storage: memory\n",
				pki.CertFile, pki.KeyFile, url, natsYAML) + clusterYAML(t, sim.pubs) + "clients:\n" + clientYAML(t, dir, "svcA", token, client.Public())
			hc := &http.Client{Transport: &http.Transport{
				TLSClientConfig:   &tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12},
				ForceAttemptHTTP2: true,
			}}
			t.Cleanup(hc.CloseIdleConnections)

			if c.refused != "" {
				rc := startRelayCmd(t, dir, config, nil, "")
				waitLog(t, rc, "WARN", c.refused)
				resp, err := hc.Get("https://" + rc.addr + "/readyz")
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "NATS_UNAVAILABLE") {
					t.Fatalf("/readyz of a relay that cannot connect to NATS: %d %s", resp.StatusCode, b)
				}
				return
			}
			rc := startRelayCmd(t, dir, config, hc, "https")
			base := "https://" + rc.addr

			// Plain http to the TLS port: no answer of the relay's, and a
			// line in its JSON log.
			if resp, err := http.Get("http://" + rc.addr + "/readyz"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK || strings.Contains(string(b), "ready") {
					t.Fatalf("plain http to the TLS listener answered %d %s", resp.StatusCode, b)
				}
			}
			waitLog(t, rc, "WARN", "client sent an HTTP request to an HTTPS server")
			// https without the CA: the certificate is not trusted.
			if resp, err := http.Get(base + "/readyz"); err == nil {
				resp.Body.Close()
				t.Fatalf("https without the test CA: %d, want a certificate error", resp.StatusCode)
			} else if !strings.Contains(err.Error(), "certificate") {
				t.Fatalf("https without the test CA: %v, want a certificate error", err)
			}

			// SSE over https: a decision of two nodes arrives, verified.
			sctx, stopSSE := context.WithCancel(context.Background())
			defer stopSSE()
			req, _ := http.NewRequestWithContext(sctx, http.MethodGet, base+"/v1/events", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("SSE over https: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.TLS == nil {
				t.Fatalf("SSE over https: %d (tls %v)", resp.StatusCode, resp.TLS != nil)
			}
			t.Logf("SSE over %s", resp.Proto)
			events := make(chan string, 4)
			go func() {
				defer close(events)
				sc := bufio.NewScanner(resp.Body)
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				for sc.Scan() {
					if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
						events <- data
					}
				}
			}()
			rid := randHex(16)
			res := protocol.Result{Op: protocol.OpSign, ResultType: protocol.ResultSuccess, RequestID: rid, ClientID: "svcA",
				KeyID: keyID, WalletID: "w1", TxID: "tx1", KeyType: protocol.KeyTypeEd25519,
				PubKey: strings.Repeat("ab", 32), Signature: strings.Repeat("cd", 64)}
			sim.publish(t, "node0", res)
			sim.publish(t, "node2", res)
			select {
			case data, ok := <-events:
				if !ok {
					t.Fatal("SSE stream ended")
				}
				got, err := relay.VerifyDelivery([]byte(data), sim.pubs, rules(sim.pubs))
				if err != nil || got.RequestID != rid || !got.Succeeded() {
					t.Fatalf("SSE delivery %s: %+v, %v", data, got, err)
				}
			case <-time.After(deadline):
				t.Fatalf("no SSE event over https within %s", deadline)
			}
			// Long polling over https: the same decision.
			if it := waitResult(t, hc, base, token, rid, sim.pubs); !it.Result.Succeeded() {
				t.Fatalf("long poll over https: %+v", it.Result)
			}
			// The dlq commands use the same NATS TLS settings.
			if dls := dlqList(t, dir+"/relay.yaml", ""); len(dls) != 0 {
				t.Fatalf("dlq list: %+v", dls)
			}
			if c.natsTLS {
				// The relay's connections are TLS ones.
				var conns int
				cz, err := srv.Connz(&server.ConnzOptions{})
				if err != nil {
					t.Fatal(err)
				}
				for _, ci := range cz.Conns {
					if strings.HasPrefix(ci.Name, "signer-relay") {
						conns++
						if ci.TLSVersion == "" {
							t.Errorf("relay connection %s is not TLS", ci.Name)
						}
					}
				}
				if conns == 0 {
					t.Error("no relay connection at the NATS server")
				}
			}
			// Stopped, the relay ends the open SSE stream (its client
			// resumes elsewhere with Last-Event-ID) rather than keeping it
			// until the shutdown times out.
			rc.stop()
			select {
			case _, open := <-events:
				if open {
					t.Fatal("an SSE event after the decision")
				}
			case <-time.After(deadline):
				t.Fatalf("the SSE stream still open %s after the relay stopped", deadline)
			}
			if strings.Contains(rc.logs.String(), "HTTP shutdown incomplete") {
				t.Fatal("the open SSE stream held the relay's shutdown until its timeout")
			}
		})
	}
}

// waitLog waits until the relay has logged a JSON line of level with want
// in it.
func waitLog(t *testing.T, rc *relayCmd, level, want string) {
	t.Helper()
	for end := time.Now().Add(deadline); ; {
		for line := range strings.Lines(rc.logs.String()) {
			var l struct {
				Level string `json:"level"`
			}
			if strings.Contains(line, want) && json.Unmarshal([]byte(line), &l) == nil && l.Level == level {
				return
			}
		}
		if time.Now().After(end) {
			t.Fatalf("the relay logged no %s line with %q within %s:\n%s", level, want, deadline, rc.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRunRefusesUnusableTLSFiles: a certificate that cannot be loaded is a
// config error of `signer-relay run`, before it listens or connects.
func TestRunRefusesUnusableTLSFiles(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sim := newNodes(nil)
	tests := []struct {
		name, cert, key, want string
	}{
		{"missing certificate", pki.CertFile + ".missing", pki.KeyFile, "no such file"},
		{"key of another certificate", pki.CertFile, pki.ClientKey, "private key does not match"},
		{"not PEM", pki.CAFile, writeFile(t, dir, "junk.key", "not a key\n"), "failed to find any PEM data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			config := fmt.Sprintf("listen: \"127.0.0.1:0\"\ntls:\n  cert_file: %q\n  key_file: %q\nnats:\n  url: \"nats://127.0.0.1:1\"\n", tc.cert, tc.key) +
				clusterYAML(t, sim.pubs) + "clients:\n" + clientYAML(t, dir, "svcA", "tok-svcA-"+randHex(16), pub)
			path := writeFile(t, dir, "relay.yaml", config)
			out, err := cli(t, "run", "--config", path)
			if err == nil || !strings.Contains(err.Error(), "tls.cert_file") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("signer-relay run: %v, want a tls.cert_file error with %q", err, tc.want)
			}
			if strings.Contains(out, "listening") {
				t.Fatalf("signer-relay run listened with an unusable certificate:\n%s", out)
			}
		})
	}
}
