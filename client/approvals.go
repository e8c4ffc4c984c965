package client

import (
	"context"
	"fmt"

	"github.com/hwsigner/signer/protocol"
)

// Requests that the nodes' policy makes wait for approvals
// (docs/client-policy.md, Approvals) are sent in two steps: Prepare* fills
// in the request's op, client_id, key_id, request_id and times and returns
// it unsigned, so that approvers approve exactly it (protocol.SignApproval,
// or `signerctl approve` on json.Marshal of it); SubmitApproved or
// SubmitApprovedAndWait then attach the approvals and send the request as
// prepared, signed by the client key (which covers the approvals too).

// PrepareKeygen returns the keygen request of p, ready to approve.
func (c *Client) PrepareKeygen(p KeygenParams) (*protocol.KeygenRequest, error) {
	r, _ := p.request().(*protocol.KeygenRequest)
	return r, c.prepareApproved(r)
}

// PrepareSign returns the signing request of p, ready to approve.
func (c *Client) PrepareSign(p SignParams) (*protocol.SigningRequest, error) {
	r, _ := p.request().(*protocol.SigningRequest)
	return r, c.prepareApproved(r)
}

// PrepareReshare returns the reshare request of p, ready to approve.
func (c *Client) PrepareReshare(p ReshareParams) (*protocol.ReshareRequest, error) {
	r, _ := p.request().(*protocol.ReshareRequest)
	return r, c.prepareApproved(r)
}

// SubmitApproved attaches approvals to a prepared request (replacing any it
// had) and submits it unchanged otherwise; it returns the request_id once
// JetStream has stored it. The result arrives on the op's callback, which
// gets a decision by the request's expiry plus the grace, as for Sign.
func (c *Client) SubmitApproved(ctx context.Context, req protocol.Request, approvals []protocol.Approval) (string, error) {
	if err := checkPrepared(req); err != nil {
		return "", err
	}
	req.Env().Approvals = approvals
	return c.trackAndSubmit(ctx, req)
}

// SubmitApprovedAndWait is SubmitApproved, then waits for the committee's
// decision as the *AndWait helpers do.
func (c *Client) SubmitApprovedAndWait(ctx context.Context, req protocol.Request, approvals []protocol.Approval) (*protocol.Result, error) {
	if err := checkPrepared(req); err != nil {
		return nil, err
	}
	req.Env().Approvals = approvals
	return c.awaitSubmit(ctx, req)
}

// prepareApproved fills what prepare does and the op and key_id the
// signature will carry, so that the approvers approve the final request.
func (c *Client) prepareApproved(req protocol.Request) error {
	if err := c.prepare(req); err != nil {
		return err
	}
	env := req.Env()
	env.Op, env.KeyID = req.Operation(), c.keyID
	return nil
}

func checkPrepared(req protocol.Request) error {
	if req == nil || req.Env().RequestID == "" || req.Env().CreatedAt == 0 {
		return fmt.Errorf("client: submit approved: %w: the request was not prepared (use PrepareKeygen, PrepareSign or PrepareReshare)", protocol.ErrInvalidRequest)
	}
	return nil
}
