package node

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"

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
		sid := sessionID("keygen", r.RequestID, kt)
		pub, err := n.keygenOne(ctx, sid, r, kt)
		if err != nil {
			n.log.Warn("keygen failed", "wallet", r.WalletID, "key_type", kt, "err", err)
			failure(ctx, res, err)
			if errors.Is(err, errNoPreParams) {
				res.SetError(protocol.CodeNoPreparams, err.Error())
			}
			return
		}
		if kt == protocol.KeyTypeSecp256k1 {
			res.ECDSAPubKey = hex.EncodeToString(pub)
		} else {
			res.EdDSAPubKey = hex.EncodeToString(pub)
		}
	}
}

func (n *Node) keygenOne(ctx context.Context, sid string, r *protocol.KeygenRequest, kt string) (_ []byte, err error) {
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
	var pre *ecdsakeygen.LocalPreParams
	if kt == protocol.KeyTypeSecp256k1 {
		var err error
		if pre, err = n.takePreParams(ctx); err != nil {
			return nil, err
		}
	}
	tr, err := n.openSession(ctx, sid, n.cfg.Committee)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	s := ceremony.Session{ID: sid, Self: n.cfg.NodeID, Parties: n.cfg.Committee, Threshold: n.cfg.Threshold}
	var share any
	var pub []byte
	if kt == protocol.KeyTypeSecp256k1 {
		d, err := ceremony.KeygenECDSA(ctx, s, pre, tr)
		if err != nil {
			return nil, err
		}
		share, pub = d, ceremony.ECDSAPublicKey(d.ECDSAPub)
	} else {
		d, err := ceremony.KeygenEdDSA(ctx, s, tr)
		if err != nil {
			return nil, err
		}
		share, pub = d, ceremony.EdDSAPublicKey(d.EDDSAPub)
	}
	pt, err := json.Marshal(share)
	if err != nil {
		return nil, fmt.Errorf("encode share: %w", err)
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
		WalletID: r.WalletID, KeyType: kt, Epoch: 1, Committee: n.cfg.Committee, Threshold: n.cfg.Threshold,
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
	if r.KeyType == protocol.KeyTypeSecp256k1 {
		var key ecdsakeygen.LocalPartySaveData
		if err := json.Unmarshal(pt, &key); err != nil {
			res.SetError(protocol.CodeHSMFailure, "sealed share does not decode")
			return
		}
		key, kdd, err := childECDSAKey(key, deriv)
		if err != nil {
			res.SetError(protocol.CodeInternal, err.Error())
			return
		}
		sig, err := ceremony.SignECDSA(ctx, s, key, r.Tx, kdd, tr)
		if err != nil {
			failure(ctx, res, err)
			return
		}
		if err := res.SetECDSASignature(sig.R, sig.S, int(sig.SignatureRecovery[0])); err != nil {
			res.SetError(protocol.CodeInternal, err.Error())
			return
		}
		setChildPubKey(res, deriv)
		return
	}
	var key eddsakeygen.LocalPartySaveData
	if err := json.Unmarshal(pt, &key); err != nil {
		res.SetError(protocol.CodeHSMFailure, "sealed share does not decode")
		return
	}
	if key, err = childEdDSAKey(key, deriv); err != nil {
		res.SetError(protocol.CodeInternal, err.Error())
		return
	}
	sig, err := ceremony.SignEdDSA(ctx, s, key, r.Tx, tr)
	if err != nil {
		failure(ctx, res, err)
		return
	}
	if err := res.SetEdDSASignature(sig.Signature); err != nil {
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
