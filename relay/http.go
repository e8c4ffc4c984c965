package relay

import (
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hwsigner/signer/protocol"
)

// Handler returns the relay's HTTP API:
//
//	POST /v1/wallets   keygen request (signed envelope)   -> 202 {"request_id"}
//	POST /v1/sign      signing request                     -> 202
//	POST /v1/reshare   resharing request                   -> 202
//	GET  /v1/events    Server-Sent Events of results (Last-Event-ID resumes)
//	GET  /v1/results   long polling (?after=CURSOR&wait=30s&limit=100)
//	GET  /v1/ws        WebSocket stream of results (?after=CURSOR resumes)
//	GET  /v1/webhook-key  the Ed25519 key that verifies the client's v1a webhook signatures
//	GET  /healthz      the process is up
//	GET  /readyz       NATS connected and streams/consumers set up
//	GET  /metrics      Prometheus
func (r *Relay) Handler() http.Handler {
	h := map[string]http.Handler{
		"/v1/wallets":     r.handleSubmit(protocol.OpKeygen),
		"/v1/sign":        r.handleSubmit(protocol.OpSign),
		"/v1/reshare":     r.handleSubmit(protocol.OpReshare),
		"/v1/events":      http.HandlerFunc(r.handleEvents),
		"/v1/results":     http.HandlerFunc(r.handleResults),
		"/v1/ws":          http.HandlerFunc(r.handleWS),
		"/v1/webhook-key": http.HandlerFunc(r.handleWebhookKey),
		"/healthz": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		}),
		"/readyz": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if !r.ready.Load() || !r.natsUp() {
				writeError(w, http.StatusServiceUnavailable, CodeNATSUnavailable, "not connected to NATS or not set up yet")
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		}),
		"/metrics": promhttp.HandlerFor(r.m.Registry, promhttp.HandlerOpts{}),
	}
	mux := http.NewServeMux()
	for _, rt := range routes {
		mux.Handle(rt.Path, h[rt.Path])
	}
	return mux
}

// Route is one path of the HTTP API and the method it serves (any other
// method is 405, except on /healthz, /readyz and /metrics).
type Route struct{ Method, Path string }

// routes is the API, as docs/relay-openapi.yaml documents it.
var routes = []Route{
	{http.MethodPost, "/v1/wallets"},
	{http.MethodPost, "/v1/sign"},
	{http.MethodPost, "/v1/reshare"},
	{http.MethodGet, "/v1/events"},
	{http.MethodGet, "/v1/results"},
	{http.MethodGet, "/v1/ws"},
	{http.MethodGet, "/v1/webhook-key"},
	{http.MethodGet, "/healthz"},
	{http.MethodGet, "/readyz"},
	{http.MethodGet, "/metrics"},
}

// Routes returns the routes Handler serves.
func Routes() []Route { return slices.Clone(routes) }

// authGet checks the method (GET) and the bearer token of a read endpoint.
func (r *Relay) authGet(w http.ResponseWriter, req *http.Request) (string, bool) {
	if req.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "use GET")
		return "", false
	}
	id, err := r.tokens.authenticate(req)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="signer-relay"`)
		writeError(w, http.StatusUnauthorized, CodeUnauthenticated, err.Error())
		return "", false
	}
	return id, true
}

// webhookKey is the answer of GET /v1/webhook-key.
type webhookKey struct {
	ClientID string `json:"client_id"`
	// Algorithm is "ed25519"; signatures are "v1a,<base64>" entries of the
	// webhook-signature header, over "<webhook-id>.<webhook-timestamp>.<body>".
	Algorithm string `json:"algorithm"`
	// PublicKey is "whpk_<base64 of the 32-byte public key>".
	PublicKey string `json:"public_key"`
}

// handleWebhookKey serves GET /v1/webhook-key: the public key of the
// caller's webhook signing key (Standard Webhooks asymmetric signatures),
// 404 NO_WEBHOOK_KEY without one.
func (r *Relay) handleWebhookKey(w http.ResponseWriter, req *http.Request) {
	clientID, ok := r.authGet(w, req)
	if !ok {
		return
	}
	cs := r.clients[clientID]
	if cs.webhook == nil || cs.webhook.publicKey() == "" {
		writeError(w, http.StatusNotFound, CodeNoWebhookKey, "no webhook signing key is configured for this client")
		return
	}
	writeJSON(w, http.StatusOK, webhookKey{ClientID: clientID, Algorithm: "ed25519", PublicKey: cs.webhook.publicKey()})
}
