// Package metrics holds a node's Prometheus metrics: requests and ceremonies
// by operation and outcome, ceremony latency, hardware operation latency,
// dropped round messages by reason and the pre-params pool depth. Every
// method is safe on a nil *Metrics (metrics off), so callers need no checks.
package metrics

import (
	"context"
	"crypto"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hwsigner/signer/hsm"
)

// Metrics of one node, registered on the registry given to New.
type Metrics struct {
	requests  *prometheus.CounterVec
	ceremony  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	hsmOps    *prometheus.HistogramVec
	hsmErrors *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	sessions  prometheus.Gauge
}

// New creates the metrics and registers them on reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_requests_total",
			Help: "Requests this node received, by operation and outcome (accepted, or the error code it answered with, or dropped_* when the sender could not be authenticated).",
		}, []string{"op", "outcome"}),
		ceremony: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_ceremonies_total",
			Help: "Ceremonies this node took part in, by operation, key type and outcome (success or an error code).",
		}, []string{"op", "key_type", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "signer_ceremony_duration_seconds",
			Help:    "Duration of the ceremonies this node took part in, from request to result, by operation and key type.",
			Buckets: []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180},
		}, []string{"op", "key_type"}),
		hsmOps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "signer_hsm_operation_duration_seconds",
			Help:    "Duration of hardware operations (wrap, unwrap, sign), by backend and operation.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5},
		}, []string{"backend", "op"}),
		hsmErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_hsm_errors_total",
			Help: "Failed hardware operations, by backend and operation.",
		}, []string{"backend", "op"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_round_messages_dropped_total",
			Help: "Round messages dropped before tss-lib, by reason.",
		}, []string{"reason"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "signer_sessions_active",
			Help: "Ceremony sessions running on this node.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.ceremony, m.latency, m.hsmOps, m.hsmErrors, m.dropped, m.sessions} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// PoolDepth registers a gauge that reads the pre-params pool depth on each
// scrape.
func (m *Metrics) PoolDepth(reg prometheus.Registerer, depth func() (int, error)) error {
	if m == nil {
		return nil
	}
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "signer_preparams_pool_depth",
		Help: "Sealed Paillier pre-params sets ready for keygens.",
	}, func() float64 {
		n, err := depth()
		if err != nil {
			return -1
		}
		return float64(n)
	}))
}

// Request counts a request by outcome.
func (m *Metrics) Request(op, outcome string) {
	if m != nil {
		m.requests.WithLabelValues(op, outcome).Inc()
	}
}

// SessionStarted marks a ceremony as running; call the returned func when it
// ends with its outcome ("success" or an error code).
func (m *Metrics) SessionStarted(op, keyType string) func(outcome string) {
	if m == nil {
		return func(string) {}
	}
	start := time.Now()
	m.sessions.Inc()
	return func(outcome string) {
		m.sessions.Dec()
		m.ceremony.WithLabelValues(op, keyType, outcome).Inc()
		m.latency.WithLabelValues(op, keyType).Observe(time.Since(start).Seconds())
	}
}

// Dropped counts a dropped round message.
func (m *Metrics) Dropped(reason string) {
	if m != nil {
		m.dropped.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) hsmOp(backend, op string, start time.Time, err error) {
	if m == nil {
		return
	}
	m.hsmOps.WithLabelValues(backend, op).Observe(time.Since(start).Seconds())
	if err != nil {
		m.hsmErrors.WithLabelValues(backend, op).Inc()
	}
}

// InstrumentBackend times every wrap, unwrap and identity signature of b.
// With nil metrics it returns b unchanged.
func (m *Metrics) InstrumentBackend(b hsm.Backend) hsm.Backend {
	if m == nil {
		return b
	}
	return &backend{inner: b, m: m}
}

type backend struct {
	inner hsm.Backend
	m     *Metrics
}

func (b *backend) Backend() string       { return b.inner.Backend() }
func (b *backend) ActiveKey() hsm.KeyRef { return b.inner.ActiveKey() }
func (b *backend) Close() error          { return b.inner.Close() }
func (b *backend) RotateKey(ctx context.Context) (hsm.KeyRef, error) {
	return b.inner.RotateKey(ctx)
}

func (b *backend) WrapKey(ctx context.Context, dataKey, aad []byte) (hsm.KeyRef, []byte, error) {
	start := time.Now()
	ref, out, err := b.inner.WrapKey(ctx, dataKey, aad)
	b.m.hsmOp(b.inner.Backend(), "wrap", start, err)
	return ref, out, err
}

func (b *backend) UnwrapKey(ctx context.Context, ref hsm.KeyRef, wrapped, aad []byte) ([]byte, error) {
	start := time.Now()
	dk, err := b.inner.UnwrapKey(ctx, ref, wrapped, aad)
	b.m.hsmOp(b.inner.Backend(), "unwrap", start, err)
	return dk, err
}

func (b *backend) Identity(ctx context.Context) (crypto.Signer, error) {
	s, err := b.inner.Identity(ctx)
	if err != nil {
		return nil, err
	}
	return &signer{Signer: s, name: b.inner.Backend(), m: b.m}, nil
}

type signer struct {
	crypto.Signer
	name string
	m    *Metrics
}

func (s *signer) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	start := time.Now()
	sig, err := s.Signer.Sign(r, digest, opts)
	s.m.hsmOp(s.name, "sign", start, err)
	return sig, err
}
