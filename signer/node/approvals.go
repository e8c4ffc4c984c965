package node

import (
	"context"
	"errors"
	"time"

	"github.com/hwsigner/signer/policy"
	"github.com/hwsigner/signer/protocol"
)

// approved checks the request's approvals against the node policy (after its
// signature, fields and clock were checked, before the journal). A request
// no approval rule covers passes. A refusal is answered on the client's
// subject with APPROVAL_REQUIRED or APPROVAL_INVALID, whose reason names the
// approvers counted; it is not journaled, like the other refusals before
// it, so the request's request_id stays unused.
//
// A request whose request_id this node already journaled is left to the
// journal when the journal will not run it (REPLAYED, or a redelivery of a
// finished message) or when it is the very stream message that was
// approved and accepted before a stop (resumed): its approvals may have
// expired since, and the answer must stay the original outcome. Any other
// message under an accepted request_id is checked.
func (n *Node) approved(ctx context.Context, req protocol.Request, raw []byte, seq uint64, res *protocol.Result, until time.Time) bool {
	env := req.Env()
	if prev, err := n.st.JournalEntryOf(env.ClientID, env.RequestID); err == nil {
		if prev.State != "accepted" || seq != 0 && prev.Seq == seq {
			return true
		}
	}
	counted, err := n.cfg.Policy.CheckApprovals(req, raw, time.Now())
	if err == nil {
		if len(counted) > 0 {
			n.log.Info("request approved", "request_id", env.RequestID, "client_id", env.ClientID, "approvers", counted)
		}
		return true
	}
	code := protocol.CodeApprovalInvalid
	if errors.Is(err, policy.ErrApprovalRequired) {
		code = protocol.CodeApprovalRequired
	}
	res.SetError(code, err.Error())
	n.reject(ctx, res, until, "approval")
	return false
}
