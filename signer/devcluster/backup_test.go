package devcluster_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/hsm"
	hsmuri "github.com/hwsigner/signer/hsm/uri"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/signer/backup"
	"github.com/hwsigner/signer/signer/store"
)

// signBoth signs with both key types of wallet and verifies each signature
// without tss-lib under the wallet's public keys.
func signBoth(t *testing.T, ctx context.Context, cl *client.Client, wallet, txID string, ecPub, edPub []byte) {
	t.Helper()
	digest := sha256.Sum256([]byte("drill " + txID))
	sres, err := cl.SignAndWait(ctx, client.SignParams{WalletID: wallet, KeyType: "secp256k1", TxID: txID + "-ec", Tx: digest[:]})
	if err != nil {
		t.Fatalf("%s: ecdsa sign: %v", txID, err)
	}
	if err := client.VerifyECDSA(ecPub, digest[:], mustHex(t, sres.R), mustHex(t, sres.S), sres.SignatureRecovery); err != nil {
		t.Fatalf("%s: ecdsa signature: %v", txID, err)
	}
	msg := []byte("drill message " + txID)
	eres, err := cl.SignAndWait(ctx, client.SignParams{WalletID: wallet, KeyType: "ed25519", TxID: txID + "-ed", Tx: msg})
	if err != nil {
		t.Fatalf("%s: eddsa sign: %v", txID, err)
	}
	if err := client.VerifyEd25519(edPub, msg, mustHex(t, eres.Signature)); err != nil {
		t.Fatalf("%s: eddsa signature: %v", txID, err)
	}
}

// tokenLabel is the token= attribute of a pkcs11: URI.
func tokenLabel(t *testing.T, u string) string {
	t.Helper()
	for _, attr := range strings.Split(strings.TrimPrefix(strings.SplitN(u, "?", 2)[0], "pkcs11:"), ";") {
		if v, ok := strings.CutPrefix(attr, "token="); ok {
			return v
		}
	}
	t.Fatalf("no token label in %s", u)
	return ""
}

// TestBackupRestoreDrill: a 2-of-3 cluster creates a wallet with both key
// types and signs; node0 is stopped and backed up to an offline age key; its
// SoftHSM2 token and its store are destroyed; a new token is initialised, the
// backup restored into a new store, and node0 restarted on them with its new
// identity key. With node1 stopped, a signing must include node0, and both
// signatures verify under the wallet's original public keys.
func TestBackupRestoreDrill(t *testing.T) {
	testhsm.Setup(t)
	keys := newKeys(t)
	uris := map[string]string{}
	c := startWith(t, 3, 1, keys, func(id string) string {
		uris[id] = testhsm.Token(t, id)
		return uris[id]
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl := newClient(t, c, keys["svcA"])
	res, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: "w-drill"})
	if err != nil {
		t.Fatalf("keygen: %v", err)
	}
	ecPub, edPub := mustHex(t, res.ECDSAPubKey), mustHex(t, res.EdDSAPubKey)
	signBoth(t, ctx, cl, "w-drill", "before", ecPub, edPub)

	// Backup, as `signerctl backup` does it: node stopped, its hardware and
	// store opened by the operator.
	c.StopNode("node0")
	if err := c.DetachHardware("node0"); err != nil {
		t.Fatal(err)
	}
	recovery, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "node0.backup")
	withHardware(t, ctx, uris["node0"], c.StorePath("node0"), func(b hsm.Backend, st *store.Store) {
		sum, err := backup.WriteFile(ctx, b, st, "node0", file, recovery.Recipient())
		if err != nil {
			t.Fatalf("backup: %v", err)
		}
		if sum.Shares != 2 || sum.Wallets != 1 {
			t.Fatalf("backup summary %+v, want 2 shares of 1 wallet", sum)
		}
	})

	// Disaster: the token and the store are gone.
	if out, err := exec.Command("softhsm2-util", "--delete-token", "--token", tokenLabel(t, uris["node0"])).CombinedOutput(); err != nil {
		t.Fatalf("delete token: %v\n%s", err, out)
	}
	if b, err := hsmuri.Open(ctx, uris["node0"], nil); !errors.Is(err, hsm.ErrTokenNotFound) {
		if b != nil {
			_ = b.Close()
		}
		t.Fatalf("old token still opens: %v", err)
	}
	if err := os.Remove(c.StorePath("node0")); err != nil {
		t.Fatal(err)
	}

	// Recovery: a new token with new keys, the backup restored into a new store.
	newURI := testhsm.Token(t, "node0-new")
	if err := hsmuri.Init(ctx, newURI, nil); err != nil {
		t.Fatal(err)
	}
	withHardware(t, ctx, newURI, c.StorePath("node0"), func(b hsm.Backend, st *store.Store) {
		if _, err := backup.RestoreFile(ctx, b, st, "node0", file, recovery); err != nil {
			t.Fatalf("restore: %v", err)
		}
	})
	oldKey := c.NodeKeys["node0"].(*ecdsa.PublicKey)
	if err := c.ReplaceHardware(ctx, "node0", newURI); err != nil {
		t.Fatalf("restart node0 on the new token: %v", err)
	}
	if c.NodeKeys["node0"].(*ecdsa.PublicKey).Equal(oldKey) {
		t.Fatal("node0 kept its old identity key on a new token")
	}

	// The client backend restarts with node0's new key (its old instance
	// would take svcA's results from the shared consumer and reject node0's).
	_ = cl.Close()
	cl = newClient(t, c, keys["svcA"])

	// node1 down: the only t+1 ready signers are node0 and node2.
	c.StopNode("node1")
	waitFor(t, func() bool { // WaitReady polls until its context ends: keep that short
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		return c.WaitReady(short, "node1") != nil
	})
	start := time.Now()
	signBoth(t, ctx, cl, "w-drill", "after", ecPub, edPub)
	t.Logf("node0 and node2 signed with the restored shares in %s", time.Since(start).Round(time.Millisecond))
	// Its peer's result may reach the client before node0 has finished.
	waitFor(t, func() bool { return c.Node("node0").Stats().Succeeded == 2 })
}

// withHardware opens a key backend and a store as an operator command does
// (the hardware first) and closes both after fn.
func withHardware(t *testing.T, ctx context.Context, uri, storePath string, fn func(hsm.Backend, *store.Store)) {
	t.Helper()
	b, err := hsmuri.Open(ctx, uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st, err := store.Open(storePath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fn(b, st)
}
