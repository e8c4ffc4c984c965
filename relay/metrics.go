package relay

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the relay's Prometheus collectors, in a registry of their own.
type Metrics struct {
	Registry *prometheus.Registry

	requests    *prometheus.CounterVec
	forwarded   *prometheus.CounterVec
	decisions   *prometheus.CounterVec
	deliveries  *prometheus.CounterVec
	retries     *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	attempt     *prometheus.HistogramVec
	streams     prometheus.Gauge
	webhookGone *prometheus.GaugeVec
	ws          prometheus.Gauge
	wsClosed    *prometheus.CounterVec
}

// NewMetrics registers the relay's collectors (and the Go and process
// collectors) in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_relay_requests_total",
			Help: "HTTP requests (wallets, sign, reshare) by client, op and outcome code (ACCEPTED or an error code).",
		}, []string{"client_id", "op", "code"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_relay_results_forwarded_total",
			Help: "Node results taken from MPC_RESULTS, by outcome: collected (verified, added to its request's collector), rejected (fails verification: never passed on), straggler (after its request's decision: dropped), retry (the decision was not stored; redelivered).",
		}, []string{"client_id", "outcome"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_relay_decisions_total",
			Help: "Attested decisions written to the relay's history, by op and outcome (success, error, timeout: undecided after cluster.hold).",
		}, []string{"client_id", "op", "outcome"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_relay_webhook_deliveries_total",
			Help: "Webhook delivery attempts by outcome (success, http_error, network_error, gone: a 410 answer or a delivery after one, dead_letter).",
		}, []string{"client_id", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_relay_webhook_retries_total",
			Help: "Webhook deliveries scheduled for another attempt.",
		}, []string{"client_id"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_relay_webhook_dead_letters_total",
			Help: "Results moved to RELAY_DLQ after max_age of failed deliveries.",
		}, []string{"client_id"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "signer_relay_webhook_delivery_latency_seconds",
			Help:    "From the result entering the relay's history to its 2xx webhook answer (retries included).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 20),
		}, []string{"client_id"}),
		attempt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "signer_relay_webhook_attempt_seconds",
			Help:    "Duration of successful webhook HTTP attempts.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"client_id"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "signer_relay_sse_streams",
			Help: "Open Server-Sent Events streams.",
		}),
		webhookGone: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "signer_relay_webhook_gone",
			Help: "1 once the client's webhook answered 410 Gone: nothing more is posted to it, each result is dead-lettered, until the relay restarts.",
		}, []string{"client_id"}),
		ws: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "signer_relay_ws_connections",
			Help: "Open WebSocket connections (GET /v1/ws).",
		}),
		wsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_relay_ws_disconnects_total",
			Help: "WebSocket connections ended by the relay or the peer, by reason: slow_reader (send queue full or a write timed out), ping_timeout, peer (closed by the client), history (the history became unreachable), shutdown.",
		}, []string{"client_id", "reason"}),
	}
	m.Registry.MustRegister(m.requests, m.forwarded, m.decisions, m.deliveries, m.retries, m.deadLetters, m.latency, m.attempt, m.streams, m.webhookGone, m.ws, m.wsClosed,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
