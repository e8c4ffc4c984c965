package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/protocol"
)

var (
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("client: closed")
	// ErrNoNodeKeys: New was called without WithNodeKeys; results could
	// not be told from forgeries.
	ErrNoNodeKeys = errors.New("client: no node keys (WithNodeKeys)")
	// ErrPendingRequestID: a Wait helper is already waiting for this
	// request_id.
	ErrPendingRequestID = errors.New("client: a request with this request_id is already being waited for")
	// ErrTooManyPending: the Client already has MaxPendingRequests
	// requests sent and undecided; nothing was published.
	ErrTooManyPending = errors.New("client: too many undecided requests")
	// ErrVerify: an independent signature check (VerifyECDSA,
	// VerifyEd25519, VerifySignResult) failed. It is attest.ErrVerify.
	ErrVerify = attest.ErrVerify
)

// ResultError is returned by the Wait helpers when the committee's
// decision is not a success: an error attested by t+1 nodes (any member for
// keygen), RESULT_MISMATCH (members disagree, or a signature that does not
// verify), or TIMEOUT: nothing attested by the request's expires_at plus
// the grace (WithExpiryGrace), or by the caller's deadline if earlier (then
// wrapped together with ctx.Err()). It unwraps to the *attest.Error.
type ResultError struct {
	RequestID string
	Code      string // a stable code, see docs/error-codes.md
	Reason    string
	IsTimeout bool
	// Nodes: what each node whose result was taken reported.
	Nodes map[string]string
	// ExpiresAt is the request's expires_at. Nodes take the request only
	// until then: a TIMEOUT before it (a caller's deadline) leaves the
	// request open to them.
	ExpiresAt time.Time

	err *attest.Error
}

func (e *ResultError) Error() string {
	return fmt.Sprintf("client: request %s failed: %s: %s", e.RequestID, e.Code, e.Reason)
}

// Unwrap returns the *attest.Error of the decision.
func (e *ResultError) Unwrap() error {
	if e.err == nil {
		return nil
	}
	return e.err
}

// Retryable reports whether sending the request again may succeed.
func (e *ResultError) Retryable() bool { return protocol.Retryable(e.Code) }

// requestError is resultError of req's decision, with its expires_at.
func requestError(req protocol.Request, d attest.Decision) error {
	err := resultError(req.Env().RequestID, d)
	if re, ok := err.(*ResultError); ok {
		re.ExpiresAt = req.Env().Expires()
	}
	return err
}

// resultError is the ResultError of a decision (nil for a success).
func resultError(requestID string, d attest.Decision) error {
	if d.Err == nil {
		return nil
	}
	ae, ok := d.Err.(*attest.Error)
	if !ok {
		ae = &attest.Error{Code: protocol.CodeInternal, Reason: d.Err.Error()}
	}
	return &ResultError{RequestID: requestID, Code: ae.Code, Reason: ae.Reason, IsTimeout: ae.Code == protocol.CodeTimeout,
		Nodes: ae.Nodes, err: ae}
}
