package relay

import (
	"encoding/json"
	"net/http"
)

// Stable error codes of the relay's HTTP API, in the body of every 4xx and
// 5xx answer: {"error_code": "...", "error_reason": "..."}. Codes are never
// renamed; the reason is for humans and may change.
const (
	// CodeUnauthenticated (401): no bearer token, or an unknown one.
	CodeUnauthenticated = "UNAUTHENTICATED"
	// CodeClientMismatch (403): the envelope's client_id is not the
	// token's clientID.
	CodeClientMismatch = "CLIENT_ID_MISMATCH"
	// CodeInvalidSignature (403): the request signature does not verify
	// against the keys configured for the clientID (tampered, or unknown
	// key_id).
	CodeInvalidSignature = "INVALID_SIGNATURE"
	// CodeMalformed (400): not JSON the protocol accepts, or not a request
	// of the endpoint's operation.
	CodeMalformed = "MALFORMED"
	// CodeBadRequest (400): a field fails validation.
	CodeBadRequest = "BAD_REQUEST"
	// CodeExpired (400): expires_at has passed (or created_at is too far
	// ahead): sign a fresh request.
	CodeExpired = "EXPIRED"
	// CodeTooLarge (413): the body exceeds max_body_bytes.
	CodeTooLarge = "TOO_LARGE"
	// CodeBadCursor (400): after/Last-Event-ID/wait is not valid.
	CodeBadCursor = "BAD_CURSOR"
	// CodeNoWebhookKey (404): GET /v1/webhook-key for a client without a
	// webhook signing_key_source.
	CodeNoWebhookKey = "NO_WEBHOOK_KEY"
	// CodeMethodNotAllowed (405).
	CodeMethodNotAllowed = "METHOD_NOT_ALLOWED"
	// CodeNATSUnavailable (503): NATS did not ack the publish (or could not
	// be read); nothing was accepted, retry with the same request_id.
	CodeNATSUnavailable = "NATS_UNAVAILABLE"
)

// apiError is the JSON body of an error answer.
type apiError struct {
	Code   string `json:"error_code"`
	Reason string `json:"error_reason"`
}

func writeError(w http.ResponseWriter, status int, code, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(apiError{Code: code, Reason: reason})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
