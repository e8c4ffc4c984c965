package node

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"time"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/store"
	"github.com/hwsigner/signer/signer/transport"
)

// Resharing (DESIGN §5), as one node runs it:
//
//  1. Every ready node of the cluster joins one transport session for the
//     request (a node new to the wallet cannot know the old committee, so
//     the set is one every node computes alone); the new committee must be
//     ready.
//  2. Each node announces, signed, what it holds for the wallet's key type:
//     nothing, or its active share's epoch, committee, threshold, public key
//     and share key. The holders are the old parties; they must agree.
//  3. Nodes in neither committee leave; the others run the tss ceremony
//     (ceremony.ReshareECDSA/EdDSA). New parties of ECDSA draw fresh
//     pre-params from their pools.
//  4. Each new member seals its share at epoch+1 as pending and announces
//     "sealed". A node that has "sealed" from every new member activates
//     its pending share (new member) or deletes its old share and keeps a
//     retired record without a share (old-only member), then publishes the
//     result. A failure before that leaves every old share active.
//
// The request's new_threshold is tss-lib's t: t+1 of the new committee
// sign (signerd's and signerctl's --threshold is t+1).

const reshareCtlRound = "hwsigner-reshare-ctl"

// Payload kinds on the reshare session: tss ceremony messages and control
// messages (announcements, confirmations), told apart by the first byte.
const (
	muxTSS byte = 0
	muxCtl byte = 1
)

type reshareCtl struct {
	Kind string `json:"kind"` // "meta", "sealed", "failed"
	// meta
	Holds     bool     `json:"holds,omitempty"`
	Epoch     uint64   `json:"epoch,omitempty"`
	Committee []string `json:"committee,omitempty"`
	Threshold int      `json:"threshold,omitempty"`
	PubKey    string   `json:"pub_key,omitempty"`
	ShareKey  string   `json:"share_key,omitempty"` // hex of the share's x-coordinate
	Reason    string   `json:"reason,omitempty"`
}

type ctlMsg struct {
	from string
	msg  reshareCtl
}

// reshareMux splits one transport session into the ceremony's stream and a
// control stream.
type reshareMux struct {
	s      *transport.Session
	tss    chan ceremony.Inbound
	ctl    chan ctlMsg
	failed chan ctlMsg // a peer gave up
}

func newReshareMux(ctx context.Context, s *transport.Session) *reshareMux {
	m := &reshareMux{s: s, tss: make(chan ceremony.Inbound, 1024), ctl: make(chan ctlMsg, 64), failed: make(chan ctlMsg, 1)}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case in, ok := <-s.Recv():
				if !ok {
					return
				}
				if len(in.Wire) == 0 {
					continue
				}
				switch in.Wire[0] {
				case muxTSS:
					in.Wire = in.Wire[1:]
					select {
					case m.tss <- in:
					case <-ctx.Done():
						return
					}
				case muxCtl:
					var c reshareCtl
					if json.Unmarshal(in.Wire[1:], &c) != nil || !in.Broadcast {
						continue
					}
					if c.Kind == "failed" {
						select {
						case m.failed <- ctlMsg{in.From, c}:
						default:
						}
						continue
					}
					select {
					case m.ctl <- ctlMsg{in.From, c}:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	return m
}

// Send and Recv: the ceremony's view.
func (m *reshareMux) Send(ctx context.Context, o ceremony.Outbound) error {
	o.Wire = append([]byte{muxTSS}, o.Wire...)
	return m.s.Send(ctx, o)
}

func (m *reshareMux) Recv() <-chan ceremony.Inbound { return m.tss }

func (m *reshareMux) sendCtl(ctx context.Context, c reshareCtl) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return m.s.Send(ctx, ceremony.Outbound{Broadcast: true, Round: reshareCtlRound, Wire: append([]byte{muxCtl}, b...)})
}

// collect waits for one control message of kind from each of peers.
func (m *reshareMux) collect(ctx context.Context, kind string, peers []string) (map[string]reshareCtl, error) {
	got := map[string]reshareCtl{}
	want := map[string]bool{}
	for _, p := range peers {
		want[p] = true
	}
	var early []ctlMsg
	defer func() {
		// Messages of a later step that came early go back in the queue.
		for _, c := range early {
			select {
			case m.ctl <- c:
			default:
			}
		}
	}()
	for len(got) < len(want) {
		select {
		case c := <-m.ctl:
			if !want[c.from] {
				continue
			}
			if c.msg.Kind != kind {
				early = append(early, c)
				continue
			}
			got[c.from] = c.msg
		case f := <-m.failed:
			return nil, fmt.Errorf("%w: %s gave up: %s", errPeerFailed, f.from, f.msg.Reason)
		case <-ctx.Done():
			var missing []string
			for p := range want {
				if _, ok := got[p]; !ok {
					missing = append(missing, p)
				}
			}
			sort.Strings(missing)
			return nil, fmt.Errorf("no %s announcement from %v: %w", kind, missing, ctx.Err())
		}
	}
	return got, nil
}

var (
	errPeerFailed    = errors.New("node: a reshare participant failed")
	errHoldersDiffer = errors.New("node: the old committee's members disagree about the wallet")
)

// reshare runs one resharing request. res.ResultType is left empty when this
// node is in neither committee.
func (n *Node) reshare(ctx context.Context, r *protocol.ReshareRequest, res *protocol.Result) {
	kt := r.KeyType
	for _, id := range r.NodeIDs {
		if !contains(n.cfg.Committee, id) || n.cfg.Peers[id] == nil {
			res.SetError(protocol.CodeBadRequest, fmt.Sprintf("node %s is not a member of this cluster", id))
			return
		}
	}
	ready := n.readyNodes(ctx)
	var parts []string
	for _, c := range n.cfg.Committee {
		if ready[c] || c == n.cfg.NodeID {
			parts = append(parts, c)
		}
	}
	for _, id := range r.NodeIDs {
		if !contains(parts, id) {
			res.SetError(protocol.CodeNodesNotReady, fmt.Sprintf("the new committee member %s is not ready", id))
			return
		}
	}
	done := n.m.SessionStarted(protocol.OpReshare, kt)
	defer func() {
		switch {
		case res.ResultType == "":
			done("not_participant")
		case res.Succeeded():
			done("success")
		default:
			done(res.ErrorCode)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, n.cfg.KeygenTimeout)
	defer cancel()

	// What this node holds.
	meta, sealed, err := n.st.Share(r.WalletID, kt)
	holds := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		res.SetError(protocol.CodeInternal, "store: "+err.Error())
		return
	}
	var plain []byte
	mine := reshareCtl{Kind: "meta"}
	if holds {
		plain, err = n.sealer.Open(ctx, sealed, shareBinding(n.cfg.NodeID, r.WalletID, kt, meta.Epoch))
		if err != nil {
			failure(res, ctx, err)
			return
		}
		defer hsm.Zero(plain)
		var ids struct {
			ShareID *big.Int `json:"ShareID"`
		}
		if err := json.Unmarshal(plain, &ids); err != nil || ids.ShareID == nil {
			res.SetError(protocol.CodeHSMFailure, "sealed share does not decode")
			return
		}
		mine = reshareCtl{Kind: "meta", Holds: true, Epoch: meta.Epoch, Committee: meta.Committee, Threshold: meta.Threshold,
			PubKey: hex.EncodeToString(meta.PubKey), ShareKey: ids.ShareID.Text(16)}
	}
	isNew := contains(r.NodeIDs, n.cfg.NodeID)
	var pre *ecdsakeygen.LocalPreParams
	if isNew && kt == protocol.KeyTypeSecp256k1 {
		if pre, err = n.takePreParams(ctx); err != nil {
			failure(res, ctx, err)
			if errors.Is(err, errNoPreParams) {
				res.SetError(protocol.CodeNoPreparams, err.Error())
			}
			return
		}
	}

	sid := sessionID("reshare", r.RequestID, kt)
	tr, err := n.openSession(ctx, sid, parts)
	if err != nil {
		failure(res, ctx, err)
		return
	}
	defer tr.Close()
	mctx, mcancel := context.WithCancel(ctx)
	defer mcancel()
	mux := newReshareMux(mctx, tr)
	giveUp := func(reason string) {
		sctx, c := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer c()
		_ = mux.sendCtl(sctx, reshareCtl{Kind: "failed", Reason: reason})
	}

	// 2. Announcements.
	if err := mux.sendCtl(ctx, mine); err != nil {
		failure(res, ctx, err)
		return
	}
	others := slices.DeleteFunc(slices.Clone(parts), func(p string) bool { return p == n.cfg.NodeID })
	metas, err := mux.collect(ctx, "meta", others)
	if err != nil {
		failure(res, ctx, err)
		return
	}
	metas[n.cfg.NodeID] = mine
	plan, code, err := planReshare(metas, r)
	if err != nil {
		res.SetError(code, err.Error())
		return
	}
	if !holds && !isNew {
		res.ResultType = "" // in neither committee: stay out
		return
	}
	n.log.Info("reshare starting", "wallet", r.WalletID, "key_type", kt, "old", plan.old, "old_threshold", plan.oldT,
		"new", r.NodeIDs, "new_threshold", r.NewThreshold, "epoch", plan.epoch+1)

	// 3. The ceremony; a peer's "failed" ends it at once.
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	go func() {
		select {
		case f := <-mux.failed:
			n.log.Info("reshare peer gave up", "peer", f.from, "reason", f.msg.Reason)
			select {
			case mux.failed <- f: // for collect
			default:
			}
			ccancel()
		case <-cctx.Done():
		}
	}()
	s := ceremony.ReshareSession{ID: sid, Self: n.cfg.NodeID, Old: plan.old, OldKeys: plan.keys, OldThreshold: plan.oldT,
		New: r.NodeIDs, NewThreshold: r.NewThreshold, PubKey: plan.pub}
	var share any
	if kt == protocol.KeyTypeSecp256k1 {
		var old *ecdsakeygen.LocalPartySaveData
		if holds {
			old = new(ecdsakeygen.LocalPartySaveData)
			if err := json.Unmarshal(plain, old); err != nil {
				res.SetError(protocol.CodeHSMFailure, "sealed share does not decode")
				giveUp("share does not decode")
				return
			}
		}
		d, err := ceremony.ReshareECDSA(cctx, s, old, pre, mux)
		if err != nil {
			n.reshareFailed(ctx, res, err, giveUp)
			return
		}
		if d != nil {
			share = d
		}
	} else {
		var old *eddsakeygen.LocalPartySaveData
		if holds {
			old = new(eddsakeygen.LocalPartySaveData)
			if err := json.Unmarshal(plain, old); err != nil {
				res.SetError(protocol.CodeHSMFailure, "sealed share does not decode")
				giveUp("share does not decode")
				return
			}
		}
		d, err := ceremony.ReshareEdDSA(cctx, s, old, mux)
		if err != nil {
			n.reshareFailed(ctx, res, err, giveUp)
			return
		}
		if d != nil {
			share = d
		}
	}

	// 4. Seal pending, confirm, then switch epochs.
	newEpoch := plan.epoch + 1
	if isNew {
		if err := n.sealPending(ctx, r, plan, newEpoch, share); err != nil {
			n.reshareFailed(ctx, res, err, giveUp)
			return
		}
		if err := mux.sendCtl(ctx, reshareCtl{Kind: "sealed", PubKey: hex.EncodeToString(plan.pub)}); err != nil {
			n.reshareFailed(ctx, res, err, giveUp)
			return
		}
	}
	waitFor := slices.DeleteFunc(slices.Clone(r.NodeIDs), func(p string) bool { return p == n.cfg.NodeID })
	if _, err := mux.collect(cctx, "sealed", waitFor); err != nil {
		// Our pending share (if any) stays pending; the old one stays active.
		n.reshareFailed(ctx, res, err, giveUp)
		return
	}
	if err := n.switchEpoch(ctx, r, plan, newEpoch, isNew); err != nil {
		n.log.Error("reshare confirmed but the store could not switch epochs", "wallet", r.WalletID, "key_type", kt, "err", err)
		res.SetError(protocol.CodeInternal, "store: "+err.Error())
		return
	}
	res.PubKey = hex.EncodeToString(plan.pub)
	res.NewThreshold = r.NewThreshold
	n.log.Info("reshare done", "wallet", r.WalletID, "key_type", kt, "epoch", newEpoch, "member", isNew)
}

func (n *Node) reshareFailed(ctx context.Context, res *protocol.Result, err error, giveUp func(string)) {
	n.log.Warn("reshare failed", "request_id", res.RequestID, "err", err)
	giveUp(err.Error())
	if errors.Is(err, errPeerFailed) || (errors.Is(err, context.Canceled) && ctx.Err() == nil) {
		res.SetError(protocol.CodeCeremonyFailed, "another participant failed: "+err.Error())
		return
	}
	failure(res, ctx, err)
}

type reshareMeta struct {
	old   []string
	keys  map[string]*big.Int
	oldT  int
	epoch uint64
	pub   []byte
}

// planReshare derives, from every participant's announcement, the old
// parties and what they agree on. Every node computes the same plan.
func planReshare(metas map[string]reshareCtl, r *protocol.ReshareRequest) (*reshareMeta, string, error) {
	var ref *reshareCtl
	p := &reshareMeta{keys: map[string]*big.Int{}}
	ids := make([]string, 0, len(metas))
	for id := range metas {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := metas[id]
		if !m.Holds {
			continue
		}
		if ref == nil {
			ref = &m
		} else if m.Epoch != ref.Epoch || m.Threshold != ref.Threshold || m.PubKey != ref.PubKey || !slices.Equal(m.Committee, ref.Committee) {
			return nil, protocol.CodeCeremonyFailed, fmt.Errorf("%w: %s has epoch %d, committee %v, threshold %d; another holder has epoch %d, committee %v, threshold %d",
				errHoldersDiffer, id, m.Epoch, m.Committee, m.Threshold, ref.Epoch, ref.Committee, ref.Threshold)
		}
		if !contains(m.Committee, id) {
			return nil, protocol.CodeCeremonyFailed, fmt.Errorf("%w: %s holds a share outside its committee", errHoldersDiffer, id)
		}
		k, ok := new(big.Int).SetString(m.ShareKey, 16)
		if !ok {
			return nil, protocol.CodeCeremonyFailed, fmt.Errorf("%w: %s announced a malformed share key", errHoldersDiffer, id)
		}
		p.old = append(p.old, id)
		p.keys[id] = k
	}
	if ref == nil {
		return nil, protocol.CodeUnknownWallet, fmt.Errorf("no ready node holds a %s key of wallet %s", r.KeyType, r.WalletID)
	}
	p.oldT, p.epoch = ref.Threshold, ref.Epoch
	if len(p.old) < p.oldT+1 {
		return nil, protocol.CodeNodesNotReady, fmt.Errorf("%d of the old committee %v are ready, %d needed", len(p.old), ref.Committee, p.oldT+1)
	}
	pub, err := hex.DecodeString(ref.PubKey)
	if err != nil || len(pub) == 0 {
		return nil, protocol.CodeCeremonyFailed, fmt.Errorf("%w: malformed public key", errHoldersDiffer)
	}
	p.pub = pub
	return p, "", nil
}

// sealPending stores the new share at epoch as pending. A pending share left
// at that epoch by an earlier, unconfirmed attempt is replaced.
func (n *Node) sealPending(ctx context.Context, r *protocol.ReshareRequest, plan *reshareMeta, epoch uint64, share any) error {
	if share == nil {
		return fmt.Errorf("%w: new member without a new share", ceremony.ErrParty)
	}
	pt, err := json.Marshal(share)
	if err != nil {
		return fmt.Errorf("encode share: %w", err)
	}
	defer hsm.Zero(pt)
	sealed, err := n.sealer.Seal(ctx, pt, shareBinding(n.cfg.NodeID, r.WalletID, r.KeyType, epoch))
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
		PubKey: plan.pub, CreatedAt: time.Now().UTC(), Status: store.StatusPending, CreatedBy: r.ClientID,
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
		PubKey: plan.pub, CreatedAt: time.Now().UTC(), Status: store.StatusRetired, CreatedBy: r.ClientID,
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
