package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/config"
	"github.com/hwsigner/signer/signer/store"
)

// peerStatus is one line of `signerctl status`.
type peerStatus struct {
	NodeID   string              `json:"node_id"`
	Known    bool                `json:"in_cluster_file"`
	Ready    bool                `json:"ready"`
	LastBeat *time.Time          `json:"last_heartbeat,omitempty"`
	Status   *routing.NodeStatus `json:"status,omitempty"`
}

func statusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the cluster's nodes: readiness, pre-params pool depth, sessions and counters",
		Long: `status reads the readiness bucket that every node heartbeats into (NATS KV
"` + routing.ReadyBucket + `") and lists each node of the cluster file with its last
heartbeat, pre-params pool depth, running sessions and request counters.
The NATS user needs read access to that bucket.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := g.cluster()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			nc, err := nats.Connect(g.natsURL, nats.Name("signerctl-status"))
			if err != nil {
				return fmt.Errorf("connect to NATS %s: %w", g.natsURL, err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			kv, err := js.KeyValue(ctx, routing.ReadyBucket)
			if err != nil {
				return fmt.Errorf("readiness bucket %s (no node has started, or this NATS user may not read it): %w", routing.ReadyBucket, err)
			}
			peers := map[string]*peerStatus{}
			for id := range keys {
				peers[id] = &peerStatus{NodeID: id, Known: true}
			}
			ready, err := routing.ReadyNodes(ctx, kv)
			if err != nil {
				return err
			}
			for _, id := range ready {
				p := peers[id]
				if p == nil {
					p = &peerStatus{NodeID: id}
					peers[id] = p
				}
				e, err := kv.Get(ctx, id)
				if err != nil {
					if errors.Is(err, jetstream.ErrKeyNotFound) {
						continue // left between the listing and now
					}
					return err
				}
				at := e.Created()
				p.Ready, p.LastBeat = true, &at
				var st routing.NodeStatus
				if json.Unmarshal(e.Value(), &st) == nil && st.NodeID != "" {
					p.Status = &st
				}
			}
			var out []*peerStatus
			for _, p := range peers {
				out = append(out, p)
			}
			sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
			return output(g, out, func() {
				w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "NODE\tREADY\tLAST BEAT\tPOOL\tSESSIONS\tACCEPTED\tSUCCEEDED\tFAILED\tREJECTED\tUP SINCE")
				for _, p := range out {
					ready, beat := "no", "-"
					if p.Ready {
						ready, beat = "yes", time.Since(*p.LastBeat).Round(time.Second).String()+" ago"
					}
					if !p.Known {
						ready += " (not in cluster file)"
					}
					if s := p.Status; s != nil {
						pool := fmt.Sprint(s.PoolDepth)
						if s.PoolTest {
							pool = "fixtures (INSECURE)"
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", p.NodeID, ready, beat, pool, s.Sessions, s.Accepted, s.Succeeded, s.Failed, s.Rejected, s.StartedAt.Format(time.RFC3339))
					} else {
						fmt.Fprintf(w, "%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\n", p.NodeID, ready, beat)
					}
				}
				_ = w.Flush()
			})
		},
	}
}

func storeCmd(g *globals) *cobra.Command {
	s := &cobra.Command{Use: "store", Short: "Look into a node's store (node stopped)"}
	var path string
	inspect := &cobra.Command{
		Use:   "inspect",
		Short: "List a node's wallets, pool and journal: metadata only, never secret bytes",
		Long: `store inspect opens a node's store read-only and prints what it holds: each
wallet share's metadata (wallet, key type, epoch, status, committee, threshold,
public key, creation), the number of sealed pre-params sets and journal
entries. Sealed values are never printed or opened. Stop the node first: a
running signerd holds the store's lock.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return errors.New("--store is required")
			}
			st, err := store.Open(path, store.Options{ReadOnly: true, Timeout: 2 * time.Second})
			if err != nil {
				return err
			}
			defer st.Close()
			wallets, err := st.Wallets()
			if err != nil {
				return err
			}
			stats, err := st.Stats()
			if err != nil {
				return err
			}
			report := struct {
				Path    string             `json:"path"`
				Stats   store.Stats        `json:"stats"`
				Wallets []store.WalletMeta `json:"wallets"`
			}{path, stats, wallets}
			return output(g, report, func() {
				fmt.Printf("store %s: %d shares, %d pre-params sets, %d journal entries, %d secrets, %d bytes\n",
					path, stats.Shares, stats.Pool, stats.Journal, stats.Secrets, stats.FileSize)
				// Buffered: tabwriter writes each cell and its padding apart,
				// a write system call each on a bare os.Stdout.
				out := bufio.NewWriter(os.Stdout)
				w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "WALLET\tKEY TYPE\tEPOCH\tSTATUS\tTHRESHOLD\tCOMMITTEE\tPUBLIC KEY\tCREATED")
				for _, m := range wallets {
					fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%d-of-%d\t%s\t%s\t%s\n", m.WalletID, m.KeyType, m.Epoch, m.Status,
						config.SignersFromTSS(m.Threshold), len(m.Committee), strings.Join(m.Committee, ","), hex.EncodeToString(m.PubKey), m.CreatedAt.Format(time.RFC3339))
				}
				_ = w.Flush()
				_ = out.Flush()
			})
		},
	}
	inspect.Flags().StringVar(&path, "store", "", "node store file")
	s.AddCommand(inspect)
	return s
}
