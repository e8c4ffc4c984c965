// Package testhsm gives tests real SoftHSM2 PKCS#11 tokens.
//
// # One configuration per test process, one token per call
//
// SoftHSM2 reads SOFTHSM2_CONF when the module is initialised (C_Initialize),
// and a PKCS#11 module is process-global: every Backend in a test binary talks
// to the same loaded library. So the helper does not give each test its own
// configuration. On first use a test process creates ONE private directory,
// os.TempDir()/hwsigner-softhsm-<pid>-<random>, holding softhsm2.conf and a
// tokens/ directory (never the machine's global configuration), and points
// SOFTHSM2_CONF at it for the whole process with os.Setenv. Every call to
// SoftHSM (or Token) then initialises a NEW token in that one token directory,
// with its own label and random PIN, so any number of tests, and a cluster
// test's node0..node4, each get their own tokens side by side in one process.
//
// Why not t.Setenv: it forbids t.Parallel, and it restores the old value when
// the test ends, while the module, once finalised, re-reads the variable at
// its next C_Initialize, possibly from a later test: the value must be the same
// for the life of the process. The process-wide value never changes.
//
// Labels: SoftHSM(t, "node0") returns a token labelled exactly "node0" the
// first time in a process; a later call with a label already used gets
// "node0-2", "node0-3", ... (labels are at most 32 bytes). Always use the
// returned URI, not the label you asked for.
//
// Cleanup: call Main from TestMain to remove the directory when the tests end.
// Without it the directory stays behind, and the next test process that uses
// this package removes directories left by processes that no longer run.
//
// If SoftHSM2 is not installed a test fails when CI=true (in CI a hardware
// test that skips is a failure) and skips otherwise.
package testhsm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/hsm/pkcs11"
)

// Module is the SoftHSM2 PKCS#11 module path on Debian and Ubuntu.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// moduleCandidates are tried in order after $SOFTHSM2_MODULE.
var moduleCandidates = []string{
	Module,
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// ModulePath returns the SoftHSM2 module to use: $SOFTHSM2_MODULE if set,
// else the first of the usual install paths that exists, else "".
func ModulePath() string {
	if p := os.Getenv("SOFTHSM2_MODULE"); p != "" {
		return p
	}
	for _, p := range moduleCandidates {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

const dirPrefix = "hwsigner-softhsm-"

var state struct {
	sync.Mutex
	dir    string // the process's private directory, once made
	conf   string
	labels map[string]bool
}

// requireModule fails (CI=true) or skips the test when SoftHSM2 is missing.
func requireModule(t testing.TB) string {
	t.Helper()
	m := ModulePath()
	if m != "" {
		if _, err := os.Stat(m); err == nil {
			return m
		}
	}
	msg := "SoftHSM2 is not installed (no libsofthsm2.so; run softhsm-test/install-deps.sh or set SOFTHSM2_MODULE)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + ": a hardware test may not skip in CI")
	}
	t.Skip(msg)
	return ""
}

// Setup points this process at its private SoftHSM2 configuration, creating
// it on first use, and returns the configuration file's path. SoftHSM and
// Token call it; call it yourself only to set the environment up before
// something else loads the module.
func Setup(t testing.TB) string {
	t.Helper()
	requireModule(t)
	state.Lock()
	defer state.Unlock()
	if state.dir == "" {
		sweepStale()
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", dirPrefix, os.Getpid()))
		if err != nil {
			t.Fatalf("testhsm: %v", err)
		}
		conf, err := WriteConfig(dir)
		if err != nil {
			_ = os.RemoveAll(dir)
			t.Fatalf("testhsm: %v", err)
		}
		if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
			t.Fatalf("testhsm: %v", err)
		}
		state.dir, state.conf, state.labels = dir, conf, map[string]bool{}
	}
	return state.conf
}

// WriteConfig writes dir/softhsm2.conf naming dir/tokens as the token
// directory (created 0700) and returns the file's path. It does what
// softhsm-test/softhsm-setup.sh does.
func WriteConfig(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if strings.ContainsAny(abs, " \t\r\n") {
		return "", fmt.Errorf("SoftHSM2 cannot use a token directory with white space: %q", abs)
	}
	tokens := filepath.Join(abs, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return "", err
	}
	conf := filepath.Join(abs, "softhsm2.conf")
	body := "# Private SoftHSM2 configuration (hwsigner tests)\n" +
		"directories.tokendir = " + tokens + "\n" +
		"objectstore.backend = file\n" +
		"log.level = ERROR\n" +
		"slots.removable = false\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return "", err
	}
	return conf, nil
}

// sweepStale removes directories left by earlier test processes that no
// longer run. Call with state locked.
func sweepStale() {
	entries, err := os.ReadDir(os.TempDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), dirPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || pid == os.Getpid() || alive(pid) {
			continue
		}
		_ = os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Main runs the tests and removes the process's SoftHSM2 directory. Use it
// as: func TestMain(m *testing.M) { testhsm.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// Cleanup removes the process's SoftHSM2 directory, if one was made. Call it
// only when no test will use a token again.
func Cleanup() {
	state.Lock()
	defer state.Unlock()
	if state.dir != "" {
		_ = os.RemoveAll(state.dir)
		state.dir, state.conf, state.labels = "", "", nil
	}
}

// SoftHSM initialises a new SoftHSM2 token for the test (see the package
// documentation for labels), writes its random user PIN to a 0600 file in
// t.TempDir() and returns the token's URI (object share-kek, pin-source the
// file) and the PIN file's path. The token has no keys yet: Open it and call
// InitKeys.
func SoftHSM(t testing.TB, tokenLabel string) (uri, pinFile string) {
	t.Helper()
	module := requireModule(t)
	Setup(t)
	if tokenLabel == "" {
		tokenLabel = "token"
	}
	pin := randomHex(t, 16)
	so := randomHex(t, 16)
	defer hsm.Zero(pin)
	defer hsm.Zero(so)
	var label string
	for n := 1; ; n++ {
		label = nextLabel(tokenLabel, n)
		if label == "" {
			continue // already used in this process
		}
		err := pkcs11.InitToken(context.Background(), module, label, so, pin)
		if err == nil {
			break
		}
		if errors.Is(err, hsm.ErrKeyExists) && n < 1000 {
			continue
		}
		t.Fatalf("testhsm: init token %q: %v", label, err)
	}
	pinFile = filepath.Join(t.TempDir(), label+".pin")
	if err := os.WriteFile(pinFile, pin, 0o600); err != nil {
		t.Fatalf("testhsm: %v", err)
	}
	cfg := pkcs11.Config{ModulePath: module, Token: label, Object: pkcs11.DefaultObject, PINSource: "file:" + pinFile}
	return cfg.String(), pinFile
}

// nextLabel reserves candidate n for base (base, base-2, base-3, ...) and
// returns it, or "" when this process used it already.
func nextLabel(base string, n int) string {
	suffix := ""
	if n > 1 {
		suffix = "-" + strconv.Itoa(n)
	}
	if len(base)+len(suffix) > 32 {
		base = base[:32-len(suffix)]
	}
	label := base + suffix
	state.Lock()
	defer state.Unlock()
	if state.labels[label] {
		return ""
	}
	state.labels[label] = true
	return label
}

// Token is SoftHSM returning only the URI.
func Token(t testing.TB, tokenLabel string) string {
	t.Helper()
	uri, _ := SoftHSM(t, tokenLabel)
	return uri
}

func randomHex(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	out := []byte(hex.EncodeToString(b))
	hsm.Zero(b)
	return out
}
