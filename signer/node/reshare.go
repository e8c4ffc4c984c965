package node

import (
	"context"
	"encoding/hex"
	"encoding/json"
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
	var opts ceremony.Options
	if isNew && sc.NeedsPreParams() {
		if opts.PreParams, err = n.takePreParams(ctx); err != nil {
			return failedBy(ctx, res, err)
		}
	}

	sid := sessionID("reshare", r.ClientID, r.RequestID, kt)
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

	// 4. Seal pending, confirm, then switch epochs.
	newEpoch := plan.epoch + 1
	if isNew {
		if err := n.sealPending(ctx, r, plan, newEpoch, share); err != nil {
			return n.reshareFailed(ctx, res, err, giveUp)
		}
		if err := mux.AnnounceSealed(ctx, plan.pub); err != nil {
			return n.reshareFailed(ctx, res, err, giveUp)
		}
	}
	if err := mux.AwaitSealed(cctx, r.NodeIDs); err != nil {
		// Our pending share (if any) stays pending; the old one stays active.
		return n.reshareFailed(ctx, res, err, giveUp)
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

// sealPending stores the new share at epoch as pending. A pending share left
// at that epoch by an earlier, unconfirmed attempt is replaced.
// share is the new share's plaintext; the caller owns and zeroes it.
func (n *Node) sealPending(ctx context.Context, r *protocol.ReshareRequest, plan *reshareMeta, epoch uint64, share []byte) error {
	if share == nil {
		return fmt.Errorf("%w: new member without a new share", ceremony.ErrParty)
	}
	sealed, err := n.sealer.Seal(ctx, share, shareBinding(n.cfg.NodeID, r.WalletID, r.KeyType, epoch))
	if err != nil {
		return err
	}
	if prev, _, err := n.st.ShareAt(r.WalletID, r.KeyType, epoch); err == nil {
		if prev.Status == store.StatusActive {
			return fmt.Errorf("store: epoch %d of wallet %s %s is already active", epoch, r.WalletID, r.KeyType)
		}
		if err := n.st.DeleteShare(r.WalletID, r.KeyType, epoch); err != nil {
			return err
		}
	}
	meta := store.WalletMeta{
		WalletID: r.WalletID, KeyType: r.KeyType, Epoch: epoch, Committee: slices.Clone(r.NodeIDs), Threshold: r.NewThreshold,
		PubKey: plan.pub, CreatedAt: time.Now().UTC(), Status: store.StatusPending, CreatedBy: plan.owner,
	}
	return n.st.PutShare(meta, sealed)
}

// retiredMarker is what a retired record seals instead of a share: a node
// that left the committee keeps the wallet's metadata (so that it stays out
// of the wallet's signing sessions) and nothing secret.
type retiredMarker struct {
	Retired   bool   `json:"retired"`
	SessionID string `json:"session_id"`
}

// switchEpoch runs once every new member has sealed. A new member activates
// its pending share at epoch; an old-only member seals a retired marker
// (metadata, no share) for epoch. Either way the store's one SwitchEpoch
// transaction also deletes the older epochs, so a crash leaves this node
// with either its old records or its new one.
func (n *Node) switchEpoch(ctx context.Context, r *protocol.ReshareRequest, plan *reshareMeta, epoch uint64, isNew bool) error {
	if isNew {
		return n.st.SwitchEpoch(r.WalletID, r.KeyType, epoch, nil)
	}
	pt, err := json.Marshal(retiredMarker{Retired: true, SessionID: r.SessionID})
	if err != nil {
		return err
	}
	sealed, err := n.sealer.Seal(ctx, pt, shareBinding(n.cfg.NodeID, r.WalletID, r.KeyType, epoch))
	if err != nil {
		return err
	}
	return n.st.SwitchEpoch(r.WalletID, r.KeyType, epoch, &store.Record{Meta: store.WalletMeta{
		WalletID: r.WalletID, KeyType: r.KeyType, Epoch: epoch, Committee: slices.Clone(r.NodeIDs), Threshold: r.NewThreshold,
		PubKey: plan.pub, CreatedAt: time.Now().UTC(), Status: store.StatusRetired, CreatedBy: plan.owner,
	}, Sealed: sealed})
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
