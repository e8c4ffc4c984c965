package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/protocol"
)

// benchReport is what `signerctl bench` prints.
type benchReport struct {
	Op          string         `json:"op"`
	N           int            `json:"n"`
	Concurrency int            `json:"concurrency"`
	Succeeded   int            `json:"succeeded"`
	Errors      map[string]int `json:"errors_by_code"`
	WallSeconds float64        `json:"wall_seconds"`
	OpsPerMin   float64        `json:"ops_per_minute"`
	P50ms       float64        `json:"p50_ms"`
	P95ms       float64        `json:"p95_ms"`
	P99ms       float64        `json:"p99_ms"`
}

// percentile of sorted durations, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func errorCode(err error) string {
	var re *client.ResultError
	switch {
	case errors.As(err, &re):
		return re.Code
	case errors.Is(err, context.DeadlineExceeded):
		return "CLIENT_TIMEOUT"
	default:
		return "CLIENT_ERROR"
	}
}

func benchCmd(g *globals) *cobra.Command {
	var op, walletID string
	var n, conc int
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load the cluster with keygens or signatures and report throughput and latency",
		Long: `bench sends --n requests of one kind, --concurrency at a time, through the
normal client path (signed requests on JetStream, node-signed results on this
client's subjects), shows a progress bar, then prints ops/min, p50/p95/p99
latency, successes and errors by code. sign-ecdsa and sign-eddsa first create
a wallet for the run unless --wallet names one.`,
		Example: "  signerctl bench --op sign-ecdsa --n 100 --concurrency 4\n  signerctl bench --op keygen --n 5 --json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 1 || conc < 1 {
				return errors.New("--n and --concurrency must be at least 1")
			}
			var keyType string
			switch op {
			case "keygen":
			case "sign-ecdsa":
				keyType = protocol.KeyTypeSecp256k1
			case "sign-eddsa":
				keyType = protocol.KeyTypeEd25519
			default:
				return fmt.Errorf("--op %q: want keygen, sign-ecdsa or sign-eddsa", op)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			cl, done, err := g.connect(ctx)
			if err != nil {
				return err
			}
			defer done()
			runID := make([]byte, 4)
			_, _ = rand.Read(runID)
			tag := hex.EncodeToString(runID)
			if keyType != "" && walletID == "" {
				walletID = "bench-" + tag
				fmt.Fprintf(os.Stderr, "creating wallet %s for the run...\n", walletID)
				if _, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: walletID, KeyTypes: []string{keyType}}); err != nil {
					return fmt.Errorf("bench wallet: %w", err)
				}
			}
			digest := sha256.Sum256([]byte("signerctl bench " + tag))
			one := func(i int) error {
				if keyType == "" {
					_, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: fmt.Sprintf("bench-%s-%d", tag, i)})
					return err
				}
				_, err := cl.SignAndWait(ctx, client.SignParams{WalletID: walletID, KeyType: keyType, TxID: fmt.Sprintf("bench-%s-%d", tag, i), Tx: digest[:]})
				return err
			}

			bar := progressbar.NewOptions(n, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetDescription(op),
				progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("ops"),
				progressbar.OptionClearOnFinish())
			jobs := make(chan int)
			var mu sync.Mutex
			var lat []time.Duration
			errs := map[string]int{}
			var wg sync.WaitGroup
			begin := time.Now()
			for w := 0; w < conc; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range jobs {
						t0 := time.Now()
						err := one(i)
						d := time.Since(t0)
						mu.Lock()
						if err != nil {
							errs[errorCode(err)]++
						} else {
							lat = append(lat, d)
						}
						mu.Unlock()
						_ = bar.Add(1)
					}
				}()
			}
		feed:
			for i := 0; i < n; i++ {
				select {
				case jobs <- i:
				case <-ctx.Done():
					break feed
				}
			}
			close(jobs)
			wg.Wait()
			_ = bar.Finish()
			wall := time.Since(begin)
			slices.Sort(lat)
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			r := benchReport{
				Op: op, N: n, Concurrency: conc, Succeeded: len(lat), Errors: errs, WallSeconds: wall.Seconds(),
				OpsPerMin: float64(len(lat)) / wall.Minutes(),
				P50ms:     ms(percentile(lat, 50)), P95ms: ms(percentile(lat, 95)), P99ms: ms(percentile(lat, 99)),
			}
			return output(g, r, func() {
				fmt.Printf("%s: %d of %d succeeded in %s at concurrency %d: %.1f ops/min\n", op, r.Succeeded, n, wall.Round(time.Millisecond), conc, r.OpsPerMin)
				fmt.Printf("latency p50 %.0f ms, p95 %.0f ms, p99 %.0f ms\n", r.P50ms, r.P95ms, r.P99ms)
				codes := make([]string, 0, len(errs))
				for c := range errs {
					codes = append(codes, c)
				}
				sort.Strings(codes)
				for _, c := range codes {
					fmt.Printf("  error %s: %d\n", c, errs[c])
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&op, "op", "sign-ecdsa", "keygen, sign-ecdsa or sign-eddsa")
	f.IntVar(&n, "n", 20, "number of requests")
	f.IntVar(&conc, "concurrency", 1, "requests in flight at once")
	f.StringVar(&walletID, "wallet", "", "wallet to sign with (default: one created for the run)")
	return cmd
}
