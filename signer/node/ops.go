package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/internal/secret"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/protocol/hd"
	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/committee"
	"github.com/hwsigner/signer/signer/metrics"
	"github.com/hwsigner/signer/signer/store"
	"github.com/hwsigner/signer/signer/transport"
)

func shareBinding(node, wallet, keyType string, epoch uint64) hsm.Binding {
	return hsm.Binding{NodeID: node, Purpose: "share", WalletID: wallet, KeyType: keyType, Epoch: epoch}
}

// keygen runs keygen for each of the request's key types on the whole
// committee. It first waits for the keygens of the same wallet consumed
// before it (claim), so that every node lets the same one create the
// wallet; a wallet of which this node has any record, of any key type, is
// WALLET_EXISTS.
func (n *Node) keygen(ctx context.Context, r *protocol.KeygenRequest, claim *keygenClaim) outcome {
	res := protocol.NewResult(r)
	if !claim.wait(ctx) {
		return failedBy(ctx, res, fmt.Errorf("waiting for an earlier keygen of wallet %s: %w", r.WalletID, ctx.Err()))
	}
	if out, ok := n.keygenDone(r, res); ok {
		return out
	}
	for _, kt := range protocol.DefaultKeyTypes() {
		_, err := n.st.Newest(r.WalletID, kt)
		if err == nil {
			return failed(res, protocol.CodeWalletExists, fmt.Sprintf("wallet %s already exists", r.WalletID))
		}
		if !errors.Is(err, store.ErrNotFound) {
			return failed(res, protocol.CodeInternal, "store: "+err.Error())
		}
	}
	if err := committee.Keygen(n.cfg.Committee, n.readyNodes(ctx)); err != nil {
		return brokeRule(res, err)
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.KeygenTimeout)
	defer cancel()
	for _, kt := range r.EffectiveKeyTypes() {
		sc, err := ceremony.SchemeFor(kt)
		if err != nil {
			return failed(res, protocol.CodeBadRequest, err.Error())
		}
		sid := sessionID("keygen", r.ClientID, r.RequestID, kt)
		pub, err := n.keygenOne(ctx, sid, r, sc)
		if err != nil {
			n.log.Warn("keygen failed", "wallet", r.WalletID, "key_type", kt, "err", err)
			return failedBy(ctx, res, err)
		}
		sc.FillPublicKey(res, pub)
	}
	return succeeded(res)
}

// keygenDone returns the success of keygen request r when this node
// already stored every key it asked for under r's own request ID: it
// restarted after the keygen and before publishing its result (the request
// was redelivered with the journal still "accepted").
func (n *Node) keygenDone(r *protocol.KeygenRequest, res *protocol.Result) (outcome, bool) {
	for _, kt := range r.EffectiveKeyTypes() {
		meta, err := n.st.Newest(r.WalletID, kt)
		if err != nil || meta.Request != r.RequestID || meta.CreatedBy != r.ClientID || meta.Epoch != 1 {
			return outcome{}, false
		}
		sc, err := ceremony.SchemeFor(kt)
		if err != nil {
			return outcome{}, false
		}
		sc.FillPublicKey(res, meta.PubKey)
	}
	n.log.Info("keygen result published from the store (the node restarted before publishing it)", "request_id", r.RequestID, "wallet", r.WalletID)
	return succeeded(res), true
}

func (n *Node) keygenOne(ctx context.Context, sid string, r *protocol.KeygenRequest, sc ceremony.Scheme) (_ []byte, err error) {
	kt := sc.KeyType()
	done := n.m.SessionStarted(protocol.OpKeygen, kt)
	defer func() {
		if err != nil {
			code, _ := errorCode(ctx, err)
			done(code)
			return
		}
		done(metrics.OutcomeSuccess)
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
	defer secret.Zero(pt)
	sealed, err := n.sealer.Seal(ctx, pt, shareBinding(n.cfg.NodeID, r.WalletID, kt, 1))
	if err != nil {
		return nil, err
	}
	chain, err := hd.ChainCode(kt, pub)
	if err != nil {
		return nil, fmt.Errorf("chain code: %w", err)
	}
	digest, err := keyDigest(sc, pub, pt)
	if err != nil {
		return nil, err
	}
	meta := store.WalletMeta{
		WalletID: r.WalletID, KeyType: kt, Epoch: 1, Committee: n.cfg.Committee, Threshold: n.cfg.Signers.TSSThreshold(),
		PubKey: pub, ChainCode: chain, CreatedAt: time.Now().UTC(), Status: store.StatusActive, CreatedBy: r.ClientID,
		Request:   r.RequestID,
		KeyDigest: digest, Ceremony: sid,
	}
	if err := n.st.PutShare(meta, sealed); err != nil {
		return nil, fmt.Errorf("store share: %w", err)
	}
	// The share is stored and active: its confirmation tells nodes that
	// have no record of the wallet that it exists (beforeSign).
	if err := n.publishConfirmation(ctx, meta); err != nil {
		n.log.Warn("keygen: key confirmation not published", "wallet", r.WalletID, "key_type", kt, "err", err)
	}
	return pub, nil
}

// sign runs a signing ceremony if this node is one of the t+1 chosen
// signers, and stays out otherwise.
func (n *Node) sign(ctx context.Context, r *protocol.SigningRequest) outcome {
	if out, stop := n.beforeSign(ctx, r); stop { // heal.go: catch up with missed reshares; stay out without an active share
		return out
	}
	res := protocol.NewResult(r)
	if n.leftCommittee(r.WalletID, r.KeyType) {
		return notParticipant() // a reshare moved this key elsewhere
	}
	meta, _, err := n.st.Share(r.WalletID, r.KeyType)
	if errors.Is(err, store.ErrNotFound) && n.awaitKeygen(ctx, r.WalletID) {
		meta, _, err = n.st.Share(r.WalletID, r.KeyType)
	}
	if errors.Is(err, store.ErrNotFound) {
		return failed(res, protocol.CodeUnknownWallet, fmt.Sprintf("no %s key for wallet %s", r.KeyType, r.WalletID))
	}
	if err != nil {
		return failed(res, protocol.CodeInternal, "store: "+err.Error())
	}
	if !n.cfg.Policy.MayUseWallet(r.ClientID, meta.CreatedBy, r.WalletID) {
		return refuseWallet(res, r.ClientID, r.WalletID)
	}
	sc, err := ceremony.SchemeFor(r.KeyType)
	if err != nil {
		return failed(res, protocol.CodeBadRequest, err.Error())
	}
	deriv, err := deriveChild(meta, r.DerivationPath)
	if err != nil {
		return failed(res, protocol.CodeBadRequest, err.Error())
	}
	o := n.board.open(r, sc, meta, deriv)
	k, signers, err := n.firstAttempt(ctx, o)
	if err != nil {
		return brokeRule(res, err)
	}
	if !slices.Contains(signers, n.cfg.NodeID) {
		if k == 0 {
			n.observe(ctx, attemptSession(r, 0), signers)
		}
		return notParticipant() // a plan naming this node later starts its attempt (attempts.go)
	}
	return n.runAttempt(ctx, o, k, signers)
}

// signAs runs this chosen signer's side of one attempt (session sid) of the
// signing ceremony of o with signers. The error is the failure's cause.
func (n *Node) signAs(ctx context.Context, o *openSign, res *protocol.Result, signers []string, sid string) (outcome, error) {
	r, meta := o.r, o.meta
	ctx, cancel := context.WithTimeout(ctx, n.cfg.SignTimeout)
	defer cancel()
	_, sealed, err := n.st.ShareAt(r.WalletID, r.KeyType, meta.Epoch)
	if err != nil {
		return failed(res, protocol.CodeInternal, "store: "+err.Error()), err
	}
	pt, err := n.sealer.Open(ctx, sealed, shareBinding(n.cfg.NodeID, r.WalletID, r.KeyType, meta.Epoch))
	if err != nil {
		return failedBy(ctx, res, err), err
	}
	defer secret.Zero(pt)
	tr, err := n.openSession(ctx, sid, signers)
	if err != nil {
		return failedBy(ctx, res, err), err
	}
	defer tr.Close()
	s := ceremony.Session{ID: sid, Self: n.cfg.NodeID, Parties: signers, Threshold: meta.Threshold, Stall: n.cfg.StallTimeout}
	sig, err := o.sc.Sign(ctx, s, pt, r.Tx, o.deriv, tr)
	if err != nil {
		return failedBy(ctx, res, err), err
	}
	if err := sig.Fill(res); err != nil {
		return failed(res, protocol.CodeInternal, err.Error()), err
	}
	setSignPubKey(res, meta, o.deriv)
	return succeeded(res), nil
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
