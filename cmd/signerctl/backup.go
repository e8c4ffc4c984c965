package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/signer/backup"
	"github.com/hwsigner/signer/signer/store"
)

// resolveNodeID takes the node ID from --node-id, else from node_id in
// --config.
func (n *nodeFlags) resolveNodeID() (string, error) {
	if err := n.fromConfig(); err != nil {
		return "", err
	}
	if n.nodeID == "" {
		return "", errors.New("no node ID: pass --node-id or a --config with node_id")
	}
	return n.nodeID, nil
}

// readRecipientsFile reads one age recipient per line; blank lines and
// lines starting with # are skipped.
func readRecipientsFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read recipients file: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read recipients file %s: %w", path, err)
	}
	return out, nil
}

type backupResult struct {
	backup.Summary
	File       string `json:"file"`
	Recipients int    `json:"recipients,omitempty"`
	Store      string `json:"store,omitempty"`
}

func backupCmd(g *globals) *cobra.Command {
	var nf nodeFlags
	var out string
	var to []string
	var toFile string
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Write every share of a node, encrypted to offline age recovery keys (node stopped)",
		Long: `backup opens every share in the node's store (all wallets, key types and
epochs, with their status and metadata) with the node's HSM or TPM and writes
them into one file encrypted with age to the recovery recipients (--to age1...,
or --to-file with one per line). The plaintext exists only in memory; the file
is written 0600 through a temporary file and a rename (an existing file is
replaced). Keep the recovery identities offline: whoever holds one of them and
t other shares of a wallet holds its key.

Stop signerd first: the store is locked while the node runs.`,
		Example: "  signerctl backup --config /etc/signerd/node0.yaml --to age1... --to age1... --out node0.backup",
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := nf.resolveNodeID()
			if err != nil {
				return err
			}
			if out == "" {
				return errors.New("no output file: pass --out FILE")
			}
			if toFile != "" {
				more, err := readRecipientsFile(toFile)
				if err != nil {
					return err
				}
				to = append(to, more...)
			}
			recipients, err := backup.ParseRecipients(to)
			if err != nil {
				return err
			}
			return withNode(cmd, &nf, func(b hsm.Backend, st *store.Store) error {
				sum, err := backup.WriteFile(cmd.Context(), b, st, id, out, recipients...)
				if err != nil {
					return err
				}
				return output(g, backupResult{Summary: sum, File: out, Recipients: len(recipients)}, func() {
					fmt.Printf("backup of node %s written to %s: %d shares of %d wallets, encrypted to %d recipients\n",
						sum.NodeID, out, sum.Shares, sum.Wallets, len(recipients))
				})
			})
		},
	}
	nf.register(cmd, true)
	f := cmd.Flags()
	f.StringVar(&nf.nodeID, "node-id", "", "the node's ID (default: node_id from --config)")
	f.StringArrayVar(&to, "to", nil, "age X25519 recipient (age1...); repeat for more recovery keys")
	f.StringVar(&toFile, "to-file", "", "file with one age recipient per line")
	f.StringVar(&out, "out", "", "backup file to write")
	return cmd
}

func restoreCmd(g *globals) *cobra.Command {
	var nf nodeFlags
	var from, identity string
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Restore a node's shares from a backup into its store, sealed under its HSM or TPM (node stopped)",
		Long: `restore decrypts a backup made by "signerctl backup" with an age identity
file (--identity; never a key on the command line), checks that it belongs to
this node, seals every share under the node's HSM or TPM (which may be a new
token or TPM: run "signerctl init" on it first) and writes them to the store.
It refuses to overwrite a share the store already has; restoring into an empty
store is the normal case. Nothing is written unless the whole file decrypts.

On new hardware the node has a new identity key: print it with
"signerctl identity" and replace the node's entry in every node's "peers" map
and every client's node keys before starting signerd.`,
		Example: "  signerctl init --config /etc/signerd/node0.yaml\n" +
			"  signerctl restore --config /etc/signerd/node0.yaml --from node0.backup --identity /media/offline/recovery.key",
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := nf.resolveNodeID()
			if err != nil {
				return err
			}
			if from == "" || identity == "" {
				return errors.New("pass --from FILE and --identity KEYFILE (an age identity file)")
			}
			ids, err := backup.ParseIdentityFile(identity)
			if err != nil {
				return err
			}
			return withNode(cmd, &nf, func(b hsm.Backend, st *store.Store) error {
				sum, err := backup.RestoreFile(cmd.Context(), b, st, id, from, ids...)
				if err != nil {
					return err
				}
				return output(g, backupResult{Summary: sum, File: from, Store: st.Path()}, func() {
					fmt.Printf("restored %d shares of %d wallets of node %s (backup of %s) into %s, sealed under %s\n",
						sum.Shares, sum.Wallets, sum.NodeID, sum.CreatedAt.Format("2006-01-02 15:04:05Z07:00"), st.Path(), b.Backend())
					fmt.Fprintln(os.Stderr, `if this is new hardware, the node's identity key changed: run "signerctl identity" and update every node's peers map and every client's node keys`)
				})
			})
		},
	}
	nf.register(cmd, true)
	f := cmd.Flags()
	f.StringVar(&nf.nodeID, "node-id", "", "the node's ID (default: node_id from --config)")
	f.StringVar(&from, "from", "", "backup file")
	f.StringVar(&identity, "identity", "", "age identity file (AGE-SECRET-KEY-1...) of one of the recovery keys")
	return cmd
}
