package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/signer/config"
)

func reshareCmd(g *globals) *cobra.Command {
	var walletID, keyType, nodes, sessionID string
	var signers int
	cmd := &cobra.Command{
		Use:   "reshare",
		Short: "Move a wallet key to a new committee and/or threshold (the public key stays)",
		Long: `reshare asks the cluster to reshare one key type of a wallet: the old
committee's shares are replaced by shares of the same key held by --nodes, of
which --threshold must sign (t+1, as signerd's --threshold; the request's
new_threshold is t = --threshold - 1). The old shares are deleted once every
new member has stored its new share; a failed reshare leaves the old
committee as it was. The result arrives on mpc.mpc_reshare_result[.<clientID>].<sessionID>.`,
		Example: "  signerctl reshare --wallet W --key-type secp256k1 --nodes node0,node1,node3 --threshold 2 --json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ids []string
			for _, id := range strings.Split(nodes, ",") {
				if id = strings.TrimSpace(id); id != "" {
					ids = append(ids, id)
				}
			}
			need := config.Signers(signers)
			if !need.Fits(len(ids)) {
				return fmt.Errorf("--threshold must be between %d and the number of --nodes (%d), got %d", config.MinSigners, len(ids), signers)
			}
			if sessionID == "" {
				b := make([]byte, 8)
				if _, err := rand.Read(b); err != nil {
					return err
				}
				sessionID = "reshare-" + hex.EncodeToString(b)
			}
			cl, done, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel, err := g.requestContext(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			res, err := cl.ReshareAndWait(ctx, client.ReshareParams{
				WalletID: walletID, KeyType: keyType, SessionID: sessionID, NodeIDs: ids, NewThreshold: need.TSSThreshold(),
			})
			if err != nil {
				return g.decisionFailed(err, errorReport{Op: protocol.OpReshare, WalletID: walletID, KeyType: keyType, SessionID: sessionID})
			}
			return output(g, res, func() {
				fmt.Printf("reshared %s key of wallet %s to %v, %d-of-%d (session %s)\n  public key (unchanged): %s\n",
					keyType, walletID, ids, signers, len(ids), sessionID, res.PubKey)
			})
		},
	}
	cmd.Flags().StringVar(&walletID, "wallet", "", "wallet ID")
	cmd.Flags().StringVar(&keyType, "key-type", "", "secp256k1 or ed25519")
	cmd.Flags().StringVar(&nodes, "nodes", "", "the new committee, comma-separated node IDs")
	cmd.Flags().IntVar(&signers, "threshold", 0, "number of new committee members that must sign (t+1)")
	cmd.Flags().StringVar(&sessionID, "session-id", "", "session ID of the result subject (default: random)")
	for _, f := range []string{"wallet", "key-type", "nodes", "threshold"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}
