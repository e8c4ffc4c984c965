package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/hwsigner/signer/internal/secret"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/committee"
	"github.com/hwsigner/signer/signer/reshare"
	"github.com/hwsigner/signer/signer/store"
)

// Resharing, as one node runs it:
//
//  1. Every ready node of the cluster joins one transport session for the
//     request (a node new to the wallet cannot know the old committee, so
//     the set is one every node computes alone); the new committee must be
//     ready (committee.ReshareParticipants).
//  2. Each node announces, signed, what it holds for the wallet's key type:
//     nothing, or its active share's epoch, committee, threshold, public key
//     and share key (reshare.Mux.Exchange). The holders are the old parties;
//     they must agree (committee.PlanReshare).
//  3. Nodes in neither committee leave; the others run the tss ceremony
//     (the key type's ceremony.Scheme Reshare). New parties of a scheme
//     that needs pre-params (ECDSA) draw fresh ones from their pools.
//  4. Each new member seals its share at epoch+1 as pending and announces
//     "sealed". A node that has "sealed" from every new member activates
//     its pending share (new member) or deletes its old share and keeps a
//     retired record without a share (old-only member), then publishes the
//     result. A failure before that leaves every old share active.
//
// The request's new_threshold is tss-lib's t: t+1 of the new committee
// sign (signerd's and signerctl's --threshold is t+1).

// reshare runs one resharing request; a node in neither committee stays
// out once the announcements are in.
func (n *Node) reshare(ctx context.Context, r *protocol.ReshareRequest) outcome {
	res := protocol.NewResult(r)
	parts, err := committee.ReshareParticipants(n.cfg.Committee, n.cfg.NodeID, n.readyNodes(ctx), r.NodeIDs)
	if err != nil {
		return brokeRule(res, err)
	}
	done := n.m.SessionStarted(protocol.OpReshare, r.KeyType)
	out := n.reshareWith(ctx, r, res, parts)
	done(out.label())
	return out
}

// reshareWith runs the reshare among parts, every ready cluster member.
func (n *Node) reshareWith(ctx context.Context, r *protocol.ReshareRequest, res *protocol.Result, parts []string) outcome {
	kt := r.KeyType
	ctx, cancel := context.WithTimeout(ctx, n.cfg.KeygenTimeout)
	defer cancel()

	sc, err := ceremony.SchemeFor(kt)
	if err != nil {
		return failed(res, protocol.CodeBadRequest, err.Error())
	}
	// A keygen of the wallet that this node consumed before this request
	// (every node consumes in the stream's order) stores its share before
	// the node announces what it holds; then the node catches up with any
	// reshare of the key it missed (heal: the committee's confirmations).
	if n.awaitKeygen(ctx, r.WalletID) {
		n.log.Debug("reshare waited for a keygen of the wallet", "wallet", r.WalletID, "request_id", r.RequestID)
	}
	n.heal(ctx, r.WalletID, kt)
	sid := sessionID("reshare", r.ClientID, r.RequestID, kt)
	if m, err := n.st.Newest(r.WalletID, kt); err == nil && m.Ceremony == sid && m.Status != store.StatusPending {
		// This reshare committed while this node was away (it consumes
		// the request late, after a restart): heal just switched to it.
		n.log.Info("reshare already committed without this node; staying out", "wallet", r.WalletID, "key_type", kt,
			"request_id", r.RequestID, "epoch", m.Epoch, "status", m.Status)
		return notParticipant()
	}

	// What this node holds.
	meta, sealed, err := n.st.Share(r.WalletID, kt)
	holds := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return failed(res, protocol.CodeInternal, "store: "+err.Error())
	}
	var plain []byte
	var mine committee.Holding
	if holds {
		plain, err = n.sealer.Open(ctx, sealed, shareBinding(n.cfg.NodeID, r.WalletID, kt, meta.Epoch))
		if err != nil {
			return failedBy(ctx, res, err)
		}
		defer secret.Zero(plain)
		key, err := sc.ShareKey(plain)
		if err != nil {
			return failedBy(ctx, res, err)
		}
		mine = committee.Holding{Holds: true, Epoch: meta.Epoch, Committee: meta.Committee, Threshold: meta.Threshold,
			PubKey: hex.EncodeToString(meta.PubKey), ShareKey: key.Text(16), Owner: meta.CreatedBy}
	}
	isNew := slices.Contains(r.NodeIDs, n.cfg.NodeID)

	tr, err := n.openSession(ctx, sid, parts)
	if err != nil {
		return failedBy(ctx, res, err)
	}
	defer tr.Close()
	mctx, mcancel := context.WithCancel(ctx)
	defer mcancel()
	mux := reshare.New(mctx, tr, n.cfg.NodeID, n.log)
	giveUp := func(reason string) { _ = mux.GiveUp(ctx, reason) }

	// 2. Announcements.
	metas, err := mux.Exchange(ctx, mine, parts)
	if err != nil {
		return failedBy(ctx, res, err)
	}
	agreed, err := committee.PlanReshare(metas, kt, r.WalletID)
	if err != nil {
		return brokeRule(res, err)
	}
	plan := &reshareMeta{old: agreed.Old, keys: agreed.Keys, oldT: agreed.OldThreshold, epoch: agreed.Epoch, pub: agreed.PubKey, owner: agreed.Owner}
	if !holds && !isNew {
		return notParticipant() // in neither committee
	}
	// The wallet's owner, as its holders agree: every participant checks
	// the requester against it, so no member moves another client's key.
	if !n.cfg.Policy.MayUseWallet(r.ClientID, plan.owner, r.WalletID) {
		giveUp("the requester may not use this wallet")
		return refuseWallet(res, r.ClientID, r.WalletID)
	}
	// Pre-params only now: a request that is refused takes none from the pool.
	var opts ceremony.Options
	if isNew && sc.NeedsPreParams() {
		if opts.PreParams, err = n.takePreParams(ctx); err != nil {
			giveUp("no pre-params")
			return failedBy(ctx, res, err)
		}
	}
	n.log.Info("reshare starting", "wallet", r.WalletID, "key_type", kt, "old", plan.old, "old_threshold", plan.oldT,
		"new", r.NodeIDs, "new_threshold", r.NewThreshold, "epoch", plan.epoch+1)

	// 3. The ceremony; a peer's "failed" ends it at once.
	cctx, ccancel := mux.Watch(ctx)
	defer ccancel()
	s := ceremony.ReshareSession{ID: sid, Self: n.cfg.NodeID, Old: plan.old, OldKeys: plan.keys, OldThreshold: plan.oldT,
		New: r.NodeIDs, NewThreshold: r.NewThreshold, PubKey: plan.pub}
	share, err := sc.Reshare(cctx, s, plain, opts, mux)
	if errors.Is(err, ceremony.ErrBadShare) {
		giveUp("share does not decode")
		return failed(res, protocol.CodeHSMFailure, "sealed share does not decode")
	}
	if err != nil {
		return n.reshareFailed(ctx, res, err, giveUp)
	}
	defer secret.Zero(share)

	// 4. Seal pending, confirm (key confirmation in the bucket, then
	// "sealed" on the session), then switch epochs.
	newEpoch := plan.epoch + 1
	var digest []byte
	if isNew {
		pending, err := n.sealPending(ctx, r, plan, newEpoch, share, sc, sid)
		if err != nil {
			return n.reshareFailed(ctx, res, err, giveUp)
		}
		digest = pending.KeyDigest
		if out, stop := n.reshareFaulted(ctx, res, AfterSealPending, r, newEpoch, giveUp); stop {
			return out
		}
		if err := n.publishConfirmation(ctx, pending); err != nil {
			return n.reshareFailed(ctx, res, err, giveUp)
		}
		if err := mux.AnnounceSealed(ctx, plan.pub); err != nil {
			return n.reshareFailed(ctx, res, err, giveUp)
		}
		if out, stop := n.reshareFaulted(ctx, res, AfterAnnounceSealed, r, newEpoch, giveUp); stop {
			return out
		}
	}
	if err := mux.AwaitSealed(cctx, r.NodeIDs); err != nil {
		// A "sealed" that did not arrive (or a peer that gave up after it
		// confirmed) does not undo a reshare the whole new committee
		// confirmed in the bucket; short of that, our pending share (if
		// any) stays pending and the old one stays active.
		if !n.reshareConfirmed(ctx, r, plan, newEpoch, sid, digest) {
			return n.reshareFailed(ctx, res, err, giveUp)
		}
		n.log.Info("reshare: not every \"sealed\" arrived, but the whole new committee confirmed the key", "wallet", r.WalletID,
			"key_type", kt, "epoch", newEpoch, "err", err)
	}
	if err := n.switchEpoch(ctx, r, plan, newEpoch, isNew); err != nil {
		n.log.Error("reshare confirmed but the store could not switch epochs", "wallet", r.WalletID, "key_type", kt, "err", err)
		return failed(res, protocol.CodeInternal, "store: "+err.Error())
	}
	res.PubKey = hex.EncodeToString(plan.pub)
	res.NewThreshold = r.NewThreshold
	n.log.Info("reshare done", "wallet", r.WalletID, "key_type", kt, "epoch", newEpoch, "member", isNew)
	return succeeded(res)
}

// reshareFailed tells the peers this node gave up and sets the result: a
// peer's failure (or the ceremony cancelled because of it) is
// CEREMONY_FAILED, anything else is mapped by errorCode.
func (n *Node) reshareFailed(ctx context.Context, res *protocol.Result, err error, giveUp func(string)) outcome {
	n.log.Warn("reshare failed", "request_id", res.RequestID, "err", err)
	giveUp(err.Error())
	if errors.Is(err, reshare.ErrPeerFailed) || (errors.Is(err, context.Canceled) && ctx.Err() == nil) {
		return failed(res, protocol.CodeCeremonyFailed, "another participant failed: "+err.Error())
	}
	return failedBy(ctx, res, err)
}

// reshareMeta is the node's copy of the committee.Plan the old parties agreed
// on: the old parties and their share keys, the old threshold, the epoch
// they hold, the public key and the wallet's owner (which every new record
// keeps: a reshare never changes it).
type reshareMeta struct {
	old   []string
	keys  map[string]*big.Int
	oldT  int
	epoch uint64
	pub   []byte
	owner string
}

// sealPending stores the new share at epoch as pending, with the digest
// of its public data (keyDigest) and the ceremony's session ID sid, and
// returns its metadata. A pending share left at that epoch by an earlier,
// unconfirmed attempt is replaced. share is the new share's plaintext; the
// caller owns and zeroes it.
func (n *Node) sealPending(ctx context.Context, r *protocol.ReshareRequest, plan *reshareMeta, epoch uint64, share []byte,
	sc ceremony.Scheme, sid string) (store.WalletMeta, error) {
	if share == nil {
		return store.WalletMeta{}, fmt.Errorf("%w: new member without a new share", ceremony.ErrParty)
	}
	digest, err := keyDigest(sc, plan.pub, share)
	if err != nil {
		return store.WalletMeta{}, err
	}
	sealed, err := n.sealer.Seal(ctx, share, shareBinding(n.cfg.NodeID, r.WalletID, r.KeyType, epoch))
	if err != nil {
		return store.WalletMeta{}, err
	}
	mu := n.walletLock(r.WalletID, r.KeyType)
	mu.Lock()
	defer mu.Unlock()
	if prev, _, err := n.st.ShareAt(r.WalletID, r.KeyType, epoch); err == nil {
		if prev.Status != store.StatusPending {
			return store.WalletMeta{}, fmt.Errorf("store: epoch %d of wallet %s %s is already %s", epoch, r.WalletID, r.KeyType, prev.Status)
		}
		if err := n.st.DeleteShare(r.WalletID, r.KeyType, epoch); err != nil {
			return store.WalletMeta{}, err
		}
	}
	meta := store.WalletMeta{
		WalletID: r.WalletID, KeyType: r.KeyType, Epoch: epoch, Committee: slices.Clone(r.NodeIDs), Threshold: r.NewThreshold,
		PubKey: plan.pub, CreatedAt: time.Now().UTC(), Status: store.StatusPending, CreatedBy: plan.owner,
		KeyDigest: digest, Ceremony: sid,
	}
	return meta, n.st.PutShare(meta, sealed)
}

// reshareFaulted applies a test fault (Config.Faults) at point: stop
// reports whether the reshare ends there, with out as its outcome.
func (n *Node) reshareFaulted(ctx context.Context, res *protocol.Result, point FaultPoint, r *protocol.ReshareRequest, epoch uint64,
	giveUp func(string)) (out outcome, stop bool) {
	switch n.reshareFault(point, r.WalletID, r.KeyType, epoch) {
	case FaultFail:
		return n.reshareFailed(ctx, res, fmt.Errorf("test fault at %s", point), giveUp), true
	case FaultCrash:
		return notParticipant(), true
	}
	return outcome{}, false
}

// reshareConfirmed reports whether the bucket shows this reshare committed:
// every member of the new committee confirmed the same key at epoch, for
// this ceremony (sid), with the request's committee and threshold and the
// plan's public key, and (for a new member) this node's own digest.
func (n *Node) reshareConfirmed(ctx context.Context, r *protocol.ReshareRequest, plan *reshareMeta, epoch uint64, sid string, digest []byte) bool {
	if n.keys == nil {
		return false
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), healReadTimeout)
	defer cancel()
	c, ok := committedAt(n.confirmationsAt(rctx, r.WalletID, r.KeyType, epoch))
	return ok && c.Ceremony == sid && slices.Equal(c.Committee, r.NodeIDs) && c.Threshold == r.NewThreshold &&
		c.PubKey == hex.EncodeToString(plan.pub) && (digest == nil || c.KeyDigest == hex.EncodeToString(digest))
}

// retiredMarker is what a retired record seals instead of a share: a node
// that left the committee keeps the wallet's metadata (so that it stays out
// of the wallet's signing sessions) and nothing secret.
type retiredMarker struct {
	Retired   bool   `json:"retired"`
	SessionID string `json:"session_id"`
	// Ceremony: the session ID of the reshare that moved the key (a retired
	// record written from the committee's confirmations has only this).
	Ceremony string `json:"ceremony,omitempty"`
}

// switchEpoch runs once every new member has sealed. A new member activates
// its pending share at epoch; an old-only member seals a retired marker
// (metadata, no share) for epoch. Either way the store's one SwitchEpoch
// transaction also deletes the older epochs, so a crash leaves this node
// with either its old records or its new one. A switch that heal already
// made (the committee's confirmations came first) is left as it is.
func (n *Node) switchEpoch(ctx context.Context, r *protocol.ReshareRequest, plan *reshareMeta, epoch uint64, isNew bool) error {
	mu := n.walletLock(r.WalletID, r.KeyType)
	mu.Lock()
	defer mu.Unlock()
	if isNew {
		return n.st.SwitchEpoch(r.WalletID, r.KeyType, epoch, nil)
	}
	if at, _, err := n.st.ShareAt(r.WalletID, r.KeyType, epoch); err == nil && at.Status == store.StatusRetired {
		return nil
	}
	rec, err := n.retiredRecord(ctx, r.WalletID, r.KeyType, epoch, r.NodeIDs, r.NewThreshold, plan.pub, plan.owner,
		retiredMarker{Retired: true, SessionID: r.SessionID, Ceremony: sessionID("reshare", r.ClientID, r.RequestID, r.KeyType)})
	if err != nil {
		return err
	}
	return n.st.SwitchEpoch(r.WalletID, r.KeyType, epoch, rec)
}

// leftCommittee reports whether this node holds no active share of the
// wallet's key type because a reshare moved the key to a committee without
// it: it then stays out of the wallet's signing sessions instead of
// answering UNKNOWN_WALLET before the committee's result.
func (n *Node) leftCommittee(walletID, keyType string) bool {
	newest, err := n.st.Newest(walletID, keyType)
	if err != nil || newest.Status != store.StatusRetired || slices.Contains(newest.Committee, n.cfg.NodeID) {
		return false
	}
	_, _, err = n.st.Share(walletID, keyType)
	return err != nil
}

// WalletMeta returns the metadata of this node's newest record of a wallet's
// key type (active, pending or retired), for operators and tests.
func (n *Node) WalletMeta(walletID, keyType string) (store.WalletMeta, bool) {
	m, err := n.st.Newest(walletID, keyType)
	return m, err == nil
}
