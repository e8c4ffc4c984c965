package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/committee"
	"github.com/hwsigner/signer/signer/metrics"
	"github.com/hwsigner/signer/signer/transport"
)

// outcome is what a request handler did with an accepted request: it
// succeeded or failed (and res is the result to journal and publish), or
// this node was not a participant (res is nil: nothing is published).
type outcome struct {
	kind outcomeKind
	res  *protocol.Result
}

type outcomeKind int

const (
	outcomeSucceeded outcomeKind = iota + 1
	outcomeFailed
	outcomeNotParticipant
	outcomeRerun
)

// succeeded is the outcome of a request whose result res is a success.
func succeeded(res *protocol.Result) outcome { return outcome{kind: outcomeSucceeded, res: res} }

// failed sets the error code and reason of res and returns the failure.
func failed(res *protocol.Result, code, reason string) outcome {
	res.SetError(code, reason)
	return outcome{kind: outcomeFailed, res: res}
}

// failedBy maps err (and ctx's state) to a stable error code of res.
func failedBy(ctx context.Context, res *protocol.Result, err error) outcome {
	code, reason := errorCode(ctx, err)
	return failed(res, code, reason)
}

// brokeRule maps a committee rule's error to its stable code.
func brokeRule(res *protocol.Result, err error) outcome {
	code := protocol.CodeInternal
	switch {
	case errors.Is(err, committee.ErrNotMember):
		code = protocol.CodeBadRequest
	case errors.Is(err, committee.ErrNotReady):
		code = protocol.CodeNodesNotReady
	case errors.Is(err, committee.ErrNoHolder):
		code = protocol.CodeUnknownWallet
	case errors.Is(err, committee.ErrHoldersDiffer):
		code = protocol.CodeCeremonyFailed
	}
	return failed(res, code, err.Error())
}

// refuseWallet is the outcome of a sign or reshare request for a wallet
// that is not clientID's and that the policy does not grant it: the reason
// names the wallet, not its owner.
func refuseWallet(res *protocol.Result, clientID, walletID string) outcome {
	return failed(res, protocol.CodeUnauthorizedClient, fmt.Sprintf("client %q may not use wallet %s: it belongs to another client", clientID, walletID))
}

// notParticipant is the outcome of a request this node stays out of (a
// signer not chosen, a reshare outside both committees, a wallet whose key
// a reshare moved to a committee without this node).
func notParticipant() outcome { return outcome{kind: outcomeNotParticipant} }

// rerun is the outcome of a sign attempt handed to a re-run on another
// committee (attempts.go): nothing is published for it.
func rerun() outcome { return outcome{kind: outcomeRerun} }

// label is the outcome as the metrics count it: success, not_participant
// or the result's error code.
func (o outcome) label() string {
	switch o.kind {
	case outcomeSucceeded:
		return metrics.OutcomeSuccess
	case outcomeNotParticipant:
		return metrics.OutcomeNotParticipant
	case outcomeRerun:
		return metrics.OutcomeRerun
	default:
		return o.res.ErrorCode
	}
}

// errorCode maps an error to a stable code and its reason.
func errorCode(ctx context.Context, err error) (code, reason string) {
	switch {
	case errors.Is(err, errNoPreParams):
		return protocol.CodeNoPreparams, err.Error()
	case errors.Is(err, transport.ErrNotReady) && ctx.Err() == nil:
		return protocol.CodeNodesNotReady, "a chosen signer did not join in time (it may have just stopped); retry the request: " + err.Error()
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return protocol.CodeTimeout, "session deadline passed: " + err.Error()
	case errors.Is(err, hsm.ErrBackendFailure), errors.Is(err, hsm.ErrTampered), errors.Is(err, hsm.ErrKeyNotFound):
		return protocol.CodeHSMFailure, err.Error()
	case errors.Is(err, transport.ErrPartiesDiffer):
		return protocol.CodeNodesNotReady, "the nodes disagreed on which of them are ready (one just stopped or started); retry the request: " + err.Error()
	case errors.Is(err, ceremony.ErrBadShare):
		return protocol.CodeHSMFailure, "sealed share does not decode"
	case errors.Is(err, ceremony.ErrStalled):
		return protocol.CodeNodesNotReady, "a chosen signer stopped answering mid-session and no committee without it was left: " + err.Error()
	case errors.Is(err, ceremony.ErrEquivocation):
		return protocol.CodePeerEquivocated, err.Error()
	case errors.Is(err, ceremony.ErrParty):
		return protocol.CodeCeremonyFailed, err.Error()
	default:
		return protocol.CodeInternal, err.Error()
	}
}
