package relay

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
)

// clockSkew: how far created_at may lie ahead of the relay's clock.
const clockSkew = 5 * time.Minute

// accepted is the 202 body.
type accepted struct {
	RequestID string `json:"request_id"`
	// Duplicate: JetStream already held these exact request bytes (within
	// its 10-minute duplicate window); the first one stands.
	Duplicate bool `json:"duplicate,omitempty"`
}

// handleSubmit serves POST /v1/wallets (keygen), /v1/sign and /v1/reshare:
// the body is the exact signed JSON envelope the Go client publishes. The
// relay authenticates the bearer token, checks size and shape, that
// client_id is the token's clientID and that the signature verifies against
// a key configured for that clientID, then publishes the bytes unchanged to
// MPC_REQUESTS with Nats-Msg-Id = routing.RequestMsgID (client, request_id
// and a hash of the bytes, like the Go client) and answers 202 once
// JetStream has acked.
func (r *Relay) handleSubmit(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "use POST")
			return
		}
		clientID, err := r.tokens.authenticate(req)
		if err != nil {
			r.m.requests.WithLabelValues("", op, CodeUnauthenticated).Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="signer-relay"`)
			writeError(w, http.StatusUnauthorized, CodeUnauthenticated, err.Error())
			return
		}
		status, code, reason, id := r.submit(req.Context(), clientID, op, w, req)
		r.m.requests.WithLabelValues(clientID, op, code).Inc()
		if code != "ACCEPTED" {
			r.log.Info("request refused", "client_id", clientID, "op", op, "code", code, "reason", reason)
			writeError(w, status, code, reason)
			return
		}
		writeJSON(w, status, id)
	}
}

func (r *Relay) submit(ctx context.Context, clientID, op string, w http.ResponseWriter, req *http.Request) (int, string, string, accepted) {
	var none accepted
	raw, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return http.StatusRequestEntityTooLarge, CodeTooLarge, "body larger than max_body_bytes", none
		}
		return http.StatusBadRequest, CodeMalformed, "reading the body failed", none
	}
	parsed, err := protocol.DecodeRequest(op, raw)
	switch {
	case errors.Is(err, protocol.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, CodeTooLarge, err.Error(), none
	case parsed == nil && err != nil:
		return http.StatusBadRequest, CodeMalformed, err.Error(), none
	}
	env := parsed.Env()
	if env.ClientID != clientID {
		return http.StatusForbidden, CodeClientMismatch, "client_id is not the clientID of the bearer token", none
	}
	if err != nil {
		if errors.Is(err, protocol.ErrUnknownOp) {
			return http.StatusBadRequest, CodeMalformed, "op does not match the endpoint: " + err.Error(), none
		}
		return http.StatusBadRequest, CodeBadRequest, err.Error(), none
	}
	pub, ok := r.clients[clientID].keys[env.KeyID]
	if !ok {
		return http.StatusForbidden, CodeInvalidSignature, "key_id is not a key configured for this clientID", none
	}
	if err := protocol.VerifyRequest(raw, pub); err != nil {
		return http.StatusForbidden, CodeInvalidSignature, "the request signature does not verify", none
	}
	if err := env.CheckTime(time.Now(), clockSkew); err != nil {
		return http.StatusBadRequest, CodeExpired, err.Error(), none
	}
	var ids struct {
		WalletID string `json:"wallet_id"` // every request type has one
	}
	_ = json.Unmarshal(raw, &ids) // DecodeRequest accepted raw already
	subject, err := routing.RequestSubject(op, ids.WalletID)
	if err != nil {
		return http.StatusBadRequest, CodeBadRequest, err.Error(), none
	}
	cs := r.clients[clientID]
	if !cs.nc.IsConnected() {
		return http.StatusServiceUnavailable, CodeNATSUnavailable, "not connected to NATS; nothing was published, retry with the same request_id", none
	}
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	ack, err := cs.js.PublishMsg(pctx, &nats.Msg{Subject: subject, Data: raw},
		jetstream.WithMsgID(routing.RequestMsgID(clientID, env.RequestID, raw)), jetstream.WithExpectStream(routing.RequestStream))
	if err != nil {
		r.log.Warn("publish failed", "client_id", clientID, "op", op, "request_id", env.RequestID, "err", err)
		return http.StatusServiceUnavailable, CodeNATSUnavailable, "JetStream did not acknowledge the request; retry with the same request_id", none
	}
	r.log.Debug("request published", "client_id", clientID, "op", op, "request_id", env.RequestID, "seq", ack.Sequence, "duplicate", ack.Duplicate)
	return http.StatusAccepted, "ACCEPTED", "", accepted{RequestID: env.RequestID, Duplicate: ack.Duplicate}
}
