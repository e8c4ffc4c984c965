package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/hwsigner/signer/relay"
)

func dlqCmd() *cobra.Command {
	var path, client string
	var asJSON bool
	dlq := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect and replay webhook deliveries in the dead-letter stream (RELAY_DLQ)",
	}
	dlq.PersistentFlags().StringVar(&path, "config", "/etc/signer-relay/relay.yaml", "YAML config file (its nats section is used)")
	dlq.PersistentFlags().StringVar(&client, "client", "", "clientID (list: all clients when empty)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters (metadata only; result bodies are not printed)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, js, err := connectFrom(path)
			if err != nil {
				return err
			}
			defer nc.Close()
			dls, err := relay.ListDLQ(cmd.Context(), js, client)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if dls == nil {
					dls = []relay.DeadLetter{} // [], not null: scripts iterate it
				}
				return json.NewEncoder(out).Encode(dls)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tCLIENT\tWEBHOOK-ID\tSTORED\tLAST ERROR")
			for _, d := range dls {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", d.Seq, d.ClientID, d.WebhookID, d.Stored.Format(time.RFC3339), d.LastError)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "JSON output")

	var all bool
	replay := &cobra.Command{
		Use:   "replay [SEQ...]",
		Short: "Send dead letters of --client back to its webhook (same webhook-id), then remove them",
		Example: `  signer-relay dlq replay --client svcA --all
  signer-relay dlq replay --client svcA 12 13`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if client == "" {
				return fmt.Errorf("--client is required")
			}
			if all == (len(args) > 0) {
				return fmt.Errorf("give sequence numbers or --all (not both)")
			}
			var seqs []uint64
			for _, a := range args {
				n, err := strconv.ParseUint(a, 10, 64)
				if err != nil {
					return fmt.Errorf("sequence %q: %w", a, err)
				}
				seqs = append(seqs, n)
			}
			nc, js, err := connectFrom(path)
			if err != nil {
				return err
			}
			defer nc.Close()
			n, err := relay.ReplayDLQ(cmd.Context(), js, client, seqs...)
			fmt.Fprintf(cmd.OutOrStdout(), "replayed %d dead letter(s) of %s\n", n, client)
			return err
		},
	}
	replay.Flags().BoolVar(&all, "all", false, "replay every dead letter of the client")
	dlq.AddCommand(list, replay)
	return dlq
}

// connectFrom opens the relay's own NATS connection named in the config.
func connectFrom(path string) (*nats.Conn, jetstream.JetStream, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, nil, err
	}
	return relay.Connect(cfg)
}
