// Package store is a node's embedded ACID database (bbolt, fsync on every
// commit). It holds sealed blobs and non-secret metadata only: callers seal
// secrets with hsm.Sealer before they reach it.
//
// Layout: bucket "shares" -> <walletID>\x00<keyType>\x00<epoch BE> -> record
// (metadata and sealed share in one value, so they are written and removed
// together); "pool" -> <id BE> -> sealed pre-params; "journal" ->
// <clientID>\x00<requestID> -> entry (older entries: <requestID>); "secrets" -> <name> -> sealed blob; "meta" -> schema.
package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Errors.
var (
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
	ErrEmpty    = errors.New("store: pre-params pool is empty")
	ErrLocked   = errors.New("store: database is locked by another process")
	ErrDamaged  = errors.New("store: database file is damaged")
)

const schemaVersion = 1

var (
	bShares  = []byte("shares")
	bPool    = []byte("pool")
	bJournal = []byte("journal")
	bSecrets = []byte("secrets")
	bMeta    = []byte("meta")
)

// Options for Open.
type Options struct {
	Timeout  time.Duration // wait for the file lock; default 1s
	ReadOnly bool
}

// Store is one node's database.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens or creates the database at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout, ReadOnly: opts.ReadOnly})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s (is another signerd or signerctl using it?)", ErrLocked, path)
		}
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
		return nil, fmt.Errorf("%w: %s: %v (restore the node from its backup)", ErrDamaged, path, err)
	}
	s := &Store{db: db, path: path}
	if !opts.ReadOnly && !s.current() {
		err = db.Update(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bShares, bPool, bJournal, bSecrets, bMeta} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			m := tx.Bucket(bMeta)
			if v := m.Get([]byte("schema")); v != nil && binary.BigEndian.Uint32(v) != schemaVersion {
				return fmt.Errorf("schema version %d, this signerd reads %d", binary.BigEndian.Uint32(v), schemaVersion)
			}
			return m.Put([]byte("schema"), binary.BigEndian.AppendUint32(nil, schemaVersion))
		})
		if err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("%w: %s: %v", ErrDamaged, path, err)
		}
	}
	return s, nil
}

// current reports whether every bucket exists and the schema is this
// version's, so that opening an up-to-date store writes nothing.
func (s *Store) current() bool {
	ok := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bShares, bPool, bJournal, bSecrets, bMeta} {
			if tx.Bucket(b) == nil {
				return nil
			}
		}
		v := tx.Bucket(bMeta).Get([]byte("schema"))
		ok = len(v) == 4 && binary.BigEndian.Uint32(v) == schemaVersion
		return nil
	})
	return ok
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Path is the database file.
func (s *Store) Path() string { return s.path }

// WalletMeta is the non-secret description of one share.
type WalletMeta struct {
	WalletID  string    `json:"wallet_id"`
	KeyType   string    `json:"key_type"`
	Epoch     uint64    `json:"epoch"`
	Committee []string  `json:"committee"`
	Threshold int       `json:"threshold"`
	PubKey    []byte    `json:"pub_key"`
	ChainCode []byte    `json:"chain_code,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Status    string    `json:"status"` // active, pending, retired
	CreatedBy string    `json:"created_by,omitempty"`
	// Request is the request_id of the keygen that created the wallet (a
	// node that restarts before publishing that keygen's result publishes
	// it from the store).
	Request string `json:"request,omitempty"`
	// KeyDigest is the digest of the key's public data that this node
	// computed from its share and confirmed (ceremony.KeyDigest,
	// protocol.KeyConfirmation); Ceremony is the session ID of the keygen
	// or reshare that produced the share. Both are empty in records written
	// before key confirmations, and in retired records of a node that never
	// held a share at that epoch.
	KeyDigest []byte `json:"key_digest,omitempty"`
	Ceremony  string `json:"ceremony,omitempty"`
}

// Share statuses.
const (
	StatusActive  = "active"
	StatusPending = "pending"
	StatusRetired = "retired"
)

// Record is one share record as the store keeps it: a share's metadata and
// its sealed value (for a retired record, a sealed marker instead of a
// share), written and removed together.
type Record struct {
	Meta   WalletMeta `json:"meta"`
	Sealed []byte     `json:"sealed"`
}

// decodeMeta reads a record's metadata and stops there, so the sealed value
// after it (tens of kilobytes for an ECDSA share) is not scanned: a damaged
// sealed value shows when the record is read whole. Records are written
// with "meta" first; keys before it, if any, are skipped.
func decodeMeta(v []byte) (WalletMeta, error) {
	d := json.NewDecoder(bytes.NewReader(v))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return WalletMeta{}, fmt.Errorf("%w: share record is not a JSON object", ErrDamaged)
	}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return WalletMeta{}, fmt.Errorf("%w: share record: %v", ErrDamaged, err)
		}
		if key, _ := t.(string); strings.EqualFold(key, "meta") {
			var m WalletMeta
			if err := d.Decode(&m); err != nil {
				return WalletMeta{}, fmt.Errorf("%w: share record: %v", ErrDamaged, err)
			}
			return m, nil
		}
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			return WalletMeta{}, fmt.Errorf("%w: share record: %v", ErrDamaged, err)
		}
	}
	return WalletMeta{}, fmt.Errorf("%w: share record without metadata", ErrDamaged)
}

func shareKey(walletID, keyType string, epoch uint64) []byte {
	k := []byte(walletID + "\x00" + keyType + "\x00")
	return binary.BigEndian.AppendUint64(k, epoch)
}

func sharePrefix(walletID, keyType string) []byte {
	return []byte(walletID + "\x00" + keyType + "\x00")
}

// lastUnder moves c to the last key that starts with p, the newest epoch of
// a wallet's key type, and returns nil when there is none.
func lastUnder(c *bolt.Cursor, p []byte) (k, v []byte) {
	// Every key under p is below p with its final \x00 raised to \x01.
	end := append(slices.Clone(p[:len(p)-1]), 1)
	if k, _ = c.Seek(end); k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	if k == nil || !bytes.HasPrefix(k, p) {
		return nil, nil
	}
	return k, v
}

func validID(ids ...string) error {
	for _, id := range ids {
		if id == "" || strings.ContainsRune(id, 0) {
			return fmt.Errorf("store: empty or invalid identifier %q", id)
		}
	}
	return nil
}

// PutShare writes a share's metadata and sealed value in one transaction.
func (s *Store) PutShare(meta WalletMeta, sealed []byte) error {
	return s.PutShares(Record{Meta: meta, Sealed: sealed})
}

// PutShares writes records in one transaction: all of them or, when one is
// invalid or its epoch is already stored, none. An empty status is stored
// as active.
func (s *Store) PutShares(recs ...Record) error {
	type kv struct{ k, v []byte }
	puts := make([]kv, 0, len(recs))
	for _, r := range recs {
		if err := validID(r.Meta.WalletID, r.Meta.KeyType); err != nil {
			return err
		}
		if len(r.Sealed) == 0 {
			return errors.New("store: empty sealed share")
		}
		if r.Meta.Status == "" {
			r.Meta.Status = StatusActive
		}
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		puts = append(puts, kv{shareKey(r.Meta.WalletID, r.Meta.KeyType, r.Meta.Epoch), v})
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bShares)
		for i, p := range puts {
			if b.Get(p.k) != nil {
				m := recs[i].Meta
				return fmt.Errorf("%w: wallet %s %s epoch %d", ErrExists, m.WalletID, m.KeyType, m.Epoch)
			}
			if err := b.Put(p.k, p.v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Share returns the newest active share of a wallet's key type. It reads
// that wallet's records from the newest epoch down and stops at the first
// active one.
func (s *Store) Share(walletID, keyType string) (WalletMeta, []byte, error) {
	var rec *Record
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bShares).Cursor()
		p := sharePrefix(walletID, keyType)
		for k, v := lastUnder(c, p); k != nil && bytes.HasPrefix(k, p); k, v = c.Prev() {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: share record: %v", ErrDamaged, err)
			}
			if r.Meta.Status == StatusActive {
				rec = &r
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return WalletMeta{}, nil, err
	}
	if rec == nil {
		return WalletMeta{}, nil, fmt.Errorf("%w: wallet %s key type %s", ErrNotFound, walletID, keyType)
	}
	return rec.Meta, rec.Sealed, nil
}

// Newest returns the metadata of a wallet's newest record of a key type,
// whatever its status (active, pending or retired). It reads that one
// record's metadata only.
func (s *Store) Newest(walletID, keyType string) (WalletMeta, error) {
	if err := validID(walletID, keyType); err != nil {
		return WalletMeta{}, err
	}
	var m WalletMeta
	err := s.db.View(func(tx *bolt.Tx) error {
		k, v := lastUnder(tx.Bucket(bShares).Cursor(), sharePrefix(walletID, keyType))
		if k == nil {
			return fmt.Errorf("%w: wallet %s key type %s", ErrNotFound, walletID, keyType)
		}
		var err error
		m, err = decodeMeta(v)
		return err
	})
	if err != nil {
		return WalletMeta{}, err
	}
	return m, nil
}

// ShareAt returns one epoch's share.
func (s *Store) ShareAt(walletID, keyType string, epoch uint64) (WalletMeta, []byte, error) {
	var r Record
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bShares).Get(shareKey(walletID, keyType, epoch))
		if v == nil {
			return fmt.Errorf("%w: wallet %s %s epoch %d", ErrNotFound, walletID, keyType, epoch)
		}
		return json.Unmarshal(v, &r)
	})
	return r.Meta, r.Sealed, err
}

// Activate makes epoch the active share and retires older epochs.
func (s *Store) Activate(walletID, keyType string, epoch uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bShares)
		if b.Get(shareKey(walletID, keyType, epoch)) == nil {
			return fmt.Errorf("%w: wallet %s %s epoch %d", ErrNotFound, walletID, keyType, epoch)
		}
		c := b.Cursor()
		p := sharePrefix(walletID, keyType)
		type upd struct{ k, v []byte }
		var ups []upd
		for k, v := c.Seek(p); k != nil && strings.HasPrefix(string(k), string(p)); k, v = c.Next() {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			switch {
			case r.Meta.Epoch == epoch:
				r.Meta.Status = StatusActive
			case r.Meta.Epoch < epoch:
				r.Meta.Status = StatusRetired
			default:
				continue
			}
			nv, err := json.Marshal(r)
			if err != nil {
				return err
			}
			ups = append(ups, upd{append([]byte(nil), k...), nv})
		}
		for _, u := range ups {
			if err := b.Put(u.k, u.v); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteShare removes one epoch's share.
func (s *Store) DeleteShare(walletID, keyType string, epoch uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bShares)
		k := shareKey(walletID, keyType, epoch)
		if b.Get(k) == nil {
			return fmt.Errorf("%w: wallet %s %s epoch %d", ErrNotFound, walletID, keyType, epoch)
		}
		return b.Delete(k)
	})
}

// SwitchEpoch ends a reshare on this node in one transaction, all or
// nothing. With retired nil (a member of the new committee) it activates the
// pending share at epoch, which must exist (an already active one is left as
// it is); with retired set (a member of the old committee only) it stores
// that record, status retired, at epoch, replacing a pending share left
// there by an earlier unconfirmed attempt (an active or retired record there
// is ErrExists). Either way it deletes the wallet key type's records of every
// older epoch; records of newer epochs stay.
func (s *Store) SwitchEpoch(walletID, keyType string, epoch uint64, retired *Record) error {
	if err := validID(walletID, keyType); err != nil {
		return err
	}
	var retiredVal []byte
	if retired != nil {
		m := retired.Meta
		switch {
		case m.WalletID != walletID || m.KeyType != keyType || m.Epoch != epoch:
			return fmt.Errorf("store: retired record is wallet %s %s epoch %d, want %s %s epoch %d", m.WalletID, m.KeyType, m.Epoch, walletID, keyType, epoch)
		case m.Status != StatusRetired:
			return fmt.Errorf("store: retired record has status %q", m.Status)
		case len(retired.Sealed) == 0:
			return errors.New("store: empty sealed marker in retired record")
		}
		var err error
		if retiredVal, err = json.Marshal(retired); err != nil {
			return err
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bShares)
		k := shareKey(walletID, keyType, epoch)
		v := b.Get(k)
		switch {
		case retired != nil:
			if v != nil {
				m, err := decodeMeta(v)
				if err != nil {
					return err
				}
				if m.Status != StatusPending {
					return fmt.Errorf("%w: wallet %s %s epoch %d is %s", ErrExists, walletID, keyType, epoch, m.Status)
				}
			}
			if err := b.Put(k, retiredVal); err != nil {
				return err
			}
		case v == nil:
			return fmt.Errorf("%w: no pending share of wallet %s %s at epoch %d", ErrNotFound, walletID, keyType, epoch)
		default:
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: share record: %v", ErrDamaged, err)
			}
			switch r.Meta.Status {
			case StatusActive:
			case StatusPending:
				r.Meta.Status = StatusActive
				nv, err := json.Marshal(r)
				if err != nil {
					return err
				}
				if err := b.Put(k, nv); err != nil {
					return err
				}
			default:
				return fmt.Errorf("%w: no pending share of wallet %s %s at epoch %d (the record there is %s)", ErrNotFound, walletID, keyType, epoch, r.Meta.Status)
			}
		}
		var older [][]byte
		c := b.Cursor()
		p := sharePrefix(walletID, keyType)
		for ko, _ := c.Seek(p); ko != nil && bytes.Compare(ko, k) < 0; ko, _ = c.Next() {
			older = append(older, slices.Clone(ko))
		}
		for _, ko := range older {
			if err := b.Delete(ko); err != nil {
				return err
			}
		}
		return nil
	})
}

// Wallets lists the metadata of every share record, in key order. It reads
// no sealed value.
func (s *Store) Wallets() ([]WalletMeta, error) {
	var out []WalletMeta
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bShares).ForEach(func(_, v []byte) error {
			m, err := decodeMeta(v)
			if err != nil {
				return err
			}
			out = append(out, m)
			return nil
		})
	})
	return out, err
}

// NextPoolID reserves a pool sequence number to bind a blob to before sealing.
func (s *Store) NextPoolID() (uint64, error) {
	var id uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		id, err = tx.Bucket(bPool).NextSequence()
		return err
	})
	return id, err
}

// PushPreParams stores one sealed pre-params set.
func (s *Store) PushPreParams(id uint64, sealed []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bPool).Put(binary.BigEndian.AppendUint64(nil, id), sealed)
	})
}

// PopPreParams removes and returns the oldest set, in one transaction: a set
// is handed out once.
func (s *Store) PopPreParams() (uint64, []byte, error) {
	var id uint64
	var out []byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bPool).Cursor()
		k, v := c.First()
		if k == nil {
			return ErrEmpty
		}
		id = binary.BigEndian.Uint64(k)
		out = append([]byte(nil), v...)
		return c.Delete()
	})
	return id, out, err
}

// PoolDepth counts the sets in the pool.
func (s *Store) PoolDepth() (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bPool).Stats().KeyN
		return nil
	})
	return n, err
}

// JournalEntry records a request this node accepted.
type JournalEntry struct {
	RequestID  string    `json:"request_id"`
	ClientID   string    `json:"client_id"`
	Op         string    `json:"op"`
	WalletID   string    `json:"wallet_id"`
	State      string    `json:"state"` // accepted, done, failed
	ResultCode string    `json:"result_code,omitempty"`
	At         time.Time `json:"at"`
	ExpiresAt  time.Time `json:"expires_at"`
	// Seq is the request message's sequence in MPC_REQUESTS (0 in entries
	// written before it was recorded): a node that restarts with the entry
	// still "accepted" reads the request back from the stream, and tells a
	// redelivery of the same message from a replay.
	Seq uint64 `json:"seq,omitempty"`
}

// journalKey is the journal key of a request: its clientID, \x00, its
// request ID, so that two clients may use the same request ID. Entries
// written before the journal was scoped by client are keyed by the request
// ID alone (it holds no \x00); they stay readable for the client they name
// and are pruned like the others.
func journalKey(clientID, requestID string) []byte {
	return []byte(clientID + "\x00" + requestID)
}

// journalGet returns the key and value of a request's entry: the scoped one,
// or an unscoped entry of the same client written by an older version.
func journalGet(b *bolt.Bucket, clientID, requestID string) (k, v []byte, err error) {
	k = journalKey(clientID, requestID)
	if v = b.Get(k); v != nil {
		return k, v, nil
	}
	old := []byte(requestID)
	if v = b.Get(old); v == nil {
		return nil, nil, nil
	}
	var e JournalEntry
	if err := json.Unmarshal(v, &e); err != nil {
		return nil, nil, fmt.Errorf("%w: journal entry: %v", ErrDamaged, err)
	}
	if e.ClientID != clientID {
		return nil, nil, nil // another client's request with the same ID
	}
	return old, v, nil
}

// JournalBegin records e unless its client already used its request ID;
// then it returns fresh=false and the earlier entry. Request IDs are scoped
// by client: another client's entry with the same request ID does not count.
func (s *Store) JournalBegin(e JournalEntry) (bool, JournalEntry, error) {
	if err := validID(e.RequestID); err != nil {
		return false, JournalEntry{}, err
	}
	if strings.ContainsRune(e.ClientID, 0) {
		return false, JournalEntry{}, fmt.Errorf("store: invalid client identifier %q", e.ClientID)
	}
	fresh := false
	var prev JournalEntry
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bJournal)
		_, v, err := journalGet(b, e.ClientID, e.RequestID)
		if err != nil {
			return err
		}
		if v != nil {
			return json.Unmarshal(v, &prev)
		}
		fresh = true
		nv, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return b.Put(journalKey(e.ClientID, e.RequestID), nv)
	})
	return fresh, prev, err
}

// JournalFinish records the outcome of a client's request.
func (s *Store) JournalFinish(clientID, requestID, state, code string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bJournal)
		k, v, err := journalGet(b, clientID, requestID)
		if err != nil {
			return err
		}
		if v == nil {
			return fmt.Errorf("%w: request %s of client %q", ErrNotFound, requestID, clientID)
		}
		var e JournalEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return err
		}
		e.State, e.ResultCode = state, code
		nv, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return b.Put(k, nv)
	})
}

// JournalEntryOf returns the journal entry of a client's request.
func (s *Store) JournalEntryOf(clientID, requestID string) (JournalEntry, error) {
	var e JournalEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		_, v, err := journalGet(tx.Bucket(bJournal), clientID, requestID)
		if err != nil {
			return err
		}
		if v == nil {
			return fmt.Errorf("%w: request %s of client %q", ErrNotFound, requestID, clientID)
		}
		return json.Unmarshal(v, &e)
	})
	return e, err
}

// JournalAccepted returns the entries still "accepted" (this node stopped
// while it handled them) whose request expires after t, in stream order
// (Seq).
func (s *Store) JournalAccepted(t time.Time) ([]JournalEntry, error) {
	var out []JournalEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bJournal).ForEach(func(_, v []byte) error {
			var e JournalEntry
			if json.Unmarshal(v, &e) == nil && e.State == "accepted" && e.ExpiresAt.After(t) {
				out = append(out, e)
			}
			return nil
		})
	})
	slices.SortFunc(out, func(a, b JournalEntry) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, err
}

// JournalPrune removes the entries (scoped or not) whose request expired
// before t, and returns how many it removed.
func (s *Store) JournalPrune(before time.Time) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bJournal).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var e JournalEntry
			if json.Unmarshal(v, &e) == nil && e.ExpiresAt.Before(before) {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	return n, err
}

// PutSecret stores a sealed node-level secret by name.
func (s *Store) PutSecret(name string, sealed []byte) error {
	if err := validID(name); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bSecrets).Put([]byte(name), sealed) })
}

// Secret returns a sealed node-level secret.
func (s *Store) Secret(name string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bSecrets).Get([]byte(name))
		if v == nil {
			return fmt.Errorf("%w: secret %s", ErrNotFound, name)
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// RewrapAll passes every sealed value (shares, pool, secrets) through fn and
// stores what it changed, one transaction per bucket.
func (s *Store) RewrapAll(fn func(sealed []byte) ([]byte, bool, error)) (int, error) {
	changed := 0
	for _, name := range [][]byte{bShares, bPool, bSecrets} {
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(name)
			type upd struct{ k, v []byte }
			var ups []upd
			err := b.ForEach(func(k, v []byte) error {
				isShare := string(name) == string(bShares)
				sealed := v
				var rec Record
				if isShare {
					if err := json.Unmarshal(v, &rec); err != nil {
						return err
					}
					sealed = rec.Sealed
				}
				nv, ok, err := fn(append([]byte(nil), sealed...))
				if err != nil {
					return fmt.Errorf("rewrap %q: %w", k, err)
				}
				if !ok {
					return nil
				}
				if isShare {
					rec.Sealed = nv
					if nv, err = json.Marshal(rec); err != nil {
						return err
					}
				}
				ups = append(ups, upd{append([]byte(nil), k...), nv})
				return nil
			})
			if err != nil {
				return err
			}
			for _, u := range ups {
				if err := b.Put(u.k, u.v); err != nil {
					return err
				}
			}
			changed += len(ups)
			return nil
		})
		if err != nil {
			return changed, err
		}
	}
	return changed, nil
}

// Stats counts what the store holds, for `signerctl store inspect`.
type Stats struct {
	Shares   int   `json:"shares"`
	Pool     int   `json:"pool"`
	Journal  int   `json:"journal"`
	Secrets  int   `json:"secrets"`
	FileSize int64 `json:"file_size"`
}

// Stats returns counts.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	err := s.db.View(func(tx *bolt.Tx) error {
		st.Shares = tx.Bucket(bShares).Stats().KeyN
		st.Pool = tx.Bucket(bPool).Stats().KeyN
		st.Journal = tx.Bucket(bJournal).Stats().KeyN
		st.Secrets = tx.Bucket(bSecrets).Stats().KeyN
		st.FileSize = tx.Size()
		return nil
	})
	return st, err
}
