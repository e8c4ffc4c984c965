// Package backup writes a node's threshold shares, opened from its hardware,
// into one file encrypted with age to offline recovery keys, and restores such
// a file into a node's store, sealing every share again under the target
// hardware (which may be a brand-new token or TPM).
//
// The backup file is an age file (X25519 recipients). Its plaintext, which
// only ever exists in memory, is:
//
//	"hwsigner-backup\n"
//	uint32 BE length, header JSON (format, node ID, creation time, count and
//	                  every share's wallet metadata; nothing secret)
//	per share, in header order: uint32 BE length, the share's plaintext
//
// Every share buffer this package owns is zeroed after use.
package backup

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"filippo.io/age"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/internal/secret"
	"github.com/hwsigner/signer/signer/store"
)

// FormatVersion is the version of the backup payload written by Write.
const FormatVersion = 1

const (
	magic = "hwsigner-backup\n"
	// maxHeader and maxShare bound what Restore allocates from a file.
	maxHeader = 64 << 20
	maxShare  = 16 << 20
)

// Errors. Every error Write and Restore return wraps one of these (or an hsm
// or store error) and says what to do.
var (
	ErrNodeMismatch   = errors.New("backup: backup belongs to another node")
	ErrWrongIdentity  = errors.New("backup: no age identity matches the backup's recipients")
	ErrCorrupt        = errors.New("backup: backup file is damaged or was altered")
	ErrFormat         = errors.New("backup: unsupported backup format")
	ErrShareExists    = errors.New("backup: the store already holds a share the backup would restore")
	ErrNotInitialised = errors.New("backup: the target key backend has no keys")
	ErrNoRecipients   = errors.New("backup: no recovery recipients")
)

// ShareBinding is the binding signer/node seals a share under.
func ShareBinding(nodeID string, m store.WalletMeta) hsm.Binding {
	return hsm.Binding{NodeID: nodeID, Purpose: "share", WalletID: m.WalletID, KeyType: m.KeyType, Epoch: m.Epoch}
}

// Summary describes a backup; it holds no secret.
type Summary struct {
	Format    int       `json:"format"`
	NodeID    string    `json:"node_id"`
	CreatedAt time.Time `json:"created_at"`
	Shares    int       `json:"shares"`
	Wallets   int       `json:"wallets"`
}

type header struct {
	Format    int                `json:"format"`
	NodeID    string             `json:"node_id"`
	CreatedAt time.Time          `json:"created_at"`
	Count     int                `json:"count"`
	Shares    []store.WalletMeta `json:"shares"`
}

func (h *header) summary() Summary {
	wallets := map[string]bool{}
	for _, m := range h.Shares {
		wallets[m.WalletID] = true
	}
	return Summary{Format: h.Format, NodeID: h.NodeID, CreatedAt: h.CreatedAt, Shares: len(h.Shares), Wallets: len(wallets)}
}

// Write opens every share in st (all wallets, key types and epochs) with b and
// writes them, with their metadata, to w encrypted to the recipients.
func Write(ctx context.Context, b hsm.Backend, st *store.Store, nodeID string, w io.Writer, recipients ...age.Recipient) (Summary, error) {
	if len(recipients) == 0 {
		return Summary{}, fmt.Errorf("%w: give at least one age recipient (age1...)", ErrNoRecipients)
	}
	metas, err := st.Wallets()
	if err != nil {
		return Summary{}, fmt.Errorf("backup: list shares: %w", err)
	}
	h := header{Format: FormatVersion, NodeID: nodeID, CreatedAt: time.Now().UTC(), Count: len(metas), Shares: metas}
	hdr, err := json.Marshal(h)
	if err != nil {
		return Summary{}, fmt.Errorf("backup: encode header: %w", err)
	}
	aw, err := age.Encrypt(w, recipients...)
	if err != nil {
		return Summary{}, fmt.Errorf("backup: encrypt: %w", err)
	}
	if err := writeChunk(aw, []byte(magic), hdr); err != nil {
		return Summary{}, err
	}
	sealer := hsm.NewSealer(b)
	for _, m := range metas {
		if err := ctx.Err(); err != nil {
			return Summary{}, err
		}
		if err := writeShare(ctx, sealer, st, nodeID, m, aw); err != nil {
			return Summary{}, err
		}
	}
	if err := aw.Close(); err != nil {
		return Summary{}, fmt.Errorf("backup: finish encryption: %w", err)
	}
	return h.summary(), nil
}

func writeShare(ctx context.Context, sealer *hsm.Sealer, st *store.Store, nodeID string, m store.WalletMeta, w io.Writer) error {
	what := fmt.Sprintf("wallet %s %s epoch %d", m.WalletID, m.KeyType, m.Epoch)
	_, sealed, err := st.ShareAt(m.WalletID, m.KeyType, m.Epoch)
	if err != nil {
		return fmt.Errorf("backup: read %s: %w", what, err)
	}
	if blob, err := hsm.ParseBlob(sealed); err == nil && blob.Binding.NodeID != nodeID {
		return fmt.Errorf("%w: %s is sealed for node %q, not %q (pass the node's own --node-id)", ErrNodeMismatch, what, blob.Binding.NodeID, nodeID)
	}
	pt, err := sealer.Open(ctx, sealed, ShareBinding(nodeID, m))
	if err != nil {
		return fmt.Errorf("backup: open %s with the node's hardware: %w", what, err)
	}
	defer secret.Zero(pt)
	if err := writeChunk(w, nil, pt); err != nil {
		return fmt.Errorf("backup: %s: %w", what, err)
	}
	return nil
}

// writeChunk writes prefix, then body with its uint32 length.
func writeChunk(w io.Writer, prefix, body []byte) error {
	buf := append(prefix[:len(prefix):len(prefix)], 0, 0, 0, 0)
	binary.BigEndian.PutUint32(buf[len(prefix):], uint32(len(body)))
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("backup: write: %w", err)
	}
	if _, err := w.Write(body); err != nil {
		return fmt.Errorf("backup: write: %w", err)
	}
	return nil
}

// WriteFile is Write to path: the file is created 0600 next to path and
// renamed into place only when complete, so path never holds a partial
// backup. An existing file at path is replaced.
func WriteFile(ctx context.Context, b hsm.Backend, st *store.Store, nodeID, path string, recipients ...age.Recipient) (Summary, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return Summary{}, fmt.Errorf("backup: create %s: %w", path, err)
	}
	done := false
	defer func() {
		if !done {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return Summary{}, fmt.Errorf("backup: %w", err)
	}
	sum, err := Write(ctx, b, st, nodeID, tmp, recipients...)
	if err != nil {
		return Summary{}, err
	}
	if err := tmp.Sync(); err != nil {
		return Summary{}, fmt.Errorf("backup: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return Summary{}, fmt.Errorf("backup: close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return Summary{}, fmt.Errorf("backup: %w", err)
	}
	done = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return sum, nil
}

// sealedShare is one share sealed under the target backend, ready to store.
type sealedShare struct {
	meta   store.WalletMeta
	sealed []byte
}

// Restore decrypts a backup from r with the age identities, checks that it
// belongs to nodeID, seals every share under b with the node's share binding
// and writes them to st. Nothing is written unless the whole file decrypts
// and authenticates and none of its shares is already in st.
func Restore(ctx context.Context, b hsm.Backend, st *store.Store, nodeID string, r io.Reader, identities ...age.Identity) (Summary, error) {
	if _, err := b.Identity(ctx); err != nil {
		if errors.Is(err, hsm.ErrKeyNotFound) {
			return Summary{}, fmt.Errorf("%w: run `signerctl init --key-uri ...` on the new token or TPM first: %w", ErrNotInitialised, err)
		}
		return Summary{}, fmt.Errorf("backup: target key backend: %w", err)
	}
	ar, err := decrypt(r, identities)
	if err != nil {
		return Summary{}, err
	}
	h, err := readHeader(ar)
	if err != nil {
		return Summary{}, err
	}
	if h.NodeID != nodeID {
		return Summary{}, fmt.Errorf("%w: the backup was made for node %q, the target is node %q (restore a backup of %s, or pass --node-id %s if the target really is that node)",
			ErrNodeMismatch, h.NodeID, nodeID, nodeID, h.NodeID)
	}
	for _, m := range h.Shares {
		if _, _, err := st.ShareAt(m.WalletID, m.KeyType, m.Epoch); err == nil {
			return Summary{}, fmt.Errorf("%w: wallet %s %s epoch %d is in %s (restore into an empty store, or remove that store first)",
				ErrShareExists, m.WalletID, m.KeyType, m.Epoch, st.Path())
		} else if !errors.Is(err, store.ErrNotFound) {
			return Summary{}, fmt.Errorf("backup: check %s: %w", st.Path(), err)
		}
	}
	sealer := hsm.NewSealer(b)
	out := make([]sealedShare, 0, len(h.Shares))
	for _, m := range h.Shares {
		if err := ctx.Err(); err != nil {
			return Summary{}, err
		}
		sealed, err := readAndSeal(ctx, sealer, ar, nodeID, m)
		if err != nil {
			return Summary{}, err
		}
		out = append(out, sealedShare{m, sealed})
	}
	// The end of the age stream is authenticated: only now is the whole file
	// known to be intact.
	var one [1]byte
	switch _, err := io.ReadFull(ar, one[:]); {
	case err == nil:
		return Summary{}, corrupt("read the end", errors.New("data after the last share"))
	case err != io.EOF:
		return Summary{}, corrupt("read the end", err)
	}
	for i, s := range out {
		if err := st.PutShare(s.meta, s.sealed); err != nil {
			for _, done := range out[:i] {
				_ = st.DeleteShare(done.meta.WalletID, done.meta.KeyType, done.meta.Epoch)
			}
			return Summary{}, fmt.Errorf("backup: store wallet %s %s epoch %d (nothing restored): %w", s.meta.WalletID, s.meta.KeyType, s.meta.Epoch, err)
		}
	}
	return h.summary(), nil
}

// RestoreFile is Restore from the backup file at path.
func RestoreFile(ctx context.Context, b hsm.Backend, st *store.Store, nodeID, path string, identities ...age.Identity) (Summary, error) {
	f, err := os.Open(path)
	if err != nil {
		return Summary{}, fmt.Errorf("backup: open backup file: %w", err)
	}
	defer f.Close()
	return Restore(ctx, b, st, nodeID, f, identities...)
}

// ParseIdentityFile reads age identities (AGE-SECRET-KEY-1... lines) from a
// file. The error never quotes the file's content.
func ParseIdentityFile(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("backup: open identity file: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("backup: identity file %s: %w (give the age identity file made by age-keygen)", path, err)
	}
	return ids, nil
}

// ParseRecipients parses age X25519 recipients (age1...).
func ParseRecipients(ss []string) ([]age.Recipient, error) {
	var out []age.Recipient
	for _, s := range ss {
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return nil, fmt.Errorf("backup: recipient: %w (an age X25519 recipient starts with age1; age-keygen -y prints it)", err)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: give at least one age recipient (age1...)", ErrNoRecipients)
	}
	return out, nil
}

func decrypt(r io.Reader, identities []age.Identity) (io.Reader, error) {
	ar, err := age.Decrypt(r, identities...)
	if err == nil {
		return ar, nil
	}
	var nomatch *age.NoIdentityMatchError
	if errors.As(err, &nomatch) {
		return nil, fmt.Errorf("%w: use the identity file of one of the recovery keys the backup was made for: %w", ErrWrongIdentity, err)
	}
	return nil, fmt.Errorf("%w: %w (is this a signerctl backup? use another copy)", ErrCorrupt, err)
}

func readHeader(r io.Reader) (*header, error) {
	m := make([]byte, len(magic))
	if _, err := io.ReadFull(r, m); err != nil {
		return nil, corrupt("read header", err)
	}
	if string(m) != magic {
		return nil, fmt.Errorf("%w: not a signerctl backup", ErrFormat)
	}
	raw, err := readChunk(r, maxHeader)
	if err != nil {
		return nil, corrupt("read header", err)
	}
	var h header
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, corrupt("decode header", err)
	}
	if h.Format != FormatVersion {
		return nil, fmt.Errorf("%w: format %d, this signerctl reads %d (use a matching signerctl)", ErrFormat, h.Format, FormatVersion)
	}
	if h.Count != len(h.Shares) {
		return nil, corrupt("decode header", fmt.Errorf("count %d but %d shares listed", h.Count, len(h.Shares)))
	}
	return &h, nil
}

func readAndSeal(ctx context.Context, sealer *hsm.Sealer, r io.Reader, nodeID string, m store.WalletMeta) ([]byte, error) {
	what := fmt.Sprintf("wallet %s %s epoch %d", m.WalletID, m.KeyType, m.Epoch)
	pt, err := readChunk(r, maxShare)
	if err != nil {
		return nil, corrupt("read "+what, err)
	}
	defer secret.Zero(pt)
	sealed, err := sealer.Seal(ctx, pt, ShareBinding(nodeID, m))
	if err != nil {
		if errors.Is(err, hsm.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w: seal %s: run `signerctl init` on the target first: %w", ErrNotInitialised, what, err)
		}
		return nil, fmt.Errorf("backup: seal %s under the target hardware: %w", what, err)
	}
	return sealed, nil
}

// readChunk reads a uint32 length and that many bytes into a new buffer the
// caller owns.
func readChunk(r io.Reader, limit int) ([]byte, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(l[:])
	if int64(n) > int64(limit) {
		return nil, fmt.Errorf("length %d over the limit %d", n, limit)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		secret.Zero(buf)
		return nil, err
	}
	return buf, nil
}

func corrupt(op string, err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %s: %w (use another copy of the backup)", ErrCorrupt, op, err)
}
