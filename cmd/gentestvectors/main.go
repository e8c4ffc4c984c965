// Command gentestvectors writes the shared test vectors (package
// internal/testvectors) to testdata/vectors/. Run it from the repository
// root after a change of the wire format:
//
//	go run ./cmd/gentestvectors -out testdata/vectors
//
// It is deterministic: fixed keys, Ed25519 signatures, and the ECDSA
// signatures of the previous files kept when they still verify. The Go tests
// (protocol/vectors_test.go and others) regenerate and compare; the
// TypeScript client's tests read the same files.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hwsigner/signer/internal/testvectors"
)

func main() {
	out := flag.String("out", "testdata/vectors", "output directory")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gentestvectors:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	prev, err := testvectors.ReadDir(dir)
	if err != nil {
		return err
	}
	files, err := testvectors.Generate(prev)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range testvectors.Files {
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o644); err != nil {
			return err
		}
		fmt.Printf("wrote %s (%d bytes)\n", filepath.Join(dir, name), len(files[name]))
	}
	return nil
}
