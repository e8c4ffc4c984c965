package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hwsigner/signer/hsm"
	hsmuri "github.com/hwsigner/signer/hsm/uri"
	"github.com/hwsigner/signer/internal/testhsm"
	"github.com/hwsigner/signer/internal/testtpm"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/signer/store"
)

// buildCLI builds this command into a temporary directory.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "signerctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func run(t *testing.T, env []string, bin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// The operator's key commands, end to end on a swtpm: init prints the
// identity key, a second init is refused, key rotate moves a real store's
// sealed values to the new version and they still open.
func TestKeyCommandsTPM(t *testing.T) {
	bin := buildCLI(t)
	sw := testtpm.Start(t)
	u := sw.URI("pcrs=16")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	out, stderr, err := run(t, nil, bin, "init", "--key-uri", u)
	if err != nil {
		t.Fatalf("init: %v\n%s", err, stderr)
	}
	printed, err := protocol.ParsePublicKey(out)
	if err != nil {
		t.Fatalf("init printed %q: %v", out, err)
	}
	if _, stderr, err := run(t, nil, bin, "init", "--key-uri", u); err == nil || !strings.Contains(stderr, "key already exists") || !strings.Contains(stderr, "key rotate") {
		t.Fatalf("second init: %v %q", err, stderr)
	}

	dbPath := filepath.Join(t.TempDir(), "node.db")
	bind := hsm.Binding{NodeID: "node0", Purpose: "secret", WalletID: "s1"}
	func() { // seal a value as the node would, then let go of the TPM and the store
		b, err := hsmuri.Open(ctx, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		id, err := b.Identity(ctx)
		if err != nil || !id.Public().(*ecdsa.PublicKey).Equal(printed) {
			t.Fatalf("init printed another key than the node's identity (%v)", err)
		}
		st, err := store.Open(dbPath, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		blob, err := hsm.NewSealer(b).Seal(ctx, []byte("node secret"), bind)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutSecret("s1", blob); err != nil {
			t.Fatal(err)
		}
	}()

	cfg := filepath.Join(t.TempDir(), "signerd.yaml")
	if err := os.WriteFile(cfg, []byte("key_uri: \""+u+"\"\nstore_path: "+dbPath+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err = run(t, nil, bin, "key", "rotate", "--config", cfg)
	if err != nil || !strings.Contains(out, "share-kek/v1 -> share-kek/v2; 1 sealed values rewrapped") {
		t.Fatalf("key rotate: %v\n%s\n%s", err, out, stderr)
	}
	out, _, err = run(t, nil, bin, "key", "rewrap", "--key-uri", u, "--store", dbPath)
	if err != nil || !strings.Contains(out, "0 sealed values rewrapped to share-kek/v2") {
		t.Fatalf("key rewrap: %v %s", err, out)
	}

	b, err := hsmuri.Open(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st, err := store.Open(dbPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	raw, _ := st.Secret("s1")
	if pb, _ := hsm.ParseBlob(raw); pb == nil || pb.Key.Version != 2 {
		t.Fatalf("secret not on v2: %+v", pb)
	}
	if pt, err := hsm.NewSealer(b).Open(ctx, raw, bind); err != nil || string(pt) != "node secret" {
		t.Fatalf("open after rotate: %v", err)
	}

	// The store is locked while in use: a clear error, nothing changed.
	_, stderr, err = run(t, nil, bin, "key", "rotate", "--key-uri", u, "--store", dbPath)
	if err == nil || !strings.Contains(stderr, "locked") {
		t.Fatalf("rotate on a locked store: %v %q", err, stderr)
	}
	if b.ActiveKey().Version != 2 {
		t.Fatalf("active key moved to %s", b.ActiveKey())
	}
}

// softhsm-setup.sh makes a private SoftHSM2 config and an initialised token
// with the node's keys, through signerctl, with no PIN on any command line.
func TestSoftHSMSetupScript(t *testing.T) {
	testhsm.Setup(t) // skips without SoftHSM2, fails in CI
	bin := buildCLI(t)
	dir := t.TempDir()
	script := filepath.Join("..", "..", "softhsm-test", "softhsm-setup.sh")
	cmd := exec.Command("bash", script, dir, "node7")
	cmd.Env = append(os.Environ(), "SIGNERCTL="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm-setup: %v\n%s", err, out)
	}
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = strings.Trim(v, "'")
		}
	}
	if env["SOFTHSM2_CONF"] != filepath.Join(dir, "softhsm2.conf") || !strings.HasPrefix(env["KEY_URI"], "pkcs11:token=node7;") {
		t.Fatalf("setup printed %q", out)
	}
	for _, f := range []string{"node7.pin", "node7.so-pin"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi.Mode(), err)
		}
	}
	pem, err := os.ReadFile(env["IDENTITY_PEM"])
	if err != nil {
		t.Fatal(err)
	}
	got, stderr, err := run(t, []string{"SOFTHSM2_CONF=" + env["SOFTHSM2_CONF"]}, bin, "identity", "--key-uri", env["KEY_URI"])
	if err != nil || got != string(pem) {
		t.Fatalf("identity: %v %q, setup saved %q", err, stderr, pem)
	}
	// Running it again is refused: the token exists.
	cmd = exec.Command("bash", script, dir, "node7")
	cmd.Env = append(os.Environ(), "SIGNERCTL="+bin)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "exists already") {
		t.Fatalf("second setup: %v %s", err, out)
	}
}
