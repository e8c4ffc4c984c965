// Command signer-relay serves backends that do not speak NATS: signed
// requests in over HTTP, results out by Standard Webhooks, Server-Sent Events
// and long polling (see package relay and docs/signer-relay.example.yaml).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hwsigner/signer/relay"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "signer-relay:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "signer-relay",
		Short:         "HTTP, webhook, SSE, WebSocket and long-polling relay in front of the signer cluster's NATS",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCmd(), dlqCmd())
	return root
}

// newLogger logs to w (the command's stderr): text on a terminal, JSON
// otherwise.
func newLogger(w io.Writer) *slog.Logger {
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return slog.New(slog.NewTextHandler(w, nil))
		}
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}

func loadConfig(path string) (*relay.Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return relay.ParseConfig(raw)
}
