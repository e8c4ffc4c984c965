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

// handle processes one request message. It always acks: a request is
// answered (or, when its sender cannot be authenticated, counted and dropped)
// exactly once per node.
func (n *Node) handle(ctx context.Context, m jetstream.Msg) {
	defer func() {
		if r := recover(); r != nil {
			n.log.Error("request handler panicked", "panic", fmt.Sprint(r))
		}
		_ = m.Ack()
	}()
	op, _, err := routing.ParseRequestSubject(m.Subject())
	if err != nil {
		n.m.Request("unknown", "dropped_subject")
		n.log.Warn("request on an unexpected subject dropped", "subject", m.Subject())
		return
	}
	raw := m.Data()
	req, derr := protocol.DecodeRequest(op, raw)
	if req == nil {
		n.m.Request(op, "dropped_malformed")
		n.log.Warn("malformed request dropped", "op", op, "err", derr)
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
	if aerr != nil {
		// Authentic sender, but not allowed: answer on its own subject.
		primary, _ := n.cfg.Policy.PrimaryClientID(env.KeyID)
		res.ClientID = primary
		res.SetError(protocol.CodeUnauthorizedClient, aerr.Error())
		n.reject(ctx, res, "unauthorized")
		return
	}
	if derr != nil {
		res.SetError(protocol.CodeBadRequest, derr.Error())
		n.reject(ctx, res, "bad request")
		return
	}
	if err := env.CheckTime(time.Now(), n.cfg.ClockSkew); err != nil {
		code := protocol.CodeExpired
		if errors.Is(err, protocol.ErrNotYetValid) {
			code = protocol.CodeBadRequest
		}
		res.SetError(code, err.Error())
		n.reject(ctx, res, "expired")
		return
	}
	fresh, prev, err := n.st.JournalBegin(store.JournalEntry{
		RequestID: env.RequestID, ClientID: env.ClientID, Op: op, State: "accepted",
		At: time.Now().UTC(), ExpiresAt: env.Expires(),
	})
	if err != nil {
		res.SetError(protocol.CodeInternal, "request journal unavailable")
		n.reject(ctx, res, "journal")
		return
	}
	if !fresh {
		if prev.State == "accepted" {
			// Redelivered after a crash mid-session: the session is gone and
			// its peers answered the client.
			n.log.Info("request redelivered after restart; not rerun", "request_id", env.RequestID)
			return
		}
		res.SetError(protocol.CodeReplayed, "request_id "+env.RequestID+" was already processed")
		n.publishWithID(ctx, res, "replay-"+env.RequestID+"-"+fmt.Sprint(time.Now().UnixNano()))
		n.m.Request(op, res.ErrorCode)
		return
	}
	n.m.Request(op, metrics.OutcomeAccepted)
	var out outcome
	switch r := req.(type) {
	case *protocol.KeygenRequest:
		out = n.keygen(ctx, r)
	case *protocol.SigningRequest:
		out = n.sign(ctx, r)
	case *protocol.ReshareRequest:
		out = n.reshare(ctx, r)
	default:
		out = failed(res, protocol.CodeBadRequest, "operation "+op+" is not supported by this node yet")
	}
	n.m.Finished(op, out.label())
	if out.kind == outcomeNotParticipant {
		if err := n.st.JournalFinish(env.ClientID, env.RequestID, "done", metrics.OutcomeNotParticipant); err != nil {
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
	n.publish(ctx, out.res)
}

func (n *Node) reject(ctx context.Context, res *protocol.Result, why string) {
	n.m.Request(res.Op, res.ErrorCode)
	n.log.Info("request rejected", "why", why, "code", res.ErrorCode, "request_id", res.RequestID, "client_id", res.ClientID)
	n.publish(ctx, res)
}

// publish signs res and publishes it with Nats-Msg-Id result-<request_id>:
// every participant publishes, JetStream keeps one.
func (n *Node) publish(ctx context.Context, res *protocol.Result) {
	n.publishWithID(ctx, res, "result-"+res.RequestID)
}

func (n *Node) publishWithID(ctx context.Context, res *protocol.Result, msgID string) {
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
	// The result must not be lost: retry through short NATS outages.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	for attempt := 0; ; attempt++ {
		_, err = n.js.Publish(pctx, subj, raw, jetstream.WithMsgID(msgID))
		if err == nil {
			return
		}
		if pctx.Err() != nil {
			n.log.Error("result could not be published", "request_id", res.RequestID, "err", err)
			return
		}
		time.Sleep(time.Duration(100*(attempt+1)) * time.Millisecond)
	}
}
