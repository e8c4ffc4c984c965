package devcluster_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/committee"
	"github.com/hwsigner/signer/signer/devcluster"
)

// forger plays a compromised node of a real cluster: it signs results
// with that node's identity key (in its SoftHSM2 token) and publishes them
// first, as soon as it sees the request.
type forger struct {
	c  *devcluster.Cluster
	js jetstream.JetStream
	nc *nats.Conn
}

func newForger(t *testing.T, c *devcluster.Cluster) *forger {
	t.Helper()
	nc, err := nats.Connect(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &forger{c: c, js: js, nc: nc}
}

// publish signs res as node (with its real identity key) and publishes it on
// res's result subject under msgID (a node's own ResultMsgID when empty).
func (f *forger) publish(ctx context.Context, t *testing.T, node string, res *protocol.Result, msgID string) {
	t.Helper()
	signer := f.c.IdentitySigner(node)
	if signer == nil {
		t.Fatalf("no identity key for %s", node)
	}
	raw, err := protocol.SignResult(ctx, signer, node, res)
	if err != nil {
		t.Fatal(err)
	}
	subject, err := routing.ResultSubject(res)
	if err != nil {
		t.Fatal(err)
	}
	if msgID == "" {
		msgID = routing.ResultMsgID(res.ClientID, res.RequestID, node, raw)
	}
	if _, err := f.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: raw, Header: nats.Header{"Nats-Msg-Id": {msgID}}}); err != nil {
		t.Fatal(err)
	}
}

// onRequest calls forge (in the test's goroutine, via the returned wait
// function) once the request with requestID is on requestSubject: before
// any node can have answered it.
func (f *forger) onRequest(t *testing.T, op, walletID, requestID string) (wait func() bool) {
	t.Helper()
	subject, err := routing.RequestSubject(op, walletID)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan struct{}, 1)
	sub, err := f.nc.Subscribe(subject, func(m *nats.Msg) {
		req, _ := protocol.DecodeRequest(op, m.Data)
		if req != nil && req.Env().RequestID == requestID {
			select {
			case seen <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() bool {
		defer func() { _ = sub.Unsubscribe() }()
		select {
		case <-seen:
			return true
		case <-time.After(30 * time.Second):
			return false
		}
	}
}

type outcome struct {
	res *protocol.Result
	err error
}

// TestForgedKeygenFromARealNodeKey: node2's real identity key publishes a
// keygen success carrying another public key before any node has answered.
// The client returns the honest key or RESULT_MISMATCH naming node2, never
// the forged key; the wallet the honest nodes made signs.
func TestForgedKeygenFromARealNodeKey(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	cl := newClient(t, c, keys["svcA"])
	f := newForger(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const wallet, reqID = "w-forged-kg", "kg-forged"
	forgedPub, _, _ := ed25519.GenerateKey(rand.Reader)
	forgedHex := hex.EncodeToString(forgedPub)

	wait := f.onRequest(t, protocol.OpKeygen, wallet, reqID)
	done := make(chan outcome, 1)
	go func() {
		res, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: wallet, KeyTypes: []string{"ed25519"}, RequestID: reqID})
		done <- outcome{res, err}
	}()
	if !wait() {
		t.Fatal("the keygen request was not published")
	}
	f.publish(ctx, t, "node2", &protocol.Result{Op: protocol.OpKeygen, ResultType: protocol.ResultSuccess, RequestID: reqID,
		ClientID: "svcA", KeyID: cl.KeyID(), WalletID: wallet, EdDSAPubKey: forgedHex}, "")
	o := <-done
	if o.res != nil && o.res.EdDSAPubKey == forgedHex {
		t.Fatalf("the client returned the forged key: %+v", o.res)
	}
	var re *client.ResultError
	switch {
	case o.err == nil:
		t.Logf("honest key %s", o.res.EdDSAPubKey)
	case errors.As(o.err, &re) && re.Code == protocol.CodeResultMismatch:
		if !strings.Contains(re.Nodes["node2"], forgedHex) || !strings.Contains(re.Reason, "node2") {
			t.Fatalf("RESULT_MISMATCH does not name the forger: %v", re)
		}
		t.Logf("refused: %v", re)
	default:
		t.Fatalf("keygen: %v", o.err)
	}
	// The honest nodes made the wallet; its key signs.
	var honest []byte
	deadline := time.Now().Add(time.Minute)
	for _, id := range c.NodeIDs {
		for {
			m, ok := c.Node(id).WalletMeta(wallet, "ed25519")
			if ok {
				if honest == nil {
					honest = m.PubKey
				}
				if !slices.Equal(m.PubKey, honest) {
					t.Fatalf("%s holds another key", id)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s has no share of %s", id, wallet)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if o.err == nil && o.res.EdDSAPubKey != hex.EncodeToString(honest) {
		t.Fatalf("returned key %s, nodes hold %x", o.res.EdDSAPubKey, honest)
	}
	msg := []byte("after the forged keygen")
	sres, err := cl.SignAndWait(ctx, client.SignParams{WalletID: wallet, KeyType: "ed25519", TxID: "t", Tx: msg})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.VerifyEd25519(honest, msg, mustHex(t, sres.Signature)); err != nil {
		t.Fatal(err)
	}
}

// TestForgedSignAndReshareFromARealNodeKey: a node's real identity key
// publishes, before anyone answers, a signing success with a valid
// signature under another key, then one with a garbage signature, then a
// reshare success with another public key. The client returns the honest
// outcome of t+1 honest nodes each time.
func TestForgedSignAndReshareFromARealNodeKey(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	cl := newClient(t, c, keys["svcA"])
	f := newForger(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const wallet = "w-forged-sign"
	kg, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: wallet, KeyTypes: []string{"ed25519"}})
	if err != nil {
		t.Fatal(err)
	}
	pub := mustHex(t, kg.EdDSAPubKey)
	otherPub, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	ready := map[string]bool{}
	for _, id := range c.NodeIDs {
		ready[id] = true
	}

	forgeries := []struct {
		name  string
		forge func(r *protocol.Result, msg []byte)
	}{
		{"valid signature under another key", func(r *protocol.Result, msg []byte) {
			_ = r.SetEdDSASignature(ed25519.Sign(otherKey, msg))
			r.PubKey = hex.EncodeToString(otherPub)
		}},
		{"garbage signature", func(r *protocol.Result, _ []byte) {
			r.Signature = strings.Repeat("5a", 64)
			r.PubKey = hex.EncodeToString(pub)
		}},
	}
	for i, fg := range forgeries {
		t.Run("sign: "+fg.name, func(t *testing.T) {
			reqID := "sign-forged-" + string(rune('a'+i))
			chosen, err := committee.Signers(reqID, c.NodeIDs, ready, 1)
			if err != nil {
				t.Fatal(err)
			}
			var node string // the node not chosen: its own honest result never comes
			for _, id := range c.NodeIDs {
				if !slices.Contains(chosen, id) {
					node = id
				}
			}
			msg := []byte("pay 1 to " + fg.name)
			wait := f.onRequest(t, protocol.OpSign, wallet, reqID)
			done := make(chan outcome, 1)
			go func() {
				res, err := cl.SignAndWait(ctx, client.SignParams{WalletID: wallet, KeyType: "ed25519", TxID: "tx", Tx: msg, RequestID: reqID})
				done <- outcome{res, err}
			}()
			if !wait() {
				t.Fatal("the signing request was not published")
			}
			forged := &protocol.Result{Op: protocol.OpSign, ResultType: protocol.ResultSuccess, RequestID: reqID, ClientID: "svcA",
				KeyID: cl.KeyID(), WalletID: wallet, TxID: "tx", KeyType: "ed25519"}
			fg.forge(forged, msg)
			f.publish(ctx, t, node, forged, "")
			o := <-done
			if o.err != nil {
				t.Fatalf("forged by %s: %v", node, o.err)
			}
			if o.res.Signature == forged.Signature || !slices.Contains(chosen, o.res.NodeID) {
				t.Fatalf("the forged result was returned: %+v", o.res)
			}
			if err := client.VerifyEd25519(pub, msg, mustHex(t, o.res.Signature)); err != nil {
				t.Fatal(err)
			}
		})
	}

	// Reshare to the same committee: every participant answers; node0's
	// forged success comes first and counts as node0's only result.
	t.Run("reshare: another public key", func(t *testing.T) {
		const reqID, session = "reshare-forged", "reshare-forged-s"
		wait := f.onRequest(t, protocol.OpReshare, wallet, reqID)
		done := make(chan outcome, 1)
		go func() {
			res, err := cl.ReshareAndWait(ctx, client.ReshareParams{WalletID: wallet, KeyType: "ed25519", SessionID: session,
				NodeIDs: c.NodeIDs, NewThreshold: 1, RequestID: reqID})
			done <- outcome{res, err}
		}()
		if !wait() {
			t.Fatal("the reshare request was not published")
		}
		f.publish(ctx, t, "node0", &protocol.Result{Op: protocol.OpReshare, ResultType: protocol.ResultSuccess, RequestID: reqID,
			ClientID: "svcA", KeyID: cl.KeyID(), WalletID: wallet, SessionID: session, KeyType: "ed25519",
			PubKey: hex.EncodeToString(otherPub), NewThreshold: 1}, "")
		o := <-done
		if o.err != nil {
			t.Fatalf("reshare: %v", o.err)
		}
		if o.res.PubKey != hex.EncodeToString(pub) || o.res.NodeID == "node0" {
			t.Fatalf("reshare returned %+v, want pub_key %x attested by node1 and node2", o.res, pub)
		}
	})
}

// TestJunkUnderResultMsgIDs: junk published first under every Nats-Msg-Id a
// node's result could use (the old shared result-<request_id> and guesses
// of ResultMsgID), and under the old request id, suppresses neither the
// request nor the honest results.
func TestJunkUnderResultMsgIDs(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	cl := newClient(t, c, keys["svcA"])
	f := newForger(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const wallet = "w-junk"
	junk := func(op, reqID string) {
		t.Helper()
		body := []byte(`{"op":"` + op + `","request_id":"` + reqID + `","client_id":"svcA","result_type":"success","node_id":"node0"}`)
		reqSubject, _ := routing.RequestSubject(op, wallet)
		resSubject, _ := routing.ResultSubject(&protocol.Result{Op: op, ClientID: "svcA", WalletID: wallet})
		ids := map[string][]string{
			reqSubject: {reqID, routing.RequestMsgID("svcA", reqID, body)},
			resSubject: {"result-" + reqID},
		}
		for _, n := range c.NodeIDs {
			ids[resSubject] = append(ids[resSubject], routing.ResultMsgID("svcA", reqID, n, body), routing.ResultMsgID("", reqID, n, body))
		}
		for subject, list := range ids {
			for _, id := range list {
				ack, err := f.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: body, Header: nats.Header{"Nats-Msg-Id": {id}}})
				if err != nil || ack.Duplicate {
					t.Fatalf("junk under %s: %v %+v", id, err, ack)
				}
			}
		}
	}
	junk(protocol.OpKeygen, "junk-kg")
	kg, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: wallet, KeyTypes: []string{"ed25519"}, RequestID: "junk-kg"})
	if err != nil {
		t.Fatalf("keygen after junk: %v", err)
	}
	junk(protocol.OpSign, "junk-sign")
	msg := []byte("after the junk")
	sres, err := cl.SignAndWait(ctx, client.SignParams{WalletID: wallet, KeyType: "ed25519", TxID: "t", Tx: msg, RequestID: "junk-sign"})
	if err != nil {
		t.Fatalf("sign after junk: %v", err)
	}
	if err := client.VerifyEd25519(mustHex(t, kg.EdDSAPubKey), msg, mustHex(t, sres.Signature)); err != nil {
		t.Fatal(err)
	}
	if s := cl.Stats(); s.Dropped == 0 {
		t.Fatalf("the junk results were not dropped: %+v", s)
	}
}
