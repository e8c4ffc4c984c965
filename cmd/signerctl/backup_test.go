package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/hwsigner/signer/hsm"
	hsmuri "github.com/hwsigner/signer/hsm/uri"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/signer/store"
)

// backup and restore end to end through the binary on SoftHSM2 tokens:
// recipients from --to and --to-file, node ID from the config, JSON output,
// and the refusals an operator meets (another node, a share already there,
// a token without keys).
func TestBackupRestoreCLI(t *testing.T) {
	bin := buildCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	srcURI := testhsm.Token(t, "cli-src")
	if _, stderr, err := run(t, nil, bin, "init", "--key-uri", srcURI); err != nil {
		t.Fatalf("init: %v\n%s", err, stderr)
	}
	srcDB := filepath.Join(dir, "src.db")
	share := make([]byte, 2000)
	_, _ = rand.Read(share)
	bind := hsm.Binding{NodeID: "node0", Purpose: "share", WalletID: "wallet-cli", KeyType: "ed25519", Epoch: 1}
	func() {
		b, err := hsmuri.Open(ctx, srcURI, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		st, err := store.Open(srcDB, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		sealed, err := hsm.NewSealer(b).Seal(ctx, share, bind)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutShare(store.WalletMeta{WalletID: "wallet-cli", KeyType: "ed25519", Epoch: 1}, sealed); err != nil {
			t.Fatal(err)
		}
	}()

	id1, _ := age.GenerateX25519Identity()
	id2, _ := age.GenerateX25519Identity()
	recFile := filepath.Join(dir, "recipients.txt")
	idFile := filepath.Join(dir, "recovery.key")
	cfg := filepath.Join(dir, "node0.yaml")
	for path, content := range map[string]string{
		recFile: "# offline recovery key 1\n" + id1.Recipient().String() + "\n\n",
		idFile:  "# recovery key 1\n" + id1.String() + "\n",
		cfg:     "node_id: node0\nkey_uri: \"" + srcURI + "\"\nstore_path: " + srcDB + "\n",
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "node0.backup")
	out, stderr, err := run(t, nil, bin, "--json", "backup", "--config", cfg, "--to", id2.Recipient().String(), "--to-file", recFile, "--out", file)
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, stderr)
	}
	var got struct {
		NodeID     string `json:"node_id"`
		Shares     int    `json:"shares"`
		Wallets    int    `json:"wallets"`
		Recipients int    `json:"recipients"`
		File       string `json:"file"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.NodeID != "node0" || got.Shares != 1 || got.Wallets != 1 || got.Recipients != 2 || got.File != file {
		t.Fatalf("backup output %q: %+v %v", out, got, err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	if strings.Contains(out+stderr, hex.EncodeToString(share[:16])) {
		t.Fatal("backup printed share bytes")
	}

	dstURI := testhsm.Token(t, "cli-dst")
	dstDB := filepath.Join(dir, "dst.db")
	restore := func(args ...string) (string, string, error) {
		return run(t, nil, bin, append([]string{"restore", "--key-uri", dstURI, "--store", dstDB, "--from", file, "--identity", idFile}, args...)...)
	}
	if _, stderr, err := restore("--node-id", "node0"); err == nil || !strings.Contains(stderr, "signerctl init") {
		t.Fatalf("restore onto a token without keys: %v %q", err, stderr)
	}
	if _, stderr, err := run(t, nil, bin, "init", "--key-uri", dstURI); err != nil {
		t.Fatalf("init: %v\n%s", err, stderr)
	}
	if _, stderr, err := restore("--node-id", "node1"); err == nil || !strings.Contains(stderr, `"node0"`) || !strings.Contains(stderr, `"node1"`) {
		t.Fatalf("restore as another node: %v %q", err, stderr)
	}
	out, stderr, err = restore("--node-id", "node0")
	if err != nil || !strings.Contains(out, "restored 1 shares of 1 wallets of node node0") || !strings.Contains(stderr, "signerctl identity") {
		t.Fatalf("restore: %v\n%s\n%s", err, out, stderr)
	}
	if _, stderr, err := restore("--node-id", "node0"); err == nil || !strings.Contains(stderr, "already holds") {
		t.Fatalf("second restore: %v %q", err, stderr)
	}
	if strings.Contains(stderr, id1.String()) {
		t.Fatal("an error shows the age identity")
	}

	b, err := hsmuri.Open(ctx, dstURI, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st, err := store.Open(dstDB, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, sealed, err := st.Share("wallet-cli", "ed25519")
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := hsm.NewSealer(b).Open(ctx, sealed, bind); err != nil || !bytes.Equal(pt, share) {
		t.Fatalf("restored share does not open to the original under the new token: %v", err)
	}
}
