package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/hsm/pkcs11"
	hsmuri "github.com/hwsigner/signer/hsm/uri"
	"github.com/hwsigner/signer/internal/secret"
	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/signer/config"
	"github.com/hwsigner/signer/signer/keyops"
	"github.com/hwsigner/signer/signer/store"
)

// nodeFlags locate a node's key backend, store and ID, from signerd's config
// file or given one by one (the flags win). The config file is read with
// signerd's parser in its partial mode: strict (unknown keys are errors),
// but only the fields a command uses need to be set.
type nodeFlags struct {
	config, keyURI, storePath, nodeID string
	configRead                        bool
}

func (n *nodeFlags) register(cmd *cobra.Command, withStore bool) {
	f := cmd.Flags()
	f.StringVar(&n.config, "config", "", "signerd YAML config to take key_uri (and store_path) from")
	f.StringVar(&n.keyURI, "key-uri", "", "key backend URI (pkcs11:..., tpm:..., software:dir=...)")
	if withStore {
		f.StringVar(&n.storePath, "store", "", "node store file (the node must be stopped)")
	}
}

// fromConfig fills the fields that no flag set from the --config file, if
// one is given; it reads the file once.
func (n *nodeFlags) fromConfig() error {
	if n.config == "" || n.configRead {
		return nil
	}
	c, err := config.ParseOptions{Partial: true}.Load(n.config)
	if err != nil {
		return fmt.Errorf("%s: %w", n.config, err)
	}
	if n.keyURI == "" {
		n.keyURI = c.KeyURI
	}
	if n.storePath == "" {
		n.storePath = c.StorePath
	}
	if n.nodeID == "" {
		n.nodeID = c.NodeID
	}
	n.configRead = true
	return nil
}

func (n *nodeFlags) resolve(needStore bool) error {
	if err := n.fromConfig(); err != nil {
		return err
	}
	if n.keyURI == "" {
		return errors.New("no key backend: pass --key-uri or --config")
	}
	if needStore && n.storePath == "" {
		return errors.New("no store: pass --store or --config")
	}
	return nil
}

func initCmd() *cobra.Command {
	var nf nodeFlags
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a node's wrapping key and identity key in its HSM or TPM",
		Long: `init creates, inside the hardware named by --key-uri, the non-extractable
AES-256 wrapping key (PKCS#11) or the key-version record (TPM), and the node's
P-256 identity key. It refuses to touch a backend that already has a wrapping
key. It prints the identity public key: put it in every node's "peers" map.`,
		Example: `  signerctl init --key-uri 'pkcs11:token=node0;object=share-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/signerd/hsm-pin'
  signerctl init --key-uri 'tpm:device=/dev/tpmrm0?pcrs=7'`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := nf.resolve(false); err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := hsmuri.Init(ctx, nf.keyURI, nil); err != nil {
				return err
			}
			fmt.Fprintln(os.Stderr, "wrapping key and identity key created")
			return printIdentity(cmd, nf.keyURI)
		},
	}
	nf.register(cmd, false)
	return cmd
}

func identityCmd() *cobra.Command {
	var nf nodeFlags
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Print a node's identity public key (PEM) for the peers map",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := nf.resolve(false); err != nil {
				return err
			}
			return printIdentity(cmd, nf.keyURI)
		},
	}
	nf.register(cmd, false)
	return cmd
}

func printIdentity(cmd *cobra.Command, u string) error {
	b, err := hsmuri.Open(cmd.Context(), u, nil)
	if err != nil {
		return err
	}
	defer b.Close()
	id, err := b.Identity(cmd.Context())
	if err != nil {
		return err
	}
	p, err := keyfile.MarshalPublicKeyPEM(id.Public())
	if err != nil {
		return err
	}
	fmt.Print(p)
	return nil
}

func keyCmd() *cobra.Command {
	k := &cobra.Command{Use: "key", Short: "Rotate a node's wrapping key and rewrap its store (node stopped)"}
	var rot nodeFlags
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Create a new wrapping-key version and move every sealed value to it",
		Long: `rotate creates a new version of the node's wrapping key in its HSM or TPM,
makes it the active one, then rewraps every sealed value in the node's store
(shares, pre-params, secrets) to it: only the data keys are re-wrapped, the
sealed payloads are not decrypted outside the sealing layer. Older versions
stay in the hardware, so a value the rewrap did not reach still opens; run
"signerctl key rewrap" to finish an interrupted run.

Stop signerd first: the store is locked while the node runs.`,
		Example: "  systemctl stop signerd && signerctl key rotate --config /etc/signerd/signerd.yaml && systemctl start signerd",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNode(cmd, &rot, func(b hsm.Backend, st *store.Store) error {
				from, to, moved, err := keyops.Rotate(cmd.Context(), b, st, progress)
				fmt.Fprintln(os.Stderr)
				if err != nil {
					return err
				}
				fmt.Printf("wrapping key rotated: %s -> %s; %d sealed values rewrapped in %s\n", from, to, moved, st.Path())
				return nil
			})
		},
	}
	rot.register(rotate, true)
	var rw nodeFlags
	rewrap := &cobra.Command{
		Use:   "rewrap",
		Short: "Move every sealed value in the store to the active wrapping-key version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNode(cmd, &rw, func(b hsm.Backend, st *store.Store) error {
				moved, err := keyops.Rewrap(cmd.Context(), b, st, progress)
				fmt.Fprintln(os.Stderr)
				if err != nil {
					return err
				}
				fmt.Printf("%d sealed values rewrapped to %s in %s\n", moved, b.ActiveKey(), st.Path())
				return nil
			})
		},
	}
	rw.register(rewrap, true)
	k.AddCommand(rotate, rewrap)
	return k
}

func progress(moved int) { fmt.Fprintf(os.Stderr, "\rrewrapped %d", moved) }

func withNode(cmd *cobra.Command, nf *nodeFlags, fn func(hsm.Backend, *store.Store) error) error {
	if err := nf.resolve(true); err != nil {
		return err
	}
	// The hardware first: a wrong PIN or a missing token must not touch the store.
	b, err := hsmuri.Open(cmd.Context(), nf.keyURI, nil)
	if err != nil {
		return err
	}
	defer b.Close()
	st, err := store.Open(nf.storePath, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(b, st)
}

func tokenCmd() *cobra.Command {
	t := &cobra.Command{Use: "token", Short: "PKCS#11 token administration"}
	var module, label, pinSrc, soPinSrc string
	initTok := &cobra.Command{
		Use:   "init",
		Short: "Initialise a PKCS#11 token (e.g. SoftHSM2) and set its user PIN",
		Long: `token init initialises a fresh token in the first free slot with --label and
sets its user PIN, through the PKCS#11 API. Both PINs are read from sources
(file:/path, env:NAME, cred:NAME), never from the command line. It refuses a
label that is already in use.`,
		Example: "  signerctl token init --label node0 --pin-source file:/etc/signerd/hsm-pin --so-pin-source file:/etc/signerd/hsm-so-pin",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if label == "" || pinSrc == "" || soPinSrc == "" {
				return errors.New("--label, --pin-source and --so-pin-source are required")
			}
			pin, err := secret.Read(pinSrc)
			if err != nil {
				return err
			}
			defer secret.Zero(pin)
			so, err := secret.Read(soPinSrc)
			if err != nil {
				return err
			}
			defer secret.Zero(so)
			if err := pkcs11.InitToken(module, label, so, pin); err != nil {
				return err
			}
			fmt.Printf("token %q initialised; its key URI: pkcs11:token=%s;object=share-kek?module-path=%s&pin-source=%s\n", label, label, module, pinSrc)
			return nil
		},
	}
	f := initTok.Flags()
	f.StringVar(&module, "module", "/usr/lib/softhsm/libsofthsm2.so", "PKCS#11 module")
	f.StringVar(&label, "label", "", "token label")
	f.StringVar(&pinSrc, "pin-source", "", "user PIN source: file:/path, env:NAME or cred:NAME")
	f.StringVar(&soPinSrc, "so-pin-source", "", "security officer PIN source")
	t.AddCommand(initTok)
	return t
}
