// Command genfixtures writes the Paillier pre-parameter fixture file that
// tests and benchmarks load, so that `make test` never searches for safe
// primes. Run it through `make fixtures`. The sets it writes are public and
// for tests only.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"time"

	"github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	"github.com/hwsigner/signer/signer/preparams"
)

func main() {
	out := flag.String("out", "testdata/preparams.json", "fixture file to write")
	count := flag.Int("count", 7, "number of pre-parameter sets (one per node of the largest test cluster)")
	flag.Parse()
	if err := run(*out, *count); err != nil {
		fmt.Fprintln(os.Stderr, "genfixtures:", err)
		os.Exit(1)
	}
}

func run(out string, count int) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	sets := make([]*keygen.LocalPreParams, 0, count)
	for i := 0; i < count; i++ {
		start := time.Now()
		pp, err := preparams.Generate(ctx, runtime.NumCPU())
		if err != nil {
			return err
		}
		sets = append(sets, pp)
		// Write after every set, so an interrupted run keeps what it made.
		if err := preparams.WriteFixtures(out, sets); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "set %d/%d generated in %s\n", i+1, count, time.Since(start).Round(time.Second))
	}
	return nil
}
