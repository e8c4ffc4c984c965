package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/hwsigner/signer/client"
)

// deriveCmd computes, offline, the child public key that a signature with a
// derivation path verifies under.
func deriveCmd() *cobra.Command {
	var keyType, pubHex, pathStr string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "derive",
		Short: "Compute a wallet key's chain code and its non-hardened child public key (offline)",
		Example: "  signerctl derive --key-type secp256k1 --pub-key 02… --path m/44/60/0/0/7\n" +
			"  signerctl derive --key-type ed25519 --pub-key … --path m/44/501/0 --json",
		RunE: func(_ *cobra.Command, _ []string) error {
			pub, err := hex.DecodeString(pubHex)
			if err != nil {
				return fmt.Errorf("--pub-key: bad hex: %w", err)
			}
			path, err := client.ParseDerivationPath(pathStr)
			if err != nil {
				return err
			}
			chain, err := client.ChainCode(keyType, pub)
			if err != nil {
				return err
			}
			child, err := client.DeriveChildPublicKey(keyType, pub, chain, path)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(map[string]any{
					"key_type": keyType, "pub_key": pubHex, "chain_code": hex.EncodeToString(chain),
					"derivation_path": path, "path": client.FormatDerivationPath(path), "child_pub_key": hex.EncodeToString(child),
				})
			}
			fmt.Printf("wallet key %s (%s)\n  chain code: %x\n  %s: %x\n", pubHex, keyType, chain, client.FormatDerivationPath(path), child)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyType, "key-type", "", "secp256k1 or ed25519")
	cmd.Flags().StringVar(&pubHex, "pub-key", "", "the wallet public key, hex (ecdsa_pub_key or eddsa_pub_key of the keygen result)")
	cmd.Flags().StringVar(&pathStr, "path", "", "non-hardened derivation path, e.g. m/44/60/0/0/7")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	_ = cmd.MarkFlagRequired("key-type")
	_ = cmd.MarkFlagRequired("pub-key")
	return cmd
}
