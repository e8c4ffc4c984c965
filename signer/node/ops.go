package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/protocol/hd"
	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/committee"
	"github.com/hwsigner/signer/signer/store"
	"github.com/hwsigner/signer/signer/transport"
)

func shareBinding(node, wallet, keyType string, epoch uint64) hsm.Binding {
	return hsm.Binding{NodeID: node, Purpose: "share", WalletID: wallet, KeyType: keyType, Epoch: epoch}
}

// failure maps an error to a stable code.
func failure(ctx context.Context, res *protocol.Result, err error) {
	switch {
	case errors.Is(err, transport.ErrNotReady) && ctx.Err() == nil:
		res.SetError(protocol.CodeNodesNotReady, "a chosen signer did not join in time (it may have just stopped); retry the request: "+err.Error())
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		res.SetError(protocol.CodeTimeout, "session deadline passed: "+err.Error())
	case errors.Is(err, hsm.ErrBackendFailure), errors.Is(err, hsm.ErrTampered), errors.Is(err, hsm.ErrKeyNotFound):
		res.SetError(protocol.CodeHSMFailure, err.Error())
	case errors.Is(err, transport.ErrPartiesDiffer):
		res.SetError(protocol.CodeNodesNotReady, "the nodes disagreed on which of them are ready (one just stopped or started); retry the request: "+err.Error())
	case errors.Is(err, ceremony.ErrParty):
		res.SetError(protocol.CodeCeremonyFailed, err.Error())
	default:
		res.SetError(protocol.CodeInternal, err.Error())
	}
}

func (n *Node) keygen(ctx context.Context, r *protocol.KeygenRequest, res *protocol.Result) {
	for _, kt := range r.EffectiveKeyTypes() {
		if _, _, err := n.st.Share(r.WalletID, kt); err == nil {
			res.SetError(protocol.CodeWalletExists, fmt.Sprintf("wallet %s already has a %s key", r.WalletID, kt))
			return
		}
	}
	if err := committee.Keygen(n.cfg.Committee, n.readyNodes(ctx)); err != nil {
		ruleFailure(res, err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.KeygenTimeout)
	defer cancel()
	for _, kt := range r.EffectiveKeyTypes() {
		sc, err := ceremony.SchemeFor(kt)
		if err != nil {
			res.SetError(protocol.CodeBadRequest, err.Error())
			return
		}
		sid := sessionID("keygen", r.RequestID, kt)
		pub, err := n.keygenOne(ctx, sid, r, sc)
		if err != nil {
			n.log.Warn("keygen failed", "wallet", r.WalletID, "key_type", kt, "err", err)
			failure(ctx, res, err)
			if errors.Is(err, errNoPreParams) {
				res.SetError(protocol.CodeNoPreparams, err.Error())
			}
			return
		}
		sc.FillPublicKey(res, pub)
	}
}

func (n *Node) keygenOne(ctx context.Context, sid string, r *protocol.KeygenRequest, sc ceremony.Scheme) (_ []byte, err error) {
	kt := sc.KeyType()
	done := n.m.SessionStarted(protocol.OpKeygen, kt)
	defer func() {
		if err != nil {
			res := &protocol.Result{}
			failure(ctx, res, err)
			done(res.ErrorCode)
			return
		}
		done("success")
	}()
	var opts ceremony.Options
	if sc.NeedsPreParams() {
		if opts.PreParams, err = n.takePreParams(ctx); err != nil {
			return nil, err
		}
	}
	tr, err := n.openSession(ctx, sid, n.cfg.Committee)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	s := ceremony.Session{ID: sid, Self: n.cfg.NodeID, Parties: n.cfg.Committee, Threshold: n.cfg.Signers.TSSThreshold()}
	pt, pub, err := sc.Keygen(ctx, s, opts, tr)
	if err != nil {
		return nil, err
	}
	defer hsm.Zero(pt)
	sealed, err := n.sealer.Seal(ctx, pt, shareBinding(n.cfg.NodeID, r.WalletID, kt, 1))
	if err != nil {
		return nil, err
	}
	chain, err := hd.ChainCode(kt, pub)
	if err != nil {
		return nil, fmt.Errorf("chain code: %w", err)
	}
	meta := store.WalletMeta{
		WalletID: r.WalletID, KeyType: kt, Epoch: 1, Committee: n.cfg.Committee, Threshold: n.cfg.Signers.TSSThreshold(),
		PubKey: pub, ChainCode: chain, CreatedAt: time.Now().UTC(), Status: store.StatusActive, CreatedBy: r.ClientID,
	}
	if err := n.st.PutShare(meta, sealed); err != nil {
		return nil, fmt.Errorf("store share: %w", err)
	}
	return pub, nil
}

// sign runs a signing ceremony if this node is one of the t+1 chosen signers.
// It returns with res.ResultType empty when the node stays out.
func (n *Node) sign(ctx context.Context, r *protocol.SigningRequest, res *protocol.Result) {
	meta, sealed, err := n.st.Share(r.WalletID, r.KeyType)
	if errors.Is(err, store.ErrNotFound) && n.awaitKeygen(ctx, r.WalletID) {
		meta, sealed, err = n.st.Share(r.WalletID, r.KeyType)
	}
	if errors.Is(err, store.ErrNotFound) {
		res.SetError(protocol.CodeUnknownWallet, fmt.Sprintf("no %s key for wallet %s", r.KeyType, r.WalletID))
		return
	}
	if err != nil {
		res.SetError(protocol.CodeInternal, "store: "+err.Error())
		return
	}
	deriv, err := deriveChild(meta, r.DerivationPath)
	if err != nil {
		res.SetError(protocol.CodeBadRequest, err.Error())
		return
	}
	ready := n.readyNodes(ctx)
	signers, err := committee.Signers(r.RequestID, meta.Committee, ready, meta.Threshold)
	n.log.Debug("signers chosen", "request_id", r.RequestID, "signers", signers, "ready", ready)
	if err != nil {
		ruleFailure(res, err)
		return
	}
	if !slices.Contains(signers, n.cfg.NodeID) {
		res.ResultType = "" // not chosen: stay out, publish nothing
		n.observe(ctx, sessionID("sign", r.RequestID), signers)
		return
	}
	done := n.m.SessionStarted(protocol.OpSign, r.KeyType)
	defer func() {
		if res.Succeeded() {
			done("success")
		} else {
			done(res.ErrorCode)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, n.cfg.SignTimeout)
	defer cancel()
	pt, err := n.sealer.Open(ctx, sealed, shareBinding(n.cfg.NodeID, r.WalletID, r.KeyType, meta.Epoch))
	if err != nil {
		failure(ctx, res, err)
		return
	}
	defer hsm.Zero(pt)
	sid := sessionID("sign", r.RequestID)
	tr, err := n.openSession(ctx, sid, signers)
	if err != nil {
		failure(ctx, res, err)
		return
	}
	defer tr.Close()
	s := ceremony.Session{ID: sid, Self: n.cfg.NodeID, Parties: signers, Threshold: meta.Threshold}
	sc, err := ceremony.SchemeFor(r.KeyType)
	if err != nil {
		res.SetError(protocol.CodeBadRequest, err.Error())
		return
	}
	sig, err := sc.Sign(ctx, s, pt, r.Tx, deriv, tr)
	switch {
	case errors.Is(err, ceremony.ErrBadShare):
		res.SetError(protocol.CodeHSMFailure, "sealed share does not decode")
		return
	case errors.Is(err, ceremony.ErrDerivation):
		res.SetError(protocol.CodeInternal, err.Error())
		return
	case err != nil:
		failure(ctx, res, err)
		return
	}
	if err := sig.Fill(res); err != nil {
		res.SetError(protocol.CodeInternal, err.Error())
		return
	}
	setChildPubKey(res, deriv)
}

// observe listens, for a short while, on a session this node was not chosen
// for: if a member whose readiness view differs chose it, that member's hello
// gets our signer set back and its session fails fast (NODES_NOT_READY)
// instead of waiting for a node that will never join.
func (n *Node) observe(ctx context.Context, sid string, signers []string) {
	window := min(n.cfg.SignTimeout, 10*time.Second)
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), window)
	obs, err := transport.Open(octx, n.nc, transport.Config{
		SessionID: sid, Self: transport.Identity{NodeID: n.cfg.NodeID, Signer: n.identity},
		Participants: signers, Peers: n.cfg.Peers, Counters: n, Logger: n.log,
	})
	if err != nil {
		cancel()
		return
	}
	go func() {
		<-octx.Done()
		obs.Close()
		cancel()
	}()
}
