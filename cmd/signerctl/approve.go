package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/hwsigner/signer/internal/secret"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
)

// approveCmd prints an approval of a request file (docs/client-policy.md,
// Approvals; docs/canonical-encoding.md §9).
func approveCmd(g *globals) *cobra.Command {
	var requestFile, approverID string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "approve --request FILE --key KEY --approver ID",
		Short: "Approve one request: print an approval (JSON) to attach to its approvals",
		Long: `approve signs, with the approver's key (--key, PEM PKCS#8 Ed25519 or ECDSA
P-256; never the client key from --cluster), an approval of the request in
--request ("-" for standard input): a JSON request, signed or not, whose
members other than "approvals" and "signature" are final. The approval
covers exactly those members (request_id, times, wallet, tx, ...), so it
approves this request and no other.

It prints the approval as one line of JSON, an element of the request's
"approvals" member, and on standard error what was approved. The approval
expires with the request, or --ttl from now when that is earlier.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if requestFile == "" || approverID == "" || g.keyFile == "" {
				return errors.New("approve: --request, --approver and --key are required")
			}
			raw, err := readRequestFile(cmd.InOrStdin(), requestFile)
			if err != nil {
				return err
			}
			var env struct {
				protocol.Envelope
				WalletID string `json:"wallet_id"`
				TxID     string `json:"tx_id"`
			}
			if err := json.Unmarshal(raw, &env); err != nil {
				return fmt.Errorf("approve: %s: %w", requestFile, err)
			}
			b, err := os.ReadFile(g.keyFile)
			if err != nil {
				return fmt.Errorf("approve: read approver key: %w", err)
			}
			key, err := keyfile.ParsePrivateKeyPEM(b)
			secret.Zero(b)
			if err != nil {
				return fmt.Errorf("approve: %s: %w", g.keyFile, err)
			}
			exp := env.Expires()
			if ttl > 0 && time.Now().Add(ttl).Before(exp) {
				exp = time.Now().Add(ttl)
			}
			if !exp.After(time.Now()) {
				return fmt.Errorf("approve: the request expired at %s", env.Expires().Format(time.RFC3339))
			}
			a, err := protocol.SignApproval(cmd.Context(), key, approverID, exp, raw)
			if err != nil {
				return fmt.Errorf("approve: %w", err)
			}
			digest, err := protocol.RequestDigest(raw)
			if err != nil {
				return fmt.Errorf("approve: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "approved as %s until %s: %s request %s of client %q, wallet %q, tx_id %q (digest %s)\n",
				approverID, a.Expires().Format(time.RFC3339), env.Op, env.RequestID, env.ClientID, env.WalletID, env.TxID, hex.EncodeToString(digest[:]))
			out, err := json.Marshal(a)
			if err != nil {
				return fmt.Errorf("approve: %w", err)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), string(out))
			return err
		},
	}
	cmd.Flags().StringVar(&requestFile, "request", "", `request file to approve ("-": standard input)`)
	cmd.Flags().StringVar(&approverID, "approver", "", "approver ID, as the nodes' policy names the key (approvers[].id)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "approval lifetime from now (default and upper bound: the request's expires_at)")
	return cmd
}

func readRequestFile(stdin io.Reader, path string) ([]byte, error) {
	var raw []byte
	var err error
	if path == "-" {
		raw, err = io.ReadAll(io.LimitReader(stdin, protocol.MaxMessageSize+1))
	} else {
		raw, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("approve: read request: %w", err)
	}
	if _, err := protocol.Canonicalize(raw); err != nil {
		return nil, fmt.Errorf("approve: %s: %w", path, err)
	}
	return raw, nil
}
