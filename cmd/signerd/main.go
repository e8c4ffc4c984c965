// Command signerd is the threshold signer node daemon.
//
//	signerd dev --nodes 3 --threshold 2 --dir DIR   # embedded NATS + local cluster on SoftHSM2
//	signerd run --config FILE                       # one node against an external NATS
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "signerd:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "signerd",
		Short:         "Hardware-backed threshold signer node (tss-lib over NATS JetStream)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	lv := &slog.LevelVar{}
	root.PersistentFlags().Var(levelFlag{lv}, "log-level", "log level: debug, info, warn or error (logs are JSON when stderr is not a terminal)")
	root.AddCommand(devCmd(lv), runCmd(lv))
	return root
}

// levelFlag is --log-level as a pflag.Value.
type levelFlag struct{ lv *slog.LevelVar }

func (f levelFlag) String() string     { return strings.ToLower(f.lv.Level().String()) }
func (f levelFlag) Set(s string) error { return f.lv.UnmarshalText([]byte(s)) }
func (f levelFlag) Type() string       { return "level" }

func newLogger(lv *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: lv}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}
