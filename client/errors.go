package client

import (
	"errors"
	"fmt"

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
	// ErrVerify: an independent signature check (VerifyECDSA,
	// VerifyEd25519, VerifySignResult) failed. It is attest.ErrVerify.
	ErrVerify = attest.ErrVerify
)

// ResultError is returned by the Wait helpers, together with the result,
// when the cluster answered with an error result.
type ResultError struct {
	RequestID string
	Code      string // a stable code, see docs/error-codes.md
	Reason    string
	IsTimeout bool
}

func (e *ResultError) Error() string {
	return fmt.Sprintf("client: request %s failed: %s: %s", e.RequestID, e.Code, e.Reason)
}

// Retryable reports whether sending the request again may succeed.
func (e *ResultError) Retryable() bool { return protocol.Retryable(e.Code) }

func resultError(res *protocol.Result) error {
	if res.Succeeded() {
		return nil
	}
	return &ResultError{RequestID: res.RequestID, Code: res.ErrorCode, Reason: res.ErrorReason, IsTimeout: res.IsTimeout}
}
