// Package systemd_test checks the systemd units and install.sh in this
// directory: install.sh into a temporary root (twice: a changed config
// survives), `systemd-analyze verify` on the installed units, and
// `systemd-analyze security --offline` with the exposure at most 2.0.
//
// systemd-analyze is not needed for the install test; the unit tests skip
// without it, or fail when CI=true. systemd need not be running (they use
// --root= and --offline=true).
package systemd_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// maxExposure is the highest `systemd-analyze security` rating a unit may
// have (0 best, 10 worst; 2.0 is still "OK").
const maxExposure = 2.0

var units = []string{"signerd@.service", "signerd-tpm@.service"}

// distLayout copies what a dist tarball holds into a new directory: install.sh
// at the top, bin/ (stub binaries: systemd-analyze only checks that
// ExecStart= is executable), systemd/, docs/, README.md.
func distLayout(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	for _, f := range []struct{ from, to string }{
		{"install.sh", "install.sh"},
		{"signerd@.service", "systemd/signerd@.service"},
		{"signerd-tpm@.service", "systemd/signerd-tpm@.service"},
		{"signerd.sysusers", "systemd/signerd.sysusers"},
		{"signerd.tmpfiles", "systemd/signerd.tmpfiles"},
		{"../docs/signerd.example.yaml", "docs/signerd.example.yaml"},
		{"../README.md", "README.md"},
	} {
		copyFile(t, f.from, filepath.Join(src, f.to))
	}
	for _, b := range []string{"signerd", "signerctl"} {
		writeFile(t, filepath.Join(src, "bin", b), "#!/bin/sh\necho "+b+" v1\n", 0o755)
	}
	return src
}

func install(t *testing.T, script string, args ...string) string {
	t.Helper()
	cmd := exec.Command("sh", append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), "DESTDIR=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestInstall(t *testing.T) {
	src := distLayout(t)
	root := t.TempDir()
	install(t, filepath.Join(src, "install.sh"), "--destdir", root, "--node", "node0")

	for path, mode := range map[string]os.FileMode{
		"usr/bin/signerd":                             0o755,
		"usr/bin/signerctl":                           0o755,
		"usr/lib/systemd/system/signerd@.service":     0o644,
		"usr/lib/systemd/system/signerd-tpm@.service": 0o644,
		"usr/lib/sysusers.d/signerd.conf":             0o644,
		"usr/lib/tmpfiles.d/signerd.conf":             0o644,
		"usr/share/doc/hwsigner/README.md":            0o644,
		"usr/share/doc/hwsigner/signerd.example.yaml": 0o644,
		"etc/signerd/node0.yaml":                      0o640,
		"etc/signerd/signerd.example.yaml":            0o640,
		"etc/signerd":                                 0o750 | os.ModeDir,
	} {
		fi, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
		}
	}

	// Second run: new binaries replace the old, a changed config stays.
	conf := filepath.Join(root, "etc/signerd/node0.yaml")
	writeFile(t, conf, "node_id: node0 # edited\n", 0o640)
	writeFile(t, filepath.Join(src, "bin/signerd"), "#!/bin/sh\necho signerd v2\n", 0o755)
	out := install(t, filepath.Join(src, "install.sh"), "--destdir", root, "--node", "node0")
	if got := readFile(t, conf); got != "node_id: node0 # edited\n" {
		t.Errorf("second install overwrote the config: %q", got)
	}
	if !strings.Contains(out, "node0.yaml (exists, kept)") {
		t.Errorf("second install does not say it kept the config:\n%s", out)
	}
	if got := readFile(t, filepath.Join(root, "usr/bin/signerd")); !strings.Contains(got, "v2") {
		t.Errorf("second install kept the old binary: %q", got)
	}
	if left, _ := filepath.Glob(filepath.Join(root, "*/*/*.new.*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}

	// --prefix moves binaries and units; ExecStart= follows.
	local := t.TempDir()
	install(t, filepath.Join(src, "install.sh"), "--destdir", local, "--prefix", "/usr/local")
	unit := readFile(t, filepath.Join(local, "usr/local/lib/systemd/system/signerd@.service"))
	if !strings.Contains(unit, "\nExecStart=/usr/local/bin/signerd run --config /etc/signerd/%i.yaml\n") {
		t.Errorf("--prefix /usr/local: ExecStart= not rewritten")
	}
	if _, err := os.Stat(filepath.Join(local, "usr/local/bin/signerd")); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(local, "etc/signerd/node0.yaml")); err == nil {
		t.Error("without --node, install.sh created a node config")
	}
}

// TestInstallFromCheckout: systemd/install.sh in a checkout takes bin/ and
// docs/ from one level up.
func TestInstallFromCheckout(t *testing.T) {
	src := distLayout(t)
	if err := os.Rename(filepath.Join(src, "install.sh"), filepath.Join(src, "systemd/install.sh")); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	install(t, filepath.Join(src, "systemd/install.sh"), "--destdir", root)
	for _, p := range []string{"usr/bin/signerd", "usr/lib/systemd/system/signerd@.service", "etc/signerd/signerd.example.yaml"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Error(err)
		}
	}
}

// analyzeRoot installs into a temporary root that systemd-analyze can load
// units from: ours, plus the host's targets and slices they depend on.
func analyzeRoot(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze not found (apt install systemd)")
		}
		t.Skip("systemd-analyze not found")
	}
	root := t.TempDir()
	install(t, filepath.Join(distLayout(t), "install.sh"), "--destdir", root)
	unitDir := filepath.Join(root, "usr/lib/systemd/system")
	var n int
	for _, host := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		for _, pat := range []string{"*.target", "*.slice"} {
			m, _ := filepath.Glob(filepath.Join(host, pat))
			for _, f := range m {
				dst := filepath.Join(unitDir, filepath.Base(f))
				if fi, err := os.Lstat(f); err != nil || !fi.Mode().IsRegular() {
					continue
				}
				if _, err := os.Stat(dst); err == nil {
					continue
				}
				copyFile(t, f, dst)
				n++
			}
		}
	}
	if n == 0 {
		t.Fatal("no systemd targets on this host (/usr/lib/systemd/system/*.target)")
	}
	return root
}

func instance(unit string) string { return strings.Replace(unit, "@.", "@node0.", 1) }

func TestUnitsVerify(t *testing.T) {
	root := analyzeRoot(t)
	args := []string{"verify", "--root=" + root, "--man=no"}
	for _, u := range units {
		args = append(args, instance(u))
	}
	out, err := exec.Command("systemd-analyze", args...).CombinedOutput()
	// verify reports unknown keys and bad values as warnings (exit 0):
	// any output is a failure.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for (\S+): ([0-9]+\.[0-9]+)`)

func TestUnitsSecurity(t *testing.T) {
	root := analyzeRoot(t)
	for _, u := range units {
		t.Run(u, func(t *testing.T) {
			args := []string{"security", "--offline=true", "--root=" + root, "--no-pager",
				"--threshold=" + strconv.Itoa(int(maxExposure*10)), instance(u)}
			cmd := exec.Command("systemd-analyze", args...)
			cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0")
			out, err := cmd.CombinedOutput()
			m := exposureRE.FindSubmatch(out)
			if m == nil {
				t.Fatalf("systemd-analyze %s: no exposure level (%v)\n%s", strings.Join(args, " "), err, out)
			}
			exposure, perr := strconv.ParseFloat(string(m[2]), 64)
			if perr != nil {
				t.Fatal(perr)
			}
			t.Logf("%s: exposure %.1f", m[1], exposure)
			if exposure > maxExposure || err != nil {
				t.Fatalf("%s: exposure %.1f, want <= %.1f (%v)\n%s", m[1], exposure, maxExposure, err, out)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(data), fi.Mode().Perm())
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
