package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/metrics"
	"github.com/hwsigner/signer/signer/store"
)

// Publishing a result: each attempt has its own deadline, and attempts go on
// until the request expires (at least minPublishWindow), so that a result is
// not lost to a NATS outage.
const (
	publishAttemptTimeout = 5 * time.Second
	minPublishWindow      = time.Minute
	maxPublishBackoff     = 2 * time.Second
)

// outcomeSubjectMismatch counts a request whose subject names another wallet
// than its body: dropped as malformed, unanswered.
const outcomeSubjectMismatch = "dropped_subject_mismatch"

// walletOf returns the wallet_id of a request's body.
func walletOf(req protocol.Request) string {
	switch r := req.(type) {
	case *protocol.KeygenRequest:
		return r.WalletID
	case *protocol.SigningRequest:
		return r.WalletID
	case *protocol.ReshareRequest:
		return r.WalletID
	}
	return ""
}

// inbound is one request message: from the node's consumer, or read back
// from MPC_REQUESTS at start (resume); seq is its stream sequence (0 when
// unknown).
type inbound struct {
	subject string
	data    []byte
	seq     uint64
}

// inboundOf returns the request message m.
func inboundOf(m jetstream.Msg) inbound {
	in := inbound{subject: m.Subject(), data: m.Data()}
	if md, err := m.Metadata(); err == nil {
		in.seq = md.Sequence.Stream
	}
	return in
}

// handle processes one request message; the caller acks it afterwards: a
// request is answered (or, when its sender cannot be authenticated, counted
// and dropped) exactly once per node. claim is the request's place in its
// wallet's keygen order (nil for anything but a verified keygen request).
//
// It returns false (do not ack) for a request cut by the node's stop (ctx
// ended, or the NATS connection closed, before it finished): its journal
// entry stays "accepted", nothing is published, and the next start resumes
// it from the stream (which keeps it until this node's consumer acks it).
func (n *Node) handle(ctx context.Context, m inbound, claim *keygenClaim) (ack bool) {
	ack = true
	defer func() {
		if r := recover(); r != nil {
			n.log.Error("request handler panicked", "panic", fmt.Sprint(r))
		}
	}()
	op, subjWallet, err := routing.ParseRequestSubject(m.subject)
	if err != nil {
		n.m.Request("unknown", "dropped_subject")
		n.log.Warn("request on an unexpected subject dropped", "subject", m.subject)
		return
	}
	raw := m.data
	req, derr := protocol.DecodeRequest(op, raw)
	if req == nil {
		n.m.Request(op, "dropped_malformed")
		n.log.Warn("malformed request dropped", "op", op, "err", derr)
		return
	}
	if w := walletOf(req); w != subjWallet {
		n.m.Request(op, outcomeSubjectMismatch)
		n.log.Warn("request whose subject names another wallet than its body dropped", "op", op,
			"subject_wallet", subjWallet, "body_wallet", w, "request_id", req.Env().RequestID)
		return
	}
	env := req.Env()
	pub, aerr := n.cfg.Policy.Authorize(env.KeyID, env.ClientID, op)
	if errors.Is(aerr, policy.ErrUnknownKey) {
		n.m.Request(op, metrics.OutcomeUnauthenticated)
		n.log.Warn("request from an unknown client key dropped", "key_id", env.KeyID, "request_id", env.RequestID)
		return
	}
	if err := protocol.VerifyRequest(raw, pub); err != nil {
		n.m.Request(op, metrics.OutcomeUnauthenticated)
		n.log.Warn("request with a bad signature dropped", "key_id", env.KeyID, "request_id", env.RequestID)
		return
	}
	res := protocol.NewResult(req)
	until := env.Expires()
	if aerr != nil {
		// Authentic sender, but not allowed: answer on the subject of the
		// client ID it claimed, where it listens (the result's key_id tells
		// the client bound to that ID that it is not one of its own). An
		// ID that cannot be a subject token goes to the key's own.
		if protocol.ValidToken(env.ClientID) != nil {
			res.ClientID, _ = n.cfg.Policy.PrimaryClientID(env.KeyID)
		}
		res.SetError(protocol.CodeUnauthorizedClient, aerr.Error())
		n.reject(ctx, res, until, "unauthorized")
		return
	}
	if derr != nil {
		res.SetError(protocol.CodeBadRequest, derr.Error())
		n.reject(ctx, res, until, "bad request")
		return
	}
	if err := env.CheckTime(time.Now(), n.cfg.ClockSkew); err != nil {
		code := protocol.CodeExpired
		if errors.Is(err, protocol.ErrNotYetValid) {
			code = protocol.CodeBadRequest
		}
		res.SetError(code, err.Error())
		n.reject(ctx, res, until, "expired")
		return
	}
	if !n.approved(ctx, req, raw, m.seq, res, until) {
		return
	}
	// One handler per request on this node: a message redelivered while
	// its first delivery still runs (a keygen longer than the ack wait) is
	// left to that one.
	hk := boardKey(env.ClientID, env.RequestID)
	if _, busy := n.handling.LoadOrStore(hk, struct{}{}); busy {
		n.log.Debug("request already being handled here; redelivery ignored", "request_id", env.RequestID, "client_id", env.ClientID)
		return
	}
	defer n.handling.Delete(hk)
	fresh, prev, err := n.st.JournalBegin(store.JournalEntry{
		RequestID: env.RequestID, ClientID: env.ClientID, Op: op, WalletID: subjWallet, State: "accepted",
		At: time.Now().UTC(), ExpiresAt: env.Expires(), Seq: m.seq,
	})
	if err != nil {
		res.SetError(protocol.CodeInternal, "request journal unavailable")
		n.reject(ctx, res, until, "journal")
		return
	}
	if !fresh && prev.State != "accepted" && m.seq != 0 && prev.Seq == m.seq {
		// The same message again (the server redelivered it after this
		// node read it back from the stream at start and finished it):
		// already answered.
		n.log.Debug("redelivery of a finished request ignored", "request_id", env.RequestID, "client_id", env.ClientID)
		return
	}
	if !fresh && prev.State == "accepted" {
		// Redelivered after this node stopped mid-request (no handler of
		// it runs here): run it again.
		// A sign request joins its newest planned attempt (its peers
		// re-ran it without this node if they could); a keygen whose keys
		// were stored publishes its success from the store; anything else
		// runs and answers as it can.
		n.log.Info("request redelivered after a restart; running it again", "request_id", env.RequestID, "client_id", env.ClientID, "op", op)
		fresh = true
	}
	if !fresh {
		res.SetError(protocol.CodeReplayed, "request_id "+env.RequestID+" was already processed")
		n.publish(ctx, res, until)
		n.m.Request(op, res.ErrorCode)
		return
	}
	n.m.Request(op, metrics.OutcomeAccepted)
	var out outcome
	switch r := req.(type) {
	case *protocol.KeygenRequest:
		out = n.keygen(ctx, r, claim)
	case *protocol.SigningRequest:
		out = n.sign(ctx, r)
	case *protocol.ReshareRequest:
		out = n.reshare(ctx, r)
	default:
		out = failed(res, protocol.CodeBadRequest, "operation "+op+" is not supported by this node yet")
	}
	if out.kind == outcomeFailed && n.stopping(ctx) {
		n.log.Warn("request cut by the node's stop; it resumes at the next start", "request_id", env.RequestID, "client_id", env.ClientID, "op", op)
		return false
	}
	n.m.Finished(op, out.label())
	if out.kind == outcomeNotParticipant || out.kind == outcomeRerun {
		if err := n.st.JournalFinish(env.ClientID, env.RequestID, "done", out.label()); err != nil {
			n.log.Error("journal finish failed", "request_id", env.RequestID, "err", err)
		}
		return
	}
	state := "done"
	if out.kind == outcomeFailed {
		state = "failed"
	}
	if err := n.st.JournalFinish(env.ClientID, env.RequestID, state, out.res.ErrorCode); err != nil {
		n.log.Error("journal finish failed", "request_id", env.RequestID, "err", err)
	}
	claim.release() // the wallet's shares are stored (or not): later requests need not wait for the publish
	n.publish(ctx, out.res, until)
	return true
}

// stopping reports whether a failure may be the node's stop rather than
// the request's: its sessions' context ended, or its NATS connection is
// closed for good (the process is going down; a reconnecting connection is
// not closed). Such a request is left to the next start.
func (n *Node) stopping(ctx context.Context) bool {
	return ctx.Err() != nil || n.nc.IsClosed()
}

func (n *Node) reject(ctx context.Context, res *protocol.Result, until time.Time, why string) {
	n.m.Request(res.Op, res.ErrorCode)
	n.log.Info("request rejected", "why", why, "code", res.ErrorCode, "request_id", res.RequestID, "client_id", res.ClientID)
	n.publish(ctx, res, until)
}

// publish signs res and publishes it as this node's own result, with
// Nats-Msg-Id routing.ResultMsgID: every node's result is kept (the client
// decides on all of them), and only retries of these exact bytes dedupe.
// Each attempt has its own deadline; attempts go on until the request's
// expiry (until; at least minPublishWindow from now) or until ctx ends after
// a first attempt.
func (n *Node) publish(ctx context.Context, res *protocol.Result, until time.Time) {
	subj, err := routing.ResultSubject(res)
	if err != nil {
		n.log.Error("no result subject", "request_id", res.RequestID, "err", err)
		return
	}
	raw, err := protocol.SignResult(ctx, n.identity, n.cfg.NodeID, res)
	if err != nil {
		n.log.Error("sign result", "request_id", res.RequestID, "err", err)
		return
	}
	msgID := routing.ResultMsgID(res.ClientID, res.RequestID, n.cfg.NodeID, raw)
	until = later(until, time.Now().Add(minPublishWindow))
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishAttemptTimeout)
		_, err = n.js.Publish(actx, subj, raw, jetstream.WithMsgID(msgID))
		cancel()
		if err == nil {
			if attempt > 1 {
				n.log.Info("result published after retries", "request_id", res.RequestID, "attempts", attempt)
			}
			return
		}
		if time.Now().Add(backoff).After(until) {
			n.log.Error("result could not be published before the request expired", "request_id", res.RequestID,
				"client_id", res.ClientID, "attempts", attempt, "err", err)
			return
		}
		if attempt == 1 {
			n.log.Warn("result publish failed; retrying until the request expires", "request_id", res.RequestID, "until", until, "err", err)
		} else {
			n.log.Debug("result publish failed; retrying", "request_id", res.RequestID, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			n.log.Error("result not published: the node is stopping", "request_id", res.RequestID, "err", err)
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxPublishBackoff)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
