package node

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/hsm/softkey"
	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
	"github.com/hwsigner/signer/signer/config"
	"github.com/hwsigner/signer/signer/store"
)

// healRig is node2 of a 3-node cluster, not running: its store, sealer and
// the keys bucket on an embedded NATS server, plus the identity keys of
// node0 and node1 to confirm with.
type healRig struct {
	t      *testing.T
	ctx    context.Context
	n      *Node
	signer map[string]crypto.Signer
	pub    []byte
}

func newHealRig(t *testing.T) *healRig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	if err := softkey.Init(filepath.Join(dir, "keys"), "share-kek"); err != nil {
		t.Fatal(err)
	}
	b, err := softkey.Open(nil, filepath.Join(dir, "keys"), "share-kek")
	if err != nil {
		t.Fatal(err)
	}
	self, err := b.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	signers := map[string]crypto.Signer{"node2": self}
	peers := map[string]*ecdsa.PublicKey{"node2": self.Public().(*ecdsa.PublicKey)}
	for _, id := range []string{"node0", "node1"} {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		signers[id], peers[id] = k, &k.PublicKey
	}
	st, err := store.Open(filepath.Join(dir, "store.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	s := natstest.RunServer(t)
	nc, js := natstest.JetStream(t, s)
	pol, err := policy.New(policy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(ctx, Config{NodeID: "node2", Committee: []string{"node0", "node1", "node2"}, Peers: peers, Policy: pol,
		Signers: config.SignersFromTSS(1)}, nc, b, st)
	if err != nil {
		t.Fatal(err)
	}
	if n.keys, err = routing.EnsureKeysBucket(ctx, js, routing.StreamOptions{Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	return &healRig{t: t, ctx: ctx, n: n, signer: signers, pub: []byte{2, 1, 2, 3}}
}

// hold stores a record of wallet "w" (ed25519) on node2; digest and
// ceremony as its share's confirmation would say.
func (r *healRig) hold(epoch uint64, status string, committee []string, digest byte, ceremony string) {
	r.t.Helper()
	m := store.WalletMeta{WalletID: "w", KeyType: protocol.KeyTypeEd25519, Epoch: epoch, Committee: committee, Threshold: 1,
		PubKey: r.pub, CreatedAt: time.Now().UTC(), Status: status, CreatedBy: "svcA", Ceremony: ceremony}
	if digest != 0 {
		m.KeyDigest = []byte(strings.Repeat(string([]byte{digest}), 32))
	}
	if err := r.n.st.PutShare(m, []byte("sealed share")); err != nil {
		r.t.Fatal(err)
	}
}

// confirm puts node's confirmation of wallet "w" at epoch, signed by
// signer (its own key unless another is given).
func (r *healRig) confirm(node string, epoch uint64, committee []string, digest byte, ceremony string, signer crypto.Signer) {
	r.t.Helper()
	if signer == nil {
		signer = r.signer[node]
	}
	c := &protocol.KeyConfirmation{WalletID: "w", KeyType: protocol.KeyTypeEd25519, Epoch: epoch, Committee: committee, Threshold: 1,
		PubKey: hex.EncodeToString(r.pub), KeyDigest: strings.Repeat(hex.EncodeToString([]byte{digest}), 32), Ceremony: ceremony}
	raw, err := protocol.SignConfirmation(r.ctx, signer, node, c)
	if err != nil {
		r.t.Fatal(err)
	}
	key, _ := routing.ConfirmationKey("w", protocol.KeyTypeEd25519, epoch, node)
	if _, err := r.n.keys.Put(r.ctx, key, raw); err != nil {
		r.t.Fatal(err)
	}
}

// records lists node2's records of the wallet as epoch:status.
func (r *healRig) records() string {
	r.t.Helper()
	all, err := r.n.st.Wallets()
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, m := range all {
		out = append(out, fmt.Sprintf("%s@%d", m.Status, m.Epoch))
	}
	return strings.Join(out, " ")
}

// stays reports whether beforeSign keeps node2 out of a signing of "w".
func (r *healRig) stays() bool {
	_, stop := r.n.beforeSign(r.ctx, &protocol.SigningRequest{Envelope: protocol.Envelope{RequestID: "req"}, WalletID: "w", KeyType: protocol.KeyTypeEd25519})
	return stop
}

var all3, pair = []string{"node0", "node1", "node2"}, []string{"node0", "node1"}

// TestHealAtSign: what beforeSign does with node2's records and the
// bucket's confirmations (node2 is the node under test).
func TestHealAtSign(t *testing.T) {
	t.Run("stale member outside the new committee retires and stays out", func(t *testing.T) {
		r := newHealRig(t)
		r.hold(1, store.StatusActive, all3, 1, "kg")
		r.confirm("node0", 2, pair, 2, "rs", nil)
		r.confirm("node1", 2, pair, 2, "rs", nil)
		if !r.stays() || r.records() != "retired@2" || r.n.m.Snapshot().Healed["retired"] != 1 {
			t.Fatalf("records %s, healed %v", r.records(), r.n.m.Snapshot().Healed)
		}
		m, _ := r.n.st.Newest("w", protocol.KeyTypeEd25519)
		if !slices.Equal(m.Committee, pair) || m.CreatedBy != "svcA" || m.Ceremony != "rs" || len(m.KeyDigest) != 0 {
			t.Fatalf("retired record %+v", m)
		}
		if _, sealed, _ := r.n.st.ShareAt("w", protocol.KeyTypeEd25519, 2); string(sealed) == "sealed share" || len(sealed) == 0 {
			t.Fatal("the retired record keeps no sealed marker")
		}
	})
	t.Run("stale member of the new committee without a share there retires and stays out", func(t *testing.T) {
		r := newHealRig(t)
		r.hold(1, store.StatusActive, all3, 1, "kg")
		for _, id := range all3[:2] {
			r.confirm(id, 2, all3, 2, "rs", nil)
		}
		r.confirm("node2", 2, all3, 2, "rs", nil) // a confirmation of a share its store lost (restored from an old backup)
		if !r.stays() || r.records() != "retired@2" {
			t.Fatalf("records %s", r.records())
		}
	})
	t.Run("several epochs missed: the newest committed one", func(t *testing.T) {
		r := newHealRig(t)
		r.hold(1, store.StatusActive, all3, 1, "kg")
		r.confirm("node0", 2, pair, 2, "rs2", nil)
		r.confirm("node1", 2, pair, 2, "rs2", nil)
		for _, id := range all3 {
			r.confirm(id, 3, all3, 3, "rs3", nil)
		}
		r.confirm("node0", 4, pair, 4, "rs4", nil) // started, not committed
		if !r.stays() || r.records() != "retired@3" {
			t.Fatalf("records %s", r.records())
		}
	})
	t.Run("pending share confirmed by the whole committee is activated", func(t *testing.T) {
		r := newHealRig(t)
		r.hold(1, store.StatusRetired, pair, 0, "")
		r.hold(2, store.StatusPending, all3, 2, "rs")
		for _, id := range all3 {
			r.confirm(id, 2, all3, 2, "rs", nil)
		}
		if r.stays() || r.records() != "active@2" || r.n.m.Snapshot().Healed["activated"] != 1 {
			t.Fatalf("records %s, healed %v", r.records(), r.n.m.Snapshot().Healed)
		}
	})
	t.Run("pending share of another attempt than the committed one is retired", func(t *testing.T) {
		r := newHealRig(t)
		r.hold(1, store.StatusActive, all3, 1, "kg")
		r.hold(2, store.StatusPending, all3, 7, "attempt-a")
		r.confirm("node0", 2, pair, 2, "attempt-b", nil)
		r.confirm("node1", 2, pair, 2, "attempt-b", nil)
		r.confirm("node2", 2, all3, 7, "attempt-a", nil)
		if !r.stays() || r.records() != "retired@2" {
			t.Fatalf("records %s", r.records())
		}
	})
	t.Run("pending share not confirmed by every member stays pending, old share signs", func(t *testing.T) {
		r := newHealRig(t)
		r.hold(1, store.StatusActive, all3, 1, "kg")
		r.hold(2, store.StatusPending, all3, 2, "rs")
		r.confirm("node0", 2, all3, 2, "rs", nil)
		r.confirm("node2", 2, all3, 2, "rs", nil)
		r.confirm("node1", 2, all3, 9, "rs", nil) // another digest
		if r.stays() || r.records() != "active@1 pending@2" {
			t.Fatalf("records %s", r.records())
		}
	})
	t.Run("pending only, unconfirmed: stays out, never UNKNOWN_WALLET", func(t *testing.T) {
		r := newHealRig(t)
		r.hold(2, store.StatusPending, all3, 2, "rs")
		r.confirm("node2", 2, all3, 2, "rs", nil)
		if !r.stays() || r.records() != "pending@2" {
			t.Fatalf("records %s", r.records())
		}
	})
	t.Run("forged confirmations activate and retire nothing", func(t *testing.T) {
		r := newHealRig(t)
		rogue, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		r.hold(1, store.StatusActive, all3, 1, "kg")
		r.hold(2, store.StatusPending, all3, 2, "rs")
		r.confirm("node2", 2, all3, 2, "rs", nil)
		r.confirm("node0", 2, all3, 2, "rs", rogue)
		r.confirm("node1", 2, all3, 2, "rs", rogue)
		r.confirm("node0", 3, pair, 3, "x", rogue)
		r.confirm("node1", 3, pair, 3, "x", rogue)
		if r.stays() || r.records() != "active@1 pending@2" || len(r.n.m.Snapshot().Healed) != 0 ||
			r.n.m.Snapshot().ConfirmationsIgnored["bad_signature"] != 2 {
			t.Fatalf("records %s, healed %v, ignored %v", r.records(), r.n.m.Snapshot().Healed, r.n.m.Snapshot().ConfirmationsIgnored)
		}
	})
	t.Run("no record: out when the wallet is confirmed, else on to UNKNOWN_WALLET", func(t *testing.T) {
		r := newHealRig(t)
		rogue, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		r.confirm("node0", 1, all3, 1, "kg", rogue)
		if r.stays() {
			t.Fatal("a forged confirmation made node2 stay out")
		}
		r.confirm("node1", 1, all3, 1, "kg", nil)
		if !r.stays() {
			t.Fatal("node2 answers a wallet node1 confirmed")
		}
		if _, _, err := r.n.st.Share("w", protocol.KeyTypeEd25519); !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
	})
}

// TestCommittedAt: an epoch is committed when every member of a
// confirmation's committee confirmed the same content.
func TestCommittedAt(t *testing.T) {
	c := func(node string, committee []string, digest string) *protocol.KeyConfirmation {
		return &protocol.KeyConfirmation{Version: 1, WalletID: "w", KeyType: "ed25519", Epoch: 2, Committee: committee, Threshold: 1,
			PubKey: "02", KeyDigest: digest, Ceremony: "rs", NodeID: node}
	}
	if _, ok := committedAt(map[string]*protocol.KeyConfirmation{"node0": c("node0", pair, "a")}); ok {
		t.Fatal("one of two members committed")
	}
	got, ok := committedAt(map[string]*protocol.KeyConfirmation{"node0": c("node0", pair, "a"), "node1": c("node1", pair, "a"), "node2": c("node2", all3, "b")})
	if !ok || got.KeyDigest != "a" {
		t.Fatalf("committed %+v %v", got, ok)
	}
	if _, ok := committedAt(map[string]*protocol.KeyConfirmation{"node0": c("node0", pair, "a"), "node1": c("node1", pair, "b")}); ok {
		t.Fatal("two digests committed")
	}
}
