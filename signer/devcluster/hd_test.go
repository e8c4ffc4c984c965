package devcluster_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	decredecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/devcluster"
)

var hdPath = []uint32{44, 60, 0, 0, 7} // m/44/60/0/0/7, all non-hardened

// TestHDSignDerivedKeys: a 2-of-3 cluster signs with the child keys at
// m/44/60/0/0/7 of both key types; each signature verifies under the child
// public key the client derives from the keygen result alone (decred
// secp256k1 with public key recovery; crypto/ed25519), and not under the
// wallet key. A request whose derivation_path was edited after signing is
// dropped by every node as a bad signature, while the same request unedited
// is signed.
func TestHDSignDerivedKeys(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	cl := newClient(t, c, keys["svcA"])
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	kres, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: "hd-wallet"})
	if err != nil {
		t.Fatalf("keygen: %v", err)
	}

	// secp256k1
	ecPub, ecChain, err := client.WalletKey(kres, protocol.KeyTypeSecp256k1)
	if err != nil {
		t.Fatal(err)
	}
	ecChild, err := client.DeriveChildPublicKey(protocol.KeyTypeSecp256k1, ecPub, ecChain, hdPath)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("send 1 ETH from m/44/60/0/0/7"))
	sres, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "hd-wallet", KeyType: protocol.KeyTypeSecp256k1,
		TxID: "hd-tx-1", Tx: digest[:], DerivationPath: hdPath})
	if err != nil {
		t.Fatalf("secp256k1 sign: %v", err)
	}
	if err := client.VerifySignResult(sres, ecChild, digest[:]); err != nil {
		t.Fatalf("secp256k1 signature under the child key: %v", err)
	}
	compact := append([]byte{byte(27 + 4 + sres.SignatureRecovery)}, append(mustHex(t, sres.R), mustHex(t, sres.S)...)...)
	recovered, _, err := decredecdsa.RecoverCompact(compact, digest[:])
	if err != nil || !bytes.Equal(recovered.SerializeCompressed(), ecChild) {
		t.Fatalf("public key recovery gives %x (%v), want the child key %x", recovered.SerializeCompressed(), err, ecChild)
	}
	if err := client.VerifySignResult(sres, ecPub, digest[:]); !errors.Is(err, client.ErrVerify) {
		t.Fatalf("secp256k1 signature verifies under the wallet key: %v", err)
	}
	if sres.PubKey != hex.EncodeToString(ecChild) {
		t.Fatalf("result pub_key %s, want the child key %x", sres.PubKey, ecChild)
	}
	if _, err := secp256k1.ParsePubKey(ecChild); err != nil {
		t.Fatal(err)
	}

	// ed25519
	edPub, edChain, err := client.WalletKey(kres, protocol.KeyTypeEd25519)
	if err != nil {
		t.Fatal(err)
	}
	edChild, err := client.DeriveChildPublicKey(protocol.KeyTypeEd25519, edPub, edChain, hdPath)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte{0, 0, 'h', 'd', ' ', 'm', 's', 'g'}
	eres, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "hd-wallet", KeyType: protocol.KeyTypeEd25519,
		TxID: "hd-tx-2", Tx: msg, DerivationPath: hdPath})
	if err != nil {
		t.Fatalf("ed25519 sign: %v", err)
	}
	sig := mustHex(t, eres.Signature)
	if !ed25519.Verify(edChild, msg, sig) {
		t.Fatal("ed25519 signature does not verify under the child key")
	}
	if ed25519.Verify(edPub, msg, sig) {
		t.Fatal("ed25519 signature verifies under the wallet key")
	}
	if eres.PubKey != hex.EncodeToString(edChild) {
		t.Fatalf("result pub_key %s, want the child key %x", eres.PubKey, edChild)
	}

	hdTamperedPath(t, ctx, c, cl, keys["svcA"], edChild)
}

// hdTamperedPath publishes a signed ed25519 request with derivation_path
// m/44/60/0/0/8 edited into the signed JSON: every node drops it as a bad
// signature (no result). The request as signed is then published and gets
// a signature under the m/44/60/0/0/7 child.
func hdTamperedPath(t *testing.T, ctx context.Context, c *devcluster.Cluster, cl *client.Client, k clientKey, edChild []byte) {
	t.Helper()
	var mu sync.Mutex
	got := map[string][]protocol.Result{}
	if err := cl.OnSignResult(func(r protocol.Result) {
		mu.Lock()
		got[r.RequestID] = append(got[r.RequestID], r)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	msg := []byte("tamper with my path")
	r := &protocol.SigningRequest{WalletID: "hd-wallet", KeyType: protocol.KeyTypeEd25519, TxID: "hd-tx-3", Tx: msg,
		DerivationPath: hdPath}
	r.Op, r.ClientID, r.RequestID = protocol.OpSign, k.ids[0], "hd-tamper-1"
	r.SetTimes(time.Now(), 5*time.Minute)
	raw, err := protocol.SignRequest(ctx, k.signer, protocol.OpSign, r)
	if err != nil {
		t.Fatal(err)
	}
	signedPath := []byte(`"derivation_path":[44,60,0,0,7]`)
	if !bytes.Contains(raw, signedPath) {
		t.Fatalf("signed request does not carry %s: %s", signedPath, raw)
	}
	forged := bytes.Replace(raw, signedPath, []byte(`"derivation_path":[44,60,0,0,8]`), 1)

	nc, err := nats.Connect(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	subj, _ := routing.SigningRequestSubject("hd-wallet")
	invalid := func() (n int64) {
		for _, id := range c.NodeIDs {
			n += c.Node(id).Stats().InvalidSignature
		}
		return n
	}
	before := invalid()
	if _, err := js.Publish(ctx, subj, forged, jetstream.WithMsgID("hd-tamper-1-forged")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return invalid() >= before+int64(len(c.NodeIDs)) })

	// The unedited request: signed under m/44/60/0/0/7. Its result also
	// shows that the forged one (same request_id, published first) got none.
	if _, err := js.Publish(ctx, subj, raw, jetstream.WithMsgID("hd-tamper-1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got["hd-tamper-1"]) >= 1 })
	mu.Lock()
	res := got["hd-tamper-1"]
	mu.Unlock()
	for _, r := range res {
		if !r.Succeeded() {
			t.Fatalf("unedited request: %s: %s", r.ErrorCode, r.ErrorReason)
		}
		if !ed25519.Verify(edChild, msg, mustHex(t, r.Signature)) {
			t.Fatal("unedited request: signature does not verify under the m/44/60/0/0/7 child")
		}
	}
	if n := invalid(); n != before+int64(len(c.NodeIDs)) {
		t.Fatalf("%d requests counted with a bad signature, want %d (the forged one, once per node)", n-before, len(c.NodeIDs))
	}
}
