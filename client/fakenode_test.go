package client

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	decredecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fakeNode stands in for the cluster: it consumes MPC_REQUESTS, checks each
// request like a real node (decode, authorise, verify), "signs" with
// single-party keys derived from the wallet ID, and publishes a result signed
// by its P-256 identity key on the routing subject, with a Nats-Msg-Id.
type fakeNode struct {
	id       string
	identity crypto.Signer
	policy   *policy.Policy
	js       jetstream.JetStream
	// tamper, when set, changes each result before it is signed (a
	// dishonest node); set before the node starts.
	tamper   func(protocol.Request, *protocol.Result)
	handled  atomic.Int64
	rejected atomic.Int64
}

func newIdentity(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// walletKeys derives deterministic test keys from a wallet ID.
func walletKeys(walletID string) (*secp256k1.PrivateKey, ed25519.PrivateKey) {
	seed := sha256.Sum256([]byte("wallet/" + walletID))
	return secp256k1.PrivKeyFromBytes(seed[:]), ed25519.NewKeyFromSeed(seed[:])
}

func startFakeNode(t *testing.T, ctx context.Context, js jetstream.JetStream, id string, identity crypto.Signer, pol *policy.Policy) *fakeNode {
	t.Helper()
	return startTamperingNode(t, ctx, js, id, identity, pol, nil)
}

// startTamperingNode starts a fake node whose results tamper changes (nil:
// an honest node).
func startTamperingNode(t *testing.T, ctx context.Context, js jetstream.JetStream, id string, identity crypto.Signer, pol *policy.Policy,
	tamper func(protocol.Request, *protocol.Result)) *fakeNode {
	t.Helper()
	n := &fakeNode{id: id, identity: identity, policy: pol, js: js, tamper: tamper}
	cons, err := routing.NodeConsumer(ctx, js, id)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { n.handle(ctx, m) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return n
}

func (n *fakeNode) handle(ctx context.Context, m jetstream.Msg) {
	defer func() { _ = m.Ack() }()
	op, _, err := routing.ParseRequestSubject(m.Subject())
	if err != nil {
		n.rejected.Add(1)
		return
	}
	req, derr := protocol.DecodeRequest(op, m.Data())
	if req == nil {
		n.rejected.Add(1)
		return
	}
	env := req.Env()
	pub, aerr := n.policy.Authorize(env.KeyID, env.ClientID, op)
	if pub == nil || protocol.VerifyRequest(m.Data(), pub) != nil {
		n.rejected.Add(1) // INVALID_SIGNATURE: never answered
		return
	}
	res := protocol.NewResult(req)
	switch {
	case aerr != nil:
		res.ClientID, _ = n.policy.PrimaryClientID(env.KeyID)
		res.SetError(protocol.CodeUnauthorizedClient, aerr.Error())
	case derr != nil:
		res.SetError(protocol.CodeBadRequest, derr.Error())
	case env.CheckTime(time.Now(), time.Minute) != nil:
		res.SetError(protocol.CodeExpired, "expired")
	default:
		n.execute(req, res)
	}
	if n.tamper != nil {
		n.tamper(req, res)
	}
	raw, err := protocol.SignResult(ctx, n.identity, n.id, res)
	if err != nil {
		if ctx.Err() != nil {
			return // the test is over
		}
		panic(err)
	}
	subject, err := routing.ResultSubject(res)
	if err != nil {
		panic(err)
	}
	if _, err := n.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: raw},
		jetstream.WithMsgID(routing.ResultMsgID(env.ClientID, env.RequestID, n.id, raw))); err != nil && !errors.Is(err, context.Canceled) {
		panic(err)
	}
	n.handled.Add(1)
}

func (n *fakeNode) execute(req protocol.Request, res *protocol.Result) {
	switch r := req.(type) {
	case *protocol.KeygenRequest:
		if r.WalletID == "exists" {
			res.SetError(protocol.CodeWalletExists, "wallet exists")
			return
		}
		ec, ed := walletKeys(r.WalletID)
		res.ECDSAPubKey = hex.EncodeToString(ec.PubKey().SerializeCompressed())
		res.EdDSAPubKey = hex.EncodeToString(ed.Public().(ed25519.PublicKey))
	case *protocol.SigningRequest:
		if r.WalletID == "unknown" {
			res.SetError(protocol.CodeUnknownWallet, "no such wallet")
			return
		}
		ec, ed := walletKeys(r.WalletID)
		if r.KeyType == protocol.KeyTypeEd25519 {
			res.PubKey = hex.EncodeToString(ed.Public().(ed25519.PublicKey))
			_ = res.SetEdDSASignature(ed25519.Sign(ed, r.Tx))
			return
		}
		res.PubKey = hex.EncodeToString(ec.PubKey().SerializeCompressed())
		compact := decredecdsa.SignCompact(ec, r.Tx, true)
		_ = res.SetECDSASignature(compact[1:33], compact[33:], int(compact[0]-27-4))
	case *protocol.ReshareRequest:
		ec, ed := walletKeys(r.WalletID)
		if r.KeyType == protocol.KeyTypeEd25519 {
			res.PubKey = hex.EncodeToString(ed.Public().(ed25519.PublicKey))
		} else {
			res.PubKey = hex.EncodeToString(ec.PubKey().SerializeCompressed())
		}
	}
}

type binding struct {
	signer    crypto.Signer
	clientIDs []string
}

// policyFor binds each signer to its client IDs with every op.
func policyFor(t testing.TB, bindings ...binding) *policy.Policy {
	t.Helper()
	var cfg policy.Config
	for i, b := range bindings {
		pemText, err := keyfile.MarshalPublicKeyPEM(b.signer.Public())
		if err != nil {
			t.Fatal(err)
		}
		cfg.Clients = append(cfg.Clients, policy.ClientConfig{
			Name: fmt.Sprintf("client%d", i), PublicKey: pemText, ClientIDs: b.clientIDs,
			Ops: []string{protocol.OpKeygen, protocol.OpSign, protocol.OpReshare},
		})
	}
	p, err := policy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
