package relay_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/relay"
)

// docBlock returns the fenced block after "<!-- example:name -->" in doc.
func docBlock(t *testing.T, doc, name string) string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "<!-- example:"+name+" -->")
	if !ok {
		t.Fatalf("example %s not in docs/canonical-encoding.md", name)
	}
	_, rest, _ = strings.Cut(rest, "```")
	_, rest, _ = strings.Cut(rest, "\n")
	body, _, _ := strings.Cut(rest, "```")
	return body
}

// TestDocExampleThroughRelay posts the worked example of
// docs/canonical-encoding.md (§5, §7) to the relay: its signature verifies
// against the documented key (the relay then refuses it only because its
// expires_at lies in the past), and the same body with one member changed is
// refused as INVALID_SIGNATURE. No NATS is needed to get that far.
func TestDocExampleThroughRelay(t *testing.T) {
	raw, err := os.ReadFile("../docs/canonical-encoding.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	request := []byte(docBlock(t, doc, "request"))
	_, pemBlock, _ := strings.Cut(doc, "in PEM:\n\n```text\n")
	pemBlock, _, _ = strings.Cut(pemBlock, "```")

	dir := t.TempDir()
	cfg := relay.Config{Clients: map[string]*relay.ClientConfig{"svcA": {
		TokenSource: "file:" + writeFile(t, dir, "tok", "example-token-0123456789\n"),
		PublicKeys:  []string{pemBlock},
	}}}
	cfg.NATS.URL = "nats://127.0.0.1:1" // never reached
	nodes := map[string]crypto.PublicKey{}
	for _, id := range []string{"node0", "node1", "node2"} {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		nodes[id] = k.Public()
	}
	cfg.Cluster = clusterConfig(t, nodes, 2)
	r, err := relay.New(cfg, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	h := r.Handler()
	send := func(body []byte) (int, string) {
		req := httptest.NewRequest(http.MethodPost, "/v1/sign", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer example-token-0123456789")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var a struct {
			Code string `json:"error_code"`
		}
		_ = json.Unmarshal(w.Body.Bytes(), &a)
		return w.Code, a.Code
	}
	if st, code := send(request); st != 400 || code != relay.CodeExpired {
		t.Fatalf("doc example: %d %s, want 400 %s (signature valid, request expired)", st, code, relay.CodeExpired)
	}
	tampered := bytes.Replace(request, []byte("[44, 501, 0]"), []byte("[44, 501, 1]"), 1)
	if bytes.Equal(tampered, request) {
		t.Fatal("derivation_path not found in the example")
	}
	if st, code := send(tampered); st != 403 || code != relay.CodeInvalidSignature {
		t.Fatalf("tampered doc example: %d %s, want 403 %s", st, code, relay.CodeInvalidSignature)
	}
}

// TestDocExampleDelivery re-verifies the worked delivery of
// docs/canonical-encoding.md §7.3 as a backend would: its attestations
// against the documented node keys and the rules, the signature over the
// tx of the §5 request; and refuses it changed.
func TestDocExampleDelivery(t *testing.T) {
	raw, err := os.ReadFile("../docs/canonical-encoding.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	var peers map[string]string
	if err := yaml.Unmarshal([]byte(docBlock(t, doc, "node-keys")), &peers); err != nil {
		t.Fatal(err)
	}
	cc := relay.ClusterConfig{Peers: peers, Signers: 2}
	keys, err := cc.NodeKeys()
	if err != nil || len(keys) != 3 {
		t.Fatalf("node keys: %v %v", keys, err)
	}
	rules := attest.Rules{Nodes: slices.Sorted(maps.Keys(keys)), Signers: 2}
	delivery := []byte(docBlock(t, doc, "delivery"))
	res, err := relay.VerifyDelivery(delivery, keys, rules)
	if err != nil {
		t.Fatalf("doc delivery: %v", err)
	}
	var req struct {
		Tx []byte `json:"tx"`
	}
	if err := json.Unmarshal([]byte(docBlock(t, doc, "request")), &req); err != nil {
		t.Fatal(err)
	}
	if !res.Succeeded() || res.RequestID != "7f3c2a9e1b0d4c8f9a6e5d4c3b2a1908" || res.KeyID != "06e3fd8fda29bb60ab59557de61edb0a" {
		t.Fatalf("doc delivery result %+v", res)
	}
	if err := attest.VerifySignature(res, req.Tx); err != nil {
		t.Fatalf("doc delivery signature over the §5 tx: %v", err)
	}

	var d relay.Delivery
	if err := json.Unmarshal(delivery, &d); err != nil {
		t.Fatal(err)
	}
	oneAttestation := d
	oneAttestation.Attestations = d.Attestations[:1]
	dropped, _ := json.Marshal(oneAttestation)
	swapped := maps.Clone(keys)
	swapped["node0"], swapped["node2"] = keys["node2"], keys["node0"]
	tests := []struct {
		name string
		body []byte
		keys map[string]crypto.PublicKey
	}{
		{"result member changed", bytes.Replace(delivery, []byte(`"wallet-42"`), []byte(`"wallet-43"`), 1), keys},
		{"one attestation removed", dropped, keys},
		{"another node's key", delivery, swapped},
	}
	for _, tc := range tests {
		if _, err := relay.VerifyDelivery(tc.body, tc.keys, rules); !errors.Is(err, relay.ErrNotAttested) {
			t.Errorf("%s: %v, want ErrNotAttested", tc.name, err)
		}
	}
}
