package protocol

// Stable error codes carried in Result.ErrorCode. The list and the meaning of
// each code are in docs/error-codes.md; codes are never renamed or reused.
const (
	// CodeBadRequest: the request failed validation (field, size, op).
	CodeBadRequest = "BAD_REQUEST"
	// CodeInvalidSignature: the request signature did not verify. Never sent
	// in a result (the sender is unauthenticated); nodes count it.
	CodeInvalidSignature = "INVALID_SIGNATURE"
	// CodeExpired: expires_at had passed when the node took the request.
	CodeExpired = "EXPIRED"
	// CodeReplayed: a request with this request_id was already processed.
	CodeReplayed = "REPLAYED"
	// CodeUnauthorizedClient: the key may not use this client_id or op.
	// Sent to the key's own (primary) client_id, never to the claimed one.
	CodeUnauthorizedClient = "UNAUTHORIZED_CLIENT"
	// CodeUnknownWallet: no such wallet or key type on this cluster.
	CodeUnknownWallet = "UNKNOWN_WALLET"
	// CodeWalletExists: keygen for a wallet ID that already exists.
	CodeWalletExists = "WALLET_EXISTS"
	// CodeNodesNotReady: not enough ready committee members to run it.
	CodeNodesNotReady = "NODES_NOT_READY"
	// CodeTimeout: the session deadline passed (is_timeout is true).
	CodeTimeout = "TIMEOUT"
	// CodeCeremonyFailed: the tss ceremony failed (bad proof, abort, peer).
	CodeCeremonyFailed = "CEREMONY_FAILED"
	// CodeHSMFailure: sealing or unsealing in the HSM/TPM failed.
	CodeHSMFailure = "HSM_FAILURE"
	// CodeInternal: an unexpected error on the node.
	CodeInternal = "INTERNAL"
	// CodeNoPreparams: the pre-parameter pool is empty; retry later.
	CodeNoPreparams = "NO_PREPARAMS"
	// CodeResultMismatch: the committee's results do not attest one
	// outcome: members reported different successes (keygen), or a success
	// did not verify over the request (a signature under pub_key). Decided
	// by the client (package attest), never sent by a node; the results
	// that conflict name the nodes.
	CodeResultMismatch = "RESULT_MISMATCH"
	// CodePeerEquivocated: a participant sent different copies of one
	// broadcast to different peers, or echoed a false digest of one; the
	// reason names it. Every honest participant aborted before sealing.
	CodePeerEquivocated = "PEER_EQUIVOCATED"
	// CodeApprovalRequired: the node policy requires M-of-K approvals for
	// this client ID, op (and wallet), and the request carries fewer valid
	// approvals from distinct eligible approvers (none at all, or too few).
	// The reason names the approvers counted and those eligible.
	CodeApprovalRequired = "APPROVAL_REQUIRED"
	// CodeApprovalInvalid: an approval in the request is not acceptable: an
	// approver unknown to the policy or not eligible for this request, a
	// signature that does not verify over this request (an approval of
	// another request), an approval that expired or outlives the request.
	CodeApprovalInvalid = "APPROVAL_INVALID"
)

// ErrorCodes returns every stable error code, in documentation order.
func ErrorCodes() []string {
	return []string{
		CodeBadRequest, CodeInvalidSignature, CodeExpired, CodeReplayed,
		CodeUnauthorizedClient, CodeUnknownWallet, CodeWalletExists,
		CodeNodesNotReady, CodeTimeout, CodeCeremonyFailed, CodeHSMFailure,
		CodeInternal, CodeNoPreparams, CodeResultMismatch, CodePeerEquivocated,
		CodeApprovalRequired, CodeApprovalInvalid,
	}
}

// KnownErrorCode reports whether code is in ErrorCodes.
func KnownErrorCode(code string) bool {
	for _, c := range ErrorCodes() {
		if c == code {
			return true
		}
	}
	return false
}

// Retryable reports whether a request that failed with code may succeed if
// sent again (with a new request_id).
func Retryable(code string) bool {
	switch code {
	case CodeNodesNotReady, CodeTimeout, CodeCeremonyFailed, CodeHSMFailure, CodeInternal, CodeNoPreparams, CodeExpired:
		return true
	}
	return false
}
