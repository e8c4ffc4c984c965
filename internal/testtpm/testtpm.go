// Package testtpm gives tests a swtpm TPM 2.0 simulator, started and stopped
// with the repository's softhsm-test/swtpm-start.sh and swtpm-stop.sh (the
// same scripts CI and the demo use).
package testtpm

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// SWTPM is one running (or stopped) swtpm with its state directory.
type SWTPM struct {
	t    testing.TB
	Dir  string // state and logs
	Port string // TPM command port on 127.0.0.1
}

func scripts(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testtpm: cannot locate the repository")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "softhsm-test")
}

// Start starts a fresh swtpm in a temporary directory and stops it when the
// test ends. Without swtpm installed the test is skipped, except in CI
// (CI=true), where that is a failure.
func Start(t testing.TB) *SWTPM {
	t.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("swtpm is required in CI: %v (run softhsm-test/install-deps.sh)", err)
		}
		t.Skipf("swtpm not installed: %v", err)
	}
	// Not t.TempDir(): its path holds the test name, and swtpm cannot parse
	// a state path with a comma in it (subtest names often have one).
	dir, err := os.MkdirTemp("", "swtpm-")
	if err != nil {
		t.Fatal(err)
	}
	s := &SWTPM{t: t, Dir: dir}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	s.start("")
	t.Cleanup(s.Stop)
	return s
}

func (s *SWTPM) start(port string) {
	s.t.Helper()
	args := []string{filepath.Join(scripts(s.t), "swtpm-start.sh"), s.Dir}
	if port != "" {
		args = append(args, port)
	}
	out, err := exec.Command("bash", args...).CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "swtpm.log"))
		s.t.Fatalf("swtpm-start: %v\n%s\nswtpm.log:\n%s", err, out, log)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "SWTPM_PORT="); ok {
			s.Port = v
		}
	}
	if s.Port == "" {
		s.t.Fatalf("swtpm-start printed no port:\n%s", out)
	}
}

// URI is the tpm: URI of this simulator, with an optional query
// ("pcrs=16").
func (s *SWTPM) URI(query string) string {
	u := "tpm:host=127.0.0.1;port=" + s.Port
	if query != "" {
		u += "?" + query
	}
	return u
}

// Stop stops the simulator; its state stays in Dir. Stopping twice is fine.
func (s *SWTPM) Stop() {
	out, err := exec.Command("bash", filepath.Join(scripts(s.t), "swtpm-stop.sh"), s.Dir).CombinedOutput()
	if err != nil {
		s.t.Errorf("swtpm-stop: %v\n%s", err, out)
	}
}

// Restart stops the simulator and starts it again on the same port and state:
// the same TPM, with its transient objects and sessions gone.
func (s *SWTPM) Restart() {
	s.t.Helper()
	s.Stop()
	s.start(s.Port)
}
