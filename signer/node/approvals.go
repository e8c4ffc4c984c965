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
func (n *Node) approved(ctx context.Context, req protocol.Request, raw []byte, res *protocol.Result, until time.Time) bool {
	env := req.Env()
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
