// Command signerctl talks to a signer cluster as a client backend would
// (create wallets, sign, verify signatures independently of tss-lib) and runs
// a node operator's key tasks (token init, init, identity, key rotate).
package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
)

type globals struct {
	natsURL, keyFile, clientID, clusterFile string
	timeout                                 time.Duration
	// ttl: expires_at - created_at of each request (--ttl; 0: --timeout).
	ttl  time.Duration
	json bool
	out  io.Writer // stdout: where results (and, with --json, failed decisions) go
	// signers: t+1 the client requires (--signers, else the cluster
	// file's threshold, else the client's default, a majority).
	signers int
}

// expiryGrace is how long after a request's expires_at signerctl still
// waits for results in flight before it reports TIMEOUT (the client's
// default; tests shorten it).
var expiryGrace = client.DefaultExpiryGrace

// waitSlack: a request's wait ends with the client's own TIMEOUT at
// expires_at plus expiryGrace; its context ends waitSlack after that, only
// a backstop.
const waitSlack = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "signerctl:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "signerctl",
		Short: "Client and operator CLI for the threshold signer cluster",
		Long: `signerctl sends signed requests to the cluster over NATS JetStream and waits
for the node-signed results on the client's own subjects.

The client key (--key) is a PEM PKCS#8 Ed25519 or ECDSA P-256 private key; the
nodes' policy must bind it to --client-id. The nodes' identity keys, needed to
check result signatures, come from --cluster (the cluster.json that
"signerd dev" writes, or one you write with a "peers" map of PEM keys).
Every node publishes its own signed result; signerctl accepts a keygen only
when every node reports the same keys, and a signature or reshare only when
--signers nodes (t+1; default: the cluster file's "threshold", else a
majority of the peers) report the same outcome.

A request is valid for the nodes for --ttl (default and at most --timeout):
no node takes it after its expires_at. signerctl waits for the committee's
decision until then, plus 10 s for results in flight, and otherwise reports
TIMEOUT: by then the request has expired for the nodes (by signerctl's
clock; a ceremony a node started before the expiry may still finish after
signerctl stopped waiting). A failed or TIMEOUT decision exits non-zero;
with --json it is also printed on stdout, as an object with "result_type":
"error", "error_code", "error_reason", "request_id", "nodes" (what each
node reported), "expires_at" and "expired".

Operator commands work on one node's hardware and store, with the node
stopped: "token init" (PKCS#11), "init" (create the wrapping and identity
keys), "identity" (print the identity key for the peers map) and
"key rotate" / "key rewrap".`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			g.out = cmd.OutOrStdout()
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&g.natsURL, "nats", "", "NATS URL (default: from --cluster)")
	f.StringVar(&g.keyFile, "key", "", "client private key file, PEM PKCS#8 (default: from --cluster)")
	f.StringVar(&g.clientID, "client-id", "", "client ID whose result subjects to use (empty: legacy subjects)")
	f.StringVar(&g.clusterFile, "cluster", ".signerd-dev/cluster.json", "cluster file with the nodes' identity keys")
	f.DurationVar(&g.timeout, "timeout", 10*time.Minute, "how long to wait for a result (bench: the whole run), and the request TTL unless --ttl is given; a wait ends 10 s after the request expired")
	f.DurationVar(&g.ttl, "ttl", 0, "how long a request stays valid for the nodes (expires_at - created_at; default and at most --timeout): a request still undecided then is reported TIMEOUT and no node takes it any more")
	f.BoolVar(&g.json, "json", false, "print results, and failed or TIMEOUT decisions, as JSON on stdout")
	f.IntVar(&g.signers, "signers", 0, "nodes that must report the same sign or reshare outcome: the cluster's threshold, t+1 (default: \"threshold\" from --cluster, else a majority of its peers)")
	root.AddCommand(walletCmd(g), signCmd(g), reshareCmd(g), verifyCmd(), deriveCmd(), initCmd(), identityCmd(), keyCmd(), tokenCmd(), backupCmd(g), restoreCmd(g), statusCmd(g), storeCmd(g), benchCmd(g), approveCmd(g))
	return root
}

type clusterFile struct {
	NATSURL   string            `json:"nats_url"`
	ClientKey string            `json:"client_key"`
	Peers     map[string]string `json:"peers"`
	// Threshold: nodes that must sign (t+1), as signerd dev writes it.
	Threshold int `json:"threshold,omitempty"`
}

// cluster reads the cluster file: it fills in --nats and --key when not
// given and returns the nodes' identity keys.
func (g *globals) cluster() (map[string]crypto.PublicKey, error) {
	b, err := os.ReadFile(g.clusterFile)
	if err != nil {
		return nil, fmt.Errorf("read cluster file (start `signerd dev` or pass --cluster): %w", err)
	}
	var cf clusterFile
	if err := json.Unmarshal(b, &cf); err != nil {
		return nil, fmt.Errorf("%s: %w", g.clusterFile, err)
	}
	if g.natsURL == "" {
		g.natsURL = cf.NATSURL
	}
	if g.keyFile == "" {
		g.keyFile = cf.ClientKey
	}
	if g.signers == 0 {
		g.signers = cf.Threshold
	}
	keys := map[string]crypto.PublicKey{}
	for id, p := range cf.Peers {
		pub, err := keyfile.ParsePublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("peer %s: %w", id, err)
		}
		keys[id] = pub
	}
	return keys, nil
}

func (g *globals) connect(ctx context.Context) (*client.Client, func(), error) {
	keys, err := g.cluster()
	if err != nil {
		return nil, nil, err
	}
	signer, err := loadKey(g.keyFile)
	if err != nil {
		return nil, nil, err
	}
	inbox := "_INBOX_legacy"
	if g.clientID != "" {
		inbox = "_INBOX_" + g.clientID
	}
	nc, err := nats.Connect(g.natsURL, nats.CustomInboxPrefix(inbox), nats.Name("signerctl"))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS %s: %w", g.natsURL, err)
	}
	ttl, err := g.requestTTL()
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	opts := []client.Option{client.WithNodeKeys(keys), client.WithRequestTTL(ttl), client.WithExpiryGrace(expiryGrace)}
	if g.signers != 0 {
		opts = append(opts, client.WithSigners(g.signers))
	}
	if g.clientID != "" {
		opts = append(opts, client.WithClientID(g.clientID))
	}
	cl, err := client.New(nc, signer, opts...)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return cl, func() { _ = cl.Close(); nc.Close() }, nil
}

// requestTTL is --ttl, or --timeout when not given; never longer than
// --timeout, so that signerctl never stops waiting while the nodes may
// still take a request.
func (g *globals) requestTTL() (time.Duration, error) {
	switch {
	case g.timeout <= 0:
		return 0, fmt.Errorf("--timeout %s: want a positive duration", g.timeout)
	case g.ttl < 0:
		return 0, fmt.Errorf("--ttl %s: want a positive duration", g.ttl)
	case g.ttl == 0:
		return g.timeout, nil
	case g.ttl > g.timeout:
		return 0, fmt.Errorf("--ttl %s is longer than --timeout %s: signerctl would stop waiting while the nodes may still take the request", g.ttl, g.timeout)
	}
	return g.ttl, nil
}

// requestContext bounds the wait for one request sent right after: the
// client reports TIMEOUT itself at the request's expires_at plus the
// grace; this context ends waitSlack later, a backstop that never ends a
// wait before the request has expired.
func (g *globals) requestContext(parent context.Context) (context.Context, context.CancelFunc, error) {
	ttl, err := g.requestTTL()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(parent, ttl+expiryGrace+waitSlack)
	return ctx, cancel, nil
}

// errorReport is a failed or TIMEOUT decision as --json prints it.
type errorReport struct {
	ResultType  string            `json:"result_type"` // "error"
	Op          string            `json:"op"`
	RequestID   string            `json:"request_id"`
	ErrorCode   string            `json:"error_code"`
	ErrorReason string            `json:"error_reason"`
	IsTimeout   bool              `json:"is_timeout"`
	Retryable   bool              `json:"retryable"`
	Nodes       map[string]string `json:"nodes"` // what each node reported; {} when none answered
	ExpiresAt   string            `json:"expires_at,omitempty"`
	// Expired: the request's expires_at had passed when signerctl gave up
	// waiting, so no node takes it any more.
	Expired   bool   `json:"expired"`
	WalletID  string `json:"wallet_id,omitempty"`
	TxID      string `json:"tx_id,omitempty"`
	KeyType   string `json:"key_type,omitempty"`
	SessionID string `json:"session_id,omitempty"`
}

// decisionFailed returns err, the error of a Wait helper. With --json, a
// failed or TIMEOUT decision (a *client.ResultError) is first printed on
// stdout as an errorReport, completed from base (op and the request's ids).
func (g *globals) decisionFailed(err error, base errorReport) error {
	var re *client.ResultError
	if !g.json || !errors.As(err, &re) {
		return err
	}
	r := base
	r.ResultType, r.RequestID, r.ErrorCode, r.ErrorReason = protocol.ResultError, re.RequestID, re.Code, re.Reason
	r.IsTimeout, r.Retryable, r.Nodes = re.IsTimeout, re.Retryable(), re.Nodes
	if r.Nodes == nil {
		r.Nodes = map[string]string{}
	}
	if !re.ExpiresAt.IsZero() {
		r.ExpiresAt = re.ExpiresAt.UTC().Format(time.RFC3339Nano)
		r.Expired = !time.Now().Before(re.ExpiresAt)
	}
	_ = json.NewEncoder(g.stdout()).Encode(r)
	return err
}

func (g *globals) stdout() io.Writer {
	if g.out == nil {
		return os.Stdout
	}
	return g.out
}

func loadKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read client key: %w", err)
	}
	s, err := keyfile.ParsePrivateKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func output(g *globals, v any, human func()) error {
	if g.json {
		return json.NewEncoder(g.stdout()).Encode(v)
	}
	human()
	return nil
}

func walletCmd(g *globals) *cobra.Command {
	w := &cobra.Command{Use: "wallet", Short: "Manage wallets"}
	var walletID string
	var keyTypes []string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a wallet (threshold keygen) and print its public keys",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if walletID == "" {
				b := make([]byte, 8)
				_, _ = rand.Read(b)
				walletID = "wallet-" + hex.EncodeToString(b)
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
			if !g.json {
				fmt.Fprintf(os.Stderr, "creating wallet %s (keygen runs on every node; ECDSA takes a while)...\n", walletID)
			}
			res, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: walletID, KeyTypes: keyTypes})
			if err != nil {
				return g.decisionFailed(err, errorReport{Op: protocol.OpKeygen, WalletID: walletID})
			}
			return output(g, res, func() {
				fmt.Printf("wallet %s\n  secp256k1 public key: %s\n  ed25519 public key:   %s\n", res.WalletID, res.ECDSAPubKey, res.EdDSAPubKey)
			})
		},
	}
	create.Flags().StringVar(&walletID, "wallet", "", "wallet ID (default: random)")
	create.Flags().StringSliceVar(&keyTypes, "key-types", nil, "secp256k1 and/or ed25519 (default both)")
	w.AddCommand(create)
	return w
}

func signCmd(g *globals) *cobra.Command {
	var walletID, keyType, digestHex, msgHex, txID, pathStr string
	cmd := &cobra.Command{
		Use:   "sign",
		Short: "Sign a 32-byte digest (secp256k1) or a message (ed25519) with a wallet",
		Example: "  signerctl sign --wallet W --key-type secp256k1 --digest $(printf hello | sha256sum | cut -c1-64) --json\n" +
			"  signerctl sign --wallet W --key-type ed25519 --message 00000102 --json\n" +
			"  signerctl sign --wallet W --key-type secp256k1 --digest … --path m/44/60/0/0/7 --json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var tx []byte
			path, err := client.ParseDerivationPath(pathStr)
			if err != nil {
				return err
			}
			switch {
			case digestHex != "" && msgHex != "":
				return errors.New("give --digest or --message, not both")
			case keyType == protocol.KeyTypeSecp256k1 && digestHex != "":
				tx, err = hex.DecodeString(digestHex)
			case keyType == protocol.KeyTypeEd25519 && msgHex != "":
				tx, err = hex.DecodeString(msgHex)
			default:
				return errors.New("secp256k1 signs --digest HEX (32 bytes); ed25519 signs --message HEX")
			}
			if err != nil {
				return fmt.Errorf("bad hex: %w", err)
			}
			cl, done, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			if txID == "" {
				b := make([]byte, 8)
				_, _ = rand.Read(b)
				txID = "tx-" + hex.EncodeToString(b)
			}
			ctx, cancel, err := g.requestContext(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			res, err := cl.SignAndWait(ctx, client.SignParams{WalletID: walletID, KeyType: keyType, TxID: txID, Tx: tx, DerivationPath: path})
			if err != nil {
				return g.decisionFailed(err, errorReport{Op: protocol.OpSign, WalletID: walletID, TxID: txID, KeyType: keyType})
			}
			return output(g, res, func() {
				fmt.Printf("signature (%s, wallet %s, tx %s): %s\n", keyType, walletID, txID, res.Signature)
				if res.PubKey != "" {
					fmt.Printf("  signed by the child key %s at %s\n", res.PubKey, client.FormatDerivationPath(path))
				}
				if keyType == protocol.KeyTypeSecp256k1 {
					fmt.Printf("  r=%s s=%s recovery_id=%d\n", res.R, res.S, res.SignatureRecovery)
				}
			})
		},
	}
	cmd.Flags().StringVar(&walletID, "wallet", "", "wallet ID")
	cmd.Flags().StringVar(&keyType, "key-type", "", "secp256k1 or ed25519")
	cmd.Flags().StringVar(&digestHex, "digest", "", "32-byte digest in hex (secp256k1)")
	cmd.Flags().StringVar(&msgHex, "message", "", "message in hex (ed25519; leading zero bytes are kept)")
	cmd.Flags().StringVar(&txID, "tx-id", "", "transaction ID (default: random)")
	cmd.Flags().StringVar(&pathStr, "path", "", "sign with the non-hardened child key at this path, e.g. m/44/60/0/0/7 (signerctl derive computes its public key)")
	_ = cmd.MarkFlagRequired("wallet")
	_ = cmd.MarkFlagRequired("key-type")
	return cmd
}

func verifyCmd() *cobra.Command {
	var keyType, pubHex, msgHex, sigHex string
	var recovery int
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Verify a signature without tss-lib (decred secp256k1, crypto/ed25519)",
		RunE: func(_ *cobra.Command, _ []string) error {
			pub, err1 := hex.DecodeString(pubHex)
			msg, err2 := hex.DecodeString(msgHex)
			sig, err3 := hex.DecodeString(sigHex)
			if err := errors.Join(err1, err2, err3); err != nil {
				return fmt.Errorf("bad hex: %w", err)
			}
			var err error
			switch keyType {
			case protocol.KeyTypeSecp256k1:
				if len(sig) != 64 {
					return errors.New("secp256k1 signature must be r||s, 64 bytes")
				}
				err = client.VerifyECDSA(pub, msg, sig[:32], sig[32:], recovery)
			case protocol.KeyTypeEd25519:
				err = client.VerifyEd25519(pub, msg, sig)
			default:
				return errors.New("--key-type secp256k1 or ed25519")
			}
			if err != nil {
				return fmt.Errorf("signature INVALID: %w", err)
			}
			fmt.Printf("signature valid (%s)\n", keyType)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyType, "key-type", "", "secp256k1 or ed25519")
	cmd.Flags().StringVar(&pubHex, "pub-key", "", "public key hex (33/65 bytes secp256k1, 32 ed25519)")
	cmd.Flags().StringVar(&msgHex, "message", "", "digest (secp256k1) or message (ed25519), hex")
	cmd.Flags().StringVar(&sigHex, "signature", "", "signature hex (r||s for secp256k1)")
	cmd.Flags().IntVar(&recovery, "recovery-id", 0, "secp256k1 recovery id (checked: it must recover the public key)")
	return cmd
}
