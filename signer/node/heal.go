package node

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/store"
)

// Key confirmations and healing.
//
// A reshare's "sealed" announcements travel on its session (core NATS)
// only, so a node that restarted or was cut off at that moment never sees
// them. Every committee member that seals a share (keygen: active at epoch
// 1; reshare: pending at the new epoch) therefore also puts a signed
// protocol.KeyConfirmation into the KV bucket routing.KeysBucket, under
// <wallet>.<keytype>.<epoch>.<node>; a reshare member does so before it
// announces "sealed", so every "sealed" is backed by a stored confirmation.
//
// An epoch is committed once every member of its committee confirmed the
// same key (same committee, threshold, public key, key digest and
// ceremony): every new member then holds its sealed share. A node reads the
// confirmations (heal) at start for its pending shares, and at every sign
// and reshare request for the wallet's key type, and then
//   - activates a pending share of its own that the committed epoch
//     confirms (the digest and ceremony are its own), or
//   - retires what it holds older than the newest committed epoch when it
//     holds no share of that epoch (a member that missed a reshare, in the
//     new committee or not): store.SwitchEpoch writes a retired record
//     (metadata and a sealed marker, no share) at that epoch and deletes
//     the older records, share and all, as a reshare's own switch does.
//
// Confirmations are believed only when they verify under the named node's
// identity key from the peer list, name a node of their own committee, sit
// under their own key and name only cluster members; anything else is
// ignored and counted (metrics ConfirmationsIgnored). Holders of NATS
// credentials can delete or overwrite entries (which delays healing) but
// cannot make a node activate or retire a share.

// Bounds of the confirmation traffic.
const (
	confirmPublishWindow  = 30 * time.Second // how long a member retries putting its confirmation
	confirmAttemptTimeout = 5 * time.Second
	healReadTimeout       = 5 * time.Second // one heal's reads of the bucket
	healAtStartBudget     = 30 * time.Second
	maxHealEpochs         = 64 // epochs one heal probes forward
)

// keyDigest is the digest this node confirms for a share: ceremony.KeyDigest
// over the key type, the public key and the share's public share points.
// share is plaintext; only its public parts are decoded.
func keyDigest(sc ceremony.Scheme, pub, share []byte) ([]byte, error) {
	ps, err := sc.PublicShares(share)
	if err != nil {
		return nil, err
	}
	d := ceremony.KeyDigest(sc.KeyType(), pub, ps)
	return d[:], nil
}

// confirmationOf is this node's confirmation of the share meta describes.
func confirmationOf(meta store.WalletMeta) *protocol.KeyConfirmation {
	return &protocol.KeyConfirmation{
		WalletID: meta.WalletID, KeyType: meta.KeyType, Epoch: meta.Epoch, Committee: slices.Clone(meta.Committee),
		Threshold: meta.Threshold, PubKey: hex.EncodeToString(meta.PubKey), KeyDigest: hex.EncodeToString(meta.KeyDigest),
		Ceremony: meta.Ceremony, SealedAt: meta.CreatedAt.UnixMilli(),
	}
}

// publishConfirmation signs this node's confirmation of the share meta
// describes and puts it into the keys bucket, retrying for up to
// confirmPublishWindow or until ctx ends.
func (n *Node) publishConfirmation(ctx context.Context, meta store.WalletMeta) error {
	if n.keys == nil {
		return errors.New("node: the key confirmations bucket is not open")
	}
	key, err := routing.ConfirmationKey(meta.WalletID, meta.KeyType, meta.Epoch, n.cfg.NodeID)
	if err != nil {
		return err
	}
	raw, err := protocol.SignConfirmation(ctx, n.identity, n.cfg.NodeID, confirmationOf(meta))
	if err != nil {
		return fmt.Errorf("sign key confirmation: %w", err)
	}
	deadline := time.Now().Add(confirmPublishWindow)
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, confirmAttemptTimeout)
		_, err = n.keys.Put(actx, key, raw)
		cancel()
		if err == nil {
			n.log.Debug("key confirmation published", "key", key, "attempts", attempt)
			return nil
		}
		if ctx.Err() != nil || time.Now().Add(backoff).After(deadline) {
			return fmt.Errorf("publish key confirmation %s: %w", key, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("publish key confirmation %s: %w", key, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxPublishBackoff)
	}
}

// ignoreConfirmation counts and logs a confirmation that is not believed.
func (n *Node) ignoreConfirmation(reason, key string, err error) {
	n.m.ConfirmationIgnored(reason)
	n.log.Debug("key confirmation ignored", "key", key, "reason", reason, "err", err)
}

// checkConfirmation verifies the entry under key of (wallet, kt, epoch,
// node) and returns the confirmation if it is believed: signed by node's
// identity key, node in its committee, every member a cluster member, and
// its own members are the key's.
func (n *Node) checkConfirmation(key string, raw []byte, wallet, kt string, epoch uint64, node string) (*protocol.KeyConfirmation, bool) {
	c, err := protocol.VerifyConfirmation(raw, n.peerKeys)
	if err != nil {
		reason := "malformed"
		switch {
		case errors.Is(err, protocol.ErrInvalidSignature):
			reason = "bad_signature"
		case errors.Is(err, protocol.ErrUnknownNode):
			reason = "unknown_node"
		case errors.Is(err, protocol.ErrNotInCommittee):
			reason = "not_in_committee"
		}
		n.ignoreConfirmation(reason, key, err)
		return nil, false
	}
	if c.WalletID != wallet || c.KeyType != kt || c.Epoch != epoch || c.NodeID != node {
		n.ignoreConfirmation("key_mismatch", key, fmt.Errorf("entry confirms %s %s epoch %d of %s", c.WalletID, c.KeyType, c.Epoch, c.NodeID))
		return nil, false
	}
	for _, m := range c.Committee {
		if !slices.Contains(n.cfg.Committee, m) {
			n.ignoreConfirmation("outside_cluster", key, fmt.Errorf("committee member %s is not in the cluster", m))
			return nil, false
		}
	}
	return c, true
}

// confirmationsAt reads every cluster member's confirmation of a wallet's
// key type at epoch and returns those believed, by node.
func (n *Node) confirmationsAt(ctx context.Context, wallet, kt string, epoch uint64) map[string]*protocol.KeyConfirmation {
	type got struct {
		node string
		c    *protocol.KeyConfirmation
	}
	ch := make(chan got, len(n.cfg.Committee))
	for _, node := range n.cfg.Committee {
		go func() {
			key, err := routing.ConfirmationKey(wallet, kt, epoch, node)
			if err != nil {
				ch <- got{node, nil}
				return
			}
			e, err := n.keys.Get(ctx, key)
			if err != nil {
				if !errors.Is(err, jetstream.ErrKeyNotFound) {
					n.log.Debug("key confirmation not read", "key", key, "err", err)
				}
				ch <- got{node, nil}
				return
			}
			c, _ := n.checkConfirmation(key, e.Value(), wallet, kt, epoch, node)
			ch <- got{node, c}
		}()
	}
	out := map[string]*protocol.KeyConfirmation{}
	for range n.cfg.Committee {
		if g := <-ch; g.c != nil {
			out[g.node] = g.c
		}
	}
	return out
}

// committedAt returns the confirmation that every member of its own
// committee confirmed alike among confs (one epoch's, by node); false when
// there is none, or more than one (then nothing is done).
func committedAt(confs map[string]*protocol.KeyConfirmation) (*protocol.KeyConfirmation, bool) {
	var found *protocol.KeyConfirmation
	for _, id := range slices.Sorted(maps.Keys(confs)) {
		c := confs[id]
		complete := true
		for _, m := range c.Committee {
			if o, ok := confs[m]; !ok || !o.Same(c) {
				complete = false
				break
			}
		}
		if !complete {
			continue
		}
		if found != nil && !found.Same(c) {
			return nil, false
		}
		found = c
	}
	return found, found != nil
}

// newestCommitted probes the epochs from, from+1, ... and returns the
// newest committed one of the key pub (nil: any key), stopping at the
// first epoch nothing committed.
func (n *Node) newestCommitted(ctx context.Context, wallet, kt string, from uint64, pub []byte) (*protocol.KeyConfirmation, bool) {
	var last *protocol.KeyConfirmation
	for e := from; e < from+maxHealEpochs; e++ {
		c, ok := committedAt(n.confirmationsAt(ctx, wallet, kt, e))
		if !ok {
			break
		}
		if pub != nil && c.PubKey != hex.EncodeToString(pub) {
			n.ignoreConfirmation("other_key", fmt.Sprintf("%s.%s.%d", wallet, kt, e), errors.New("the committee confirmed another public key"))
			break
		}
		last = c
	}
	return last, last != nil
}

// walletLock serializes the store changes of one wallet key type: heal,
// sealPending and a reshare's switch.
func (n *Node) walletLock(wallet, kt string) *sync.Mutex {
	mu, _ := n.healMu.LoadOrStore(wallet+"\x00"+kt, new(sync.Mutex))
	return mu.(*sync.Mutex)
}

// heal brings this node's records of a wallet's key type in line with the
// committee's confirmations: from the epoch after its active share (or its
// pending share's epoch when it has no active one), it finds the newest
// committed epoch and adopts it (adopt). A node with no record, or only a
// retired one, has nothing to heal. Failures are logged: the node then
// goes on with what it holds.
func (n *Node) heal(ctx context.Context, wallet, kt string) {
	if n.keys == nil || !protocol.ValidKeyType(kt) || protocol.ValidToken(wallet) != nil {
		return
	}
	newest, err := n.st.Newest(wallet, kt)
	if err != nil {
		return
	}
	var from uint64
	switch newest.Status {
	case store.StatusActive:
		from = newest.Epoch + 1
	case store.StatusPending:
		from = newest.Epoch
		if active, _, err := n.st.Share(wallet, kt); err == nil {
			from = active.Epoch + 1
		}
	default:
		return
	}
	rctx, cancel := context.WithTimeout(ctx, healReadTimeout)
	defer cancel()
	target, ok := n.newestCommitted(rctx, wallet, kt, from, newest.PubKey)
	if !ok {
		return
	}
	mu := n.walletLock(wallet, kt)
	mu.Lock()
	defer mu.Unlock()
	if err := n.adopt(ctx, target); err != nil {
		n.log.Error("could not switch to the committee's confirmed epoch", "wallet", wallet, "key_type", kt, "epoch", target.Epoch, "err", err)
	}
}

// adopt switches this node to the committed epoch c (under walletLock). A
// pending share of this node that c confirms (its digest and ceremony)
// becomes active; otherwise the node holds no share of that epoch and
// keeps a retired record there. Either way store.SwitchEpoch deletes the
// older epochs. A record at that epoch that is already active or retired
// is left alone (the reshare's own switch, or an earlier heal, got there
// first).
func (n *Node) adopt(ctx context.Context, c *protocol.KeyConfirmation) error {
	newest, err := n.st.Newest(c.WalletID, c.KeyType)
	if err != nil {
		return err
	}
	at, _, err := n.st.ShareAt(c.WalletID, c.KeyType, c.Epoch)
	switch {
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	case err == nil && (at.Status == store.StatusActive || at.Status == store.StatusRetired):
		return nil
	case err == nil && at.Status == store.StatusPending && hex.EncodeToString(at.KeyDigest) == c.KeyDigest &&
		at.Ceremony == c.Ceremony && slices.Contains(c.Committee, n.cfg.NodeID):
		if err := n.st.SwitchEpoch(c.WalletID, c.KeyType, c.Epoch, nil); err != nil {
			return err
		}
		n.m.Healed("activated")
		n.log.Info("pending share activated: the whole new committee confirmed it", "wallet", c.WalletID, "key_type", c.KeyType,
			"epoch", c.Epoch, "committee", c.Committee)
		return nil
	}
	pub, err := hex.DecodeString(c.PubKey)
	if err != nil {
		return err
	}
	rec, err := n.retiredRecord(ctx, c.WalletID, c.KeyType, c.Epoch, c.Committee, c.Threshold, pub, newest.CreatedBy,
		retiredMarker{Retired: true, Ceremony: c.Ceremony})
	if err != nil {
		return err
	}
	if err := n.st.SwitchEpoch(c.WalletID, c.KeyType, c.Epoch, rec); err != nil {
		return err
	}
	n.m.Healed("retired")
	n.log.Warn("share retired: a reshare this node missed moved the key to a newer epoch", "wallet", c.WalletID,
		"key_type", c.KeyType, "held_epoch", newest.Epoch, "epoch", c.Epoch, "committee", c.Committee,
		"member", slices.Contains(c.Committee, n.cfg.NodeID))
	return nil
}

// retiredRecord seals marker under the share binding of epoch and returns
// the retired record (metadata, no share) of a wallet key type at epoch.
func (n *Node) retiredRecord(ctx context.Context, wallet, kt string, epoch uint64, committee []string, t int, pub []byte,
	owner string, marker retiredMarker) (*store.Record, error) {
	pt, err := json.Marshal(marker)
	if err != nil {
		return nil, err
	}
	sealed, err := n.sealer.Seal(ctx, pt, shareBinding(n.cfg.NodeID, wallet, kt, epoch))
	if err != nil {
		return nil, err
	}
	return &store.Record{Meta: store.WalletMeta{
		WalletID: wallet, KeyType: kt, Epoch: epoch, Committee: slices.Clone(committee), Threshold: t,
		PubKey: bytes.Clone(pub), CreatedAt: time.Now().UTC(), Status: store.StatusRetired, CreatedBy: owner,
		Ceremony: marker.Ceremony,
	}, Sealed: sealed}, nil
}

// healAtStart heals every wallet key type whose newest record is pending
// (a node that stopped or was cut off before the last "sealed" of a
// reshare), before the node announces itself ready. Active shares are
// checked at their wallet's next request (beforeSign, reshare).
func (n *Node) healAtStart(ctx context.Context) {
	metas, err := n.st.Wallets()
	if err != nil {
		n.log.Warn("store: wallets not listed for healing", "err", err)
		return
	}
	newest := map[[2]string]store.WalletMeta{}
	for _, m := range metas { // key order: the newest epoch of a wallet key type comes last
		newest[[2]string{m.WalletID, m.KeyType}] = m
	}
	ctx, cancel := context.WithTimeout(ctx, healAtStartBudget)
	defer cancel()
	for k, m := range newest {
		if m.Status == store.StatusPending && ctx.Err() == nil {
			n.heal(ctx, k[0], k[1])
		}
	}
}

// walletConfirmed reports whether any cluster member confirmed a key of
// the wallet's key type, at any epoch (a confirmation that is believed).
func (n *Node) walletConfirmed(ctx context.Context, wallet, kt string) bool {
	if n.keys == nil {
		return false
	}
	filter, err := routing.ConfirmationsFilter(wallet, kt)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, healReadTimeout)
	defer cancel()
	w, err := n.keys.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		n.log.Debug("key confirmations not listed", "wallet", wallet, "key_type", kt, "err", err)
		return false
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return false
		case e, ok := <-w.Updates():
			if !ok || e == nil { // nil: the end of the stored values
				return false
			}
			w2, kt2, epoch, node, err := routing.ParseConfirmationKey(e.Key())
			if err != nil || w2 != wallet || kt2 != kt {
				n.ignoreConfirmation("key_mismatch", e.Key(), err)
				continue
			}
			if _, ok := n.checkConfirmation(e.Key(), e.Value(), wallet, kt, epoch, node); ok {
				return true
			}
		}
	}
}

// beforeSign runs first in sign. It heals the wallet's key type, then
// decides whether this node stays out of the request (true) instead of
// answering: a node with no active share answers nothing when it knows the
// wallet (a pending or retired record) or when some member confirmed the
// wallet's key, since its peers may hold it; only a node that cannot know
// the wallet goes on, to answer UNKNOWN_WALLET. A keygen of the wallet
// still running on this node is waited for first.
func (n *Node) beforeSign(ctx context.Context, r *protocol.SigningRequest) (outcome, bool) {
	w, kt := r.WalletID, r.KeyType
	n.heal(ctx, w, kt)
	_, _, err := n.st.Share(w, kt)
	if !errors.Is(err, store.ErrNotFound) {
		return outcome{}, false // an active share (or a store error sign reports)
	}
	if n.awaitKeygen(ctx, w) {
		if _, _, err := n.st.Share(w, kt); err == nil {
			return outcome{}, false
		}
	}
	if m, err := n.st.Newest(w, kt); err == nil {
		n.log.Debug("no active share: staying out of the signing", "request_id", r.RequestID, "wallet", w, "key_type", kt,
			"newest_epoch", m.Epoch, "status", m.Status)
		return notParticipant(), true
	}
	if n.walletConfirmed(ctx, w, kt) {
		n.log.Info("no record of a wallet its committee confirmed: staying out of the signing", "request_id", r.RequestID,
			"wallet", w, "key_type", kt)
		return notParticipant(), true
	}
	return outcome{}, false
}
