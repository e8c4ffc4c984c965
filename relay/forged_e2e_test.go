package relay_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/committee"
)

// TestForgedResultsNeverReachTheBackend plays one compromised node (its REAL
// identity key) and a NATS user who publishes junk on the client's result
// subjects, through the relay: a forged signing success (a signature of the
// forger's choosing), published before the honest results, a garbage
// message under the legacy shared Nats-Msg-Id result-<request_id>, and a
// result that claims another node. None of them reaches the webhook
// (checked with the Standard Webhooks reference receiver), SSE or long
// polling; the honest attested result does, attested by the two chosen
// signers. A forged keygen success with the forger's own public key,
// published first, is decided RESULT_MISMATCH: the forged key is never
// delivered as the wallet's.
func TestForgedResultsNeverReachTheBackend(t *testing.T) {
	e := startEnv(t)
	h := newReceiver(t, e, "svcA")
	run := startRelay(t, e.config(t, map[string]*receiver{"svcA": h}))
	base, tok := run.srv.URL, e.tokens["svcA"]
	raw, rid := e.keygenRequest(t, "svcA", "w-forged")
	if a := post(t, base+"/v1/wallets", tok, raw); a.Status != http.StatusAccepted {
		t.Fatalf("keygen: %d %s", a.Status, a.Body)
	}
	wallet := e.waitResult(t, base, tok, rid, 2*time.Minute)
	if !wallet.Succeeded() || wallet.EdDSAPubKey == "" {
		t.Fatalf("keygen: %+v", wallet)
	}
	walletKey, _ := hex.DecodeString(wallet.EdDSAPubKey)
	keyID, err := protocol.KeyID(e.keys["svcA"].Public())
	if err != nil {
		t.Fatal(err)
	}

	nc, err := nats.Connect(e.c.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	publish := func(subject, msgID string, data []byte) {
		t.Helper()
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data}, jetstream.WithMsgID(msgID)); err != nil {
			t.Fatalf("publishing the forgery: %v", err)
		}
	}

	start := e.endCursor(t, base, tok)
	events, stopSSE := openSSE(t, base, tok, strconv.FormatUint(start, 10))
	defer stopSSE()

	// The signing request, and the node the cluster will not choose to sign
	// it: it publishes nothing honest, so its forgery is its only result.
	raw, rid = e.signRequest(t, "svcA", "w-forged")
	req, err := protocol.DecodeRequest(protocol.OpSign, raw)
	if err != nil {
		t.Fatal(err)
	}
	ready := map[string]bool{}
	for _, id := range e.c.NodeIDs {
		ready[id] = true
	}
	chosen, err := committee.Signers(rid, e.c.NodeIDs, ready, 1)
	if err != nil {
		t.Fatal(err)
	}
	var forger, other string
	for _, id := range e.c.NodeIDs {
		if !strings.Contains(strings.Join(chosen, ","), id) {
			forger = id
		} else {
			other = id
		}
	}
	forgedSig := bytes.Repeat([]byte{0x5a}, ed25519.SignatureSize)
	forgedRes := protocol.NewResult(req)
	forgedRes.PubKey = wallet.EdDSAPubKey
	if err := forgedRes.SetEdDSASignature(forgedSig); err != nil {
		t.Fatal(err)
	}
	forged, err := protocol.SignResult(ctx, e.c.IdentitySigner(forger), forger, forgedRes)
	if err != nil {
		t.Fatal(err)
	}
	// Signed by the forger's real key but claiming to be another node.
	impostor := *forgedRes
	impostorRaw, err := protocol.SignResult(ctx, e.c.IdentitySigner(forger), forger, &impostor)
	if err != nil {
		t.Fatal(err)
	}
	impostorRaw = bytes.Replace(impostorRaw, []byte(`"node_id":"`+forger+`"`), []byte(`"node_id":"`+other+`"`), 1)
	garbage := []byte(`{"op":"sign","result_type":"success","request_id":"` + rid + `","client_id":"svcA","signature":"` + hex.EncodeToString(forgedSig) + `"}`)
	subj, err := routing.SigningResultSubject("svcA")
	if err != nil {
		t.Fatal(err)
	}
	publish(subj, routing.ResultMsgID("svcA", rid, forger, forged), forged)
	publish(subj, "result-"+rid, garbage) // the id every node used before: must not suppress anything
	publish(subj, routing.ResultMsgID("svcA", rid, other, impostorRaw), impostorRaw)

	if a := post(t, base+"/v1/sign", tok, raw); a.Status != http.StatusAccepted {
		t.Fatalf("sign: %d %s", a.Status, a.Body)
	}
	// Long polling: the honest, attested result.
	res := e.waitResult(t, base, tok, rid, time.Minute)
	sig, _ := hex.DecodeString(res.Signature)
	if !res.Succeeded() || bytes.Equal(sig, forgedSig) || !ed25519.Verify(walletKey, req.(*protocol.SigningRequest).Tx, sig) {
		t.Fatalf("delivered sign result %+v does not verify under the wallet key", res)
	}
	// The webhook (Standard Webhooks reference receiver, attestations
	// verified): the honest result, and never a forged byte.
	h.waitFor(t, []string{rid}, time.Minute)
	h.mu.Lock()
	for id, body := range h.byID {
		got, d, err := e.verifyDelivery(body)
		if err != nil {
			t.Errorf("webhook %s: %v", id, err)
			continue
		}
		for _, a := range d.Attestations {
			for _, bad := range [][]byte{forged, impostorRaw, garbage} {
				if bytes.Equal(a, bad) {
					t.Errorf("webhook %s carries a forged result: %s", id, a)
				}
			}
		}
		if got.Signature == hex.EncodeToString(forgedSig) {
			t.Errorf("webhook %s delivered the forged signature", id)
		}
		if got.RequestID == rid && (len(d.Attestations) != 2 || got.KeyID != keyID) {
			t.Errorf("sign decision attested by %d nodes for key %s, want the 2 chosen signers for %s", len(d.Attestations), got.KeyID, keyID)
		}
	}
	h.mu.Unlock()
	// SSE: every event verifies; the request's is the honest result.
	deadline := time.After(time.Minute)
	for seen := false; !seen; {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("SSE stream ended")
			}
			got := e.decodeDelivery(t, []byte(ev.Data))
			if strings.Contains(ev.Data, hex.EncodeToString(forgedSig)) {
				t.Fatalf("SSE carried the forged signature: %s", ev.Data)
			}
			if got.RequestID == rid {
				seen = true
				if got.Signature != res.Signature {
					t.Fatalf("SSE result %+v, long poll %+v", got, res)
				}
			}
		case <-deadline:
			t.Fatal("SSE: the sign decision never came")
		}
	}
	checkMetrics(t, base, `signer_relay_results_forwarded_total{client_id="svcA",outcome="rejected"}`)

	// Keygen: the forger's own key, published before every honest result.
	raw, rid = e.keygenRequest(t, "svcA", "w-forged-2")
	kreq, err := protocol.DecodeRequest(protocol.OpKeygen, raw)
	if err != nil {
		t.Fatal(err)
	}
	fakeKey, _, _ := ed25519.GenerateKey(nil)
	fk := protocol.NewResult(kreq)
	fk.EdDSAPubKey = hex.EncodeToString(fakeKey)
	forged, err = protocol.SignResult(ctx, e.c.IdentitySigner(forger), forger, fk)
	if err != nil {
		t.Fatal(err)
	}
	ksubj, err := routing.KeygenResultSubject("svcA", "w-forged-2")
	if err != nil {
		t.Fatal(err)
	}
	publish(ksubj, routing.ResultMsgID("svcA", rid, forger, forged), forged)
	if a := post(t, base+"/v1/wallets", tok, raw); a.Status != http.StatusAccepted {
		t.Fatalf("keygen: %d %s", a.Status, a.Body)
	}
	kres := e.waitResult(t, base, tok, rid, 2*time.Minute)
	if kres.Succeeded() || kres.ErrorCode != protocol.CodeResultMismatch || kres.EdDSAPubKey == fk.EdDSAPubKey {
		t.Fatalf("keygen with a forged key first: %+v, want RESULT_MISMATCH", kres)
	}
	h.waitFor(t, []string{rid}, time.Minute)
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, body := range h.byID {
		if res, _, err := e.verifyDelivery(body); err == nil && res.Succeeded() && res.EdDSAPubKey == fk.EdDSAPubKey {
			t.Errorf("webhook %s delivered the forged key as a success", id)
		}
	}
}
