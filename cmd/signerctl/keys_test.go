package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
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
	"github.com/hwsigner/signer/keyfile"
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
	printed, err := keyfile.ParsePublicKey(out)
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

	// The store is locked while in use (here by this test, as by a running
	// signerd): a clear error. (swtpm serves one connection: let go of it.)
	_ = b.Close()
	_, stderr, err = run(t, nil, bin, "key", "rotate", "--key-uri", u, "--store", dbPath)
	if err == nil || !strings.Contains(stderr, "locked") || !strings.Contains(stderr, "another signerd") {
		t.Fatalf("rotate on a locked store: %v %q", err, stderr)
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

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// Bad operator input to `key rotate` on a PKCS#11 node: each gets an error
// that says what is wrong and what to do, and the store file is byte for
// byte unchanged. Then the right input rotates and the share still opens.
func TestKeyRotateBadInputLeavesStoreUnchanged(t *testing.T) {
	bin := buildCLI(t)
	u := testhsm.Token(t, "rot") // sets SOFTHSM2_CONF for this process and its children
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := hsmuri.Init(ctx, u, nil); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(t.TempDir(), "node.db")
	bind := hsm.Binding{NodeID: "node0", Purpose: "share", WalletID: "w1", KeyType: "ed25519", Epoch: 1}
	func() {
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
		blob, err := hsm.NewSealer(b).Seal(ctx, []byte("share"), bind)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutShare(store.WalletMeta{WalletID: "w1", KeyType: "ed25519", Epoch: 1, Threshold: 1, Committee: []string{"node0", "node1"}}, blob); err != nil {
			t.Fatal(err)
		}
	}()
	before := fileSum(t, dbPath)

	pinFile := u[strings.Index(u, "pin-source=file:")+len("pin-source=file:"):]
	wrongPin := filepath.Join(t.TempDir(), "wrong-pin")
	if err := os.WriteFile(wrongPin, []byte("not-the-pin"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, uri string
		want      []string
	}{
		{"wrong PIN", strings.Replace(u, pinFile, wrongPin, 1), []string{"wrong PIN", "pin-source"}},
		{"missing PIN file", strings.Replace(u, pinFile, pinFile+".gone", 1), []string{"secret source unreadable", ".gone"}},
		{"missing token", strings.Replace(u, "token=rot-", "token=gone-", 1), []string{"token not found", "signerctl init"}},
		{"missing module", strings.Replace(u, "/usr/lib/softhsm/libsofthsm2.so", "/nonexistent/libsofthsm2.so", 1), []string{"module not found", "apt install softhsm2"}},
		{"pin in the URI", u + "&pin-value=1234", []string{"pin-value is refused"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := run(t, nil, bin, "key", "rotate", "--key-uri", tc.uri, "--store", dbPath)
			if err == nil {
				t.Fatal("rotate succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Fatalf("error %q does not mention %q", stderr, w)
				}
			}
			if strings.Contains(stderr, "not-the-pin") {
				t.Fatal("the PIN is in the error")
			}
			if fileSum(t, dbPath) != before {
				t.Fatal("store changed")
			}
		})
	}

	out, stderr, err := run(t, nil, bin, "key", "rotate", "--key-uri", u, "--store", dbPath)
	if err != nil || !strings.Contains(out, "share-kek/v1 -> share-kek/v2; 1 sealed values rewrapped") {
		t.Fatalf("rotate: %v %s %s", err, out, stderr)
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
	_, raw, _ := st.Share("w1", "ed25519")
	if pt, err := hsm.NewSealer(b).Open(ctx, raw, bind); err != nil || string(pt) != "share" {
		t.Fatalf("share after rotate: %v", err)
	}
}
