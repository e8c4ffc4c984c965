// Package metrics counts what a node does. The request counters and the
// dropped round messages by reason are always kept and read with Snapshot
// (the node's heartbeat status, `signerctl status`). A Metrics made by New
// also exports them to Prometheus, with ceremonies by operation, key type and
// outcome, ceremony latency, hardware operation latency and the pre-params
// pool depth; one made by NewCounters keeps the counters only. Every method
// is safe on a nil *Metrics, which counts nothing.
package metrics

import (
	"context"
	"crypto"
	"io"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hwsigner/signer/hsm"
)

// Request outcomes that Request counts apart; every other outcome is a
// rejection.
const (
	OutcomeAccepted        = "accepted"                // taken for processing
	OutcomeUnauthenticated = "dropped_unauthenticated" // unknown client key or bad signature
)

// OutcomeSuccess is the outcome of a request or ceremony that succeeded; any
// other outcome of Finished is a failure.
const OutcomeSuccess = "success"

// OutcomeNotParticipant is the outcome of an accepted request this node
// stayed out of (a signer not chosen, a reshare outside both committees):
// neither a success nor a failure.
const OutcomeNotParticipant = "not_participant"

// OutcomeRerun is the outcome of an attempt of a sign request that failed
// for want of a peer and was handed to a re-run on another committee (a
// plan on MPC_ATTEMPTS): neither a success nor a failure; the re-run's own
// outcome is counted when it finishes.
const OutcomeRerun = "rerun"

// Metrics of one node.
type Metrics struct {
	accepted, rejected, unauthenticated atomic.Int64
	succeeded, failed                   atomic.Int64
	plans, reruns                       atomic.Int64

	dropsMu  sync.Mutex
	drops    map[string]int64
	reqDrops map[string]int64 // requests dropped without an answer, by outcome
	ignored  map[string]int64 // key confirmations ignored, by reason
	healed   map[string]int64 // shares activated or retired from key confirmations

	prom *exported // nil: no Prometheus
}

// exported are the Prometheus collectors, registered by New.
type exported struct {
	requests  *prometheus.CounterVec
	finished  *prometheus.CounterVec
	ceremony  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	hsmOps    *prometheus.HistogramVec
	hsmErrors *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	ignored   *prometheus.CounterVec
	healed    *prometheus.CounterVec
	sessions  prometheus.Gauge
	plans     prometheus.Counter
	reruns    prometheus.Counter
}

// Snapshot is a copy of the counters.
type Snapshot struct {
	Accepted         int64 // requests taken for processing
	Rejected         int64 // requests answered with an error before processing, or dropped (bad subject, malformed)
	InvalidSignature int64 // requests dropped: unknown client key or bad signature
	Succeeded        int64 // accepted requests whose result is a success
	// Failed counts accepted requests whose result is an error; requests
	// this node stayed out of (OutcomeNotParticipant) count as neither.
	Failed int64
	// Plans counts the re-run plans this node published (an attempt of a
	// sign request failed for want of a peer); Reruns the re-run attempts
	// it took part in.
	Plans, Reruns int64
	Drops         map[string]int64 // round messages dropped before tss-lib, by reason
	// RequestDrops counts requests dropped without an answer, by outcome
	// (dropped_subject, dropped_malformed, dropped_subject_mismatch,
	// dropped_unauthenticated).
	RequestDrops map[string]int64
	// ConfirmationsIgnored counts key confirmations read from the bucket
	// and ignored, by reason (bad_signature, unknown_node, not_in_committee,
	// malformed, key_mismatch, outside_cluster, other_key).
	ConfirmationsIgnored map[string]int64
	// Healed counts shares this node switched from key confirmations
	// instead of a reshare's "sealed" messages: activated (a pending share
	// the whole new committee confirmed) or retired (a share a newer,
	// confirmed epoch superseded).
	Healed map[string]int64
}

// NewCounters returns metrics that keep the counters and export nothing.
func NewCounters() *Metrics {
	return &Metrics{drops: map[string]int64{}, reqDrops: map[string]int64{}, ignored: map[string]int64{}, healed: map[string]int64{}}
}

// New returns metrics that keep the counters and register their Prometheus
// collectors on reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	p := &exported{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_requests_total",
			Help: "Requests this node received, by operation and outcome (accepted, or the error code it answered with, or dropped_* when it was dropped unanswered: dropped_unauthenticated, dropped_malformed, dropped_subject, dropped_subject_mismatch).",
		}, []string{"op", "outcome"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_requests_finished_total",
			Help: "Accepted requests this node finished, by operation and outcome (success, not_participant when it stayed out, rerun when a signing attempt was handed to a re-run, or the error code of its result).",
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
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_key_confirmations_ignored_total",
			Help: "Key confirmations read from the mpc_keys bucket and ignored (forged, malformed, under another key, naming a node outside the committee or cluster), by reason.",
		}, []string{"reason"}),
		healed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signer_shares_healed_total",
			Help: "Shares this node switched from the committee's key confirmations rather than a reshare's session: activated (pending share confirmed by the whole new committee) or retired (superseded by a confirmed newer epoch).",
		}, []string{"action"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "signer_sessions_active",
			Help: "Ceremony sessions running on this node.",
		}),
		plans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "signer_rerun_plans_total",
			Help: "Re-run plans this node published on MPC_ATTEMPTS (a signing attempt failed for want of a peer).",
		}),
		reruns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "signer_rerun_attempts_total",
			Help: "Re-run signing attempts (attempt 1 and later) this node took part in.",
		}),
	}
	for _, c := range []prometheus.Collector{p.requests, p.finished, p.ceremony, p.latency, p.hsmOps, p.hsmErrors, p.dropped, p.ignored, p.healed, p.sessions, p.plans, p.reruns} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m := NewCounters()
	m.prom = p
	return m, nil
}

// Snapshot returns the counters' current values.
func (m *Metrics) Snapshot() Snapshot {
	if m == nil {
		return Snapshot{Drops: map[string]int64{}, RequestDrops: map[string]int64{}, ConfirmationsIgnored: map[string]int64{}, Healed: map[string]int64{}}
	}
	m.dropsMu.Lock()
	drops, reqDrops := maps.Clone(m.drops), maps.Clone(m.reqDrops)
	ignored, healed := maps.Clone(m.ignored), maps.Clone(m.healed)
	m.dropsMu.Unlock()
	return Snapshot{
		Accepted: m.accepted.Load(), Rejected: m.rejected.Load(), InvalidSignature: m.unauthenticated.Load(),
		Succeeded: m.succeeded.Load(), Failed: m.failed.Load(), Plans: m.plans.Load(), Reruns: m.reruns.Load(), Drops: drops,
		RequestDrops: reqDrops, ConfirmationsIgnored: ignored, Healed: healed,
	}
}

// PoolDepth registers a gauge that reads the pre-params pool depth on each
// scrape. Without Prometheus it registers nothing.
func (m *Metrics) PoolDepth(reg prometheus.Registerer, depth func() (int, error)) error {
	if m == nil || m.prom == nil {
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

// Request counts a request by outcome: OutcomeAccepted, OutcomeUnauthenticated,
// or anything else (an error code, a dropped_* reason) as a rejection.
func (m *Metrics) Request(op, outcome string) {
	if m == nil {
		return
	}
	switch outcome {
	case OutcomeAccepted:
		m.accepted.Add(1)
	case OutcomeUnauthenticated:
		m.unauthenticated.Add(1)
	default:
		m.rejected.Add(1)
	}
	if strings.HasPrefix(outcome, "dropped_") {
		m.dropsMu.Lock()
		m.reqDrops[outcome]++
		m.dropsMu.Unlock()
	}
	if m.prom != nil {
		m.prom.requests.WithLabelValues(op, outcome).Inc()
	}
}

// Finished counts an accepted request that finished: OutcomeSuccess as a
// success, OutcomeNotParticipant as neither, any other outcome (an error
// code) as a failure.
func (m *Metrics) Finished(op, outcome string) {
	if m == nil {
		return
	}
	switch outcome {
	case OutcomeSuccess:
		m.succeeded.Add(1)
	case OutcomeNotParticipant, OutcomeRerun:
	default:
		m.failed.Add(1)
	}
	if m.prom != nil {
		m.prom.finished.WithLabelValues(op, outcome).Inc()
	}
}

// SessionStarted marks a ceremony as running; call the returned func when it
// ends with its outcome (OutcomeSuccess or an error code). Only Prometheus
// sees ceremonies.
func (m *Metrics) SessionStarted(op, keyType string) func(outcome string) {
	if m == nil || m.prom == nil {
		return func(string) {}
	}
	p := m.prom
	start := time.Now()
	p.sessions.Inc()
	return func(outcome string) {
		p.sessions.Dec()
		p.ceremony.WithLabelValues(op, keyType, outcome).Inc()
		p.latency.WithLabelValues(op, keyType).Observe(time.Since(start).Seconds())
	}
}

// Planned counts a re-run plan this node published.
func (m *Metrics) Planned() {
	if m != nil {
		m.plans.Add(1)
		if m.prom != nil {
			m.prom.plans.Inc()
		}
	}
}

// Rerun counts a re-run attempt this node takes part in.
func (m *Metrics) Rerun() {
	if m != nil {
		m.reruns.Add(1)
		if m.prom != nil {
			m.prom.reruns.Inc()
		}
	}
}

// Dropped counts a dropped round message by reason.
func (m *Metrics) Dropped(reason string) {
	if m == nil {
		return
	}
	m.dropsMu.Lock()
	m.drops[reason]++
	m.dropsMu.Unlock()
	if m.prom != nil {
		m.prom.dropped.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) hsmOp(backend, op string, start time.Time, err error) {
	if m == nil || m.prom == nil {
		return
	}
	m.prom.hsmOps.WithLabelValues(backend, op).Observe(time.Since(start).Seconds())
	if err != nil {
		m.prom.hsmErrors.WithLabelValues(backend, op).Inc()
	}
}

// InstrumentBackend times every wrap, unwrap and identity signature of b for
// Prometheus. Without Prometheus it returns b unchanged.
func (m *Metrics) InstrumentBackend(b hsm.Backend) hsm.Backend {
	if m == nil || m.prom == nil {
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

// ConfirmationIgnored counts a key confirmation ignored, by reason.
func (m *Metrics) ConfirmationIgnored(reason string) {
	if m == nil {
		return
	}
	m.dropsMu.Lock()
	m.ignored[reason]++
	m.dropsMu.Unlock()
	if m.prom != nil {
		m.prom.ignored.WithLabelValues(reason).Inc()
	}
}

// Healed counts a share switched from key confirmations: action is
// "activated" or "retired".
func (m *Metrics) Healed(action string) {
	if m == nil {
		return
	}
	m.dropsMu.Lock()
	m.healed[action]++
	m.dropsMu.Unlock()
	if m.prom != nil {
		m.prom.healed.WithLabelValues(action).Inc()
	}
}
