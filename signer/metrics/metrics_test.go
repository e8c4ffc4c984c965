package metrics

import (
	"maps"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// record feeds the same events to m: what a node counts for a few requests.
func record(m *Metrics) {
	m.Request("unknown", "dropped_subject")
	m.Request("sign", "dropped_malformed")
	m.Request("sign", "dropped_subject_mismatch")
	m.Request("sign", OutcomeUnauthenticated)
	m.Request("keygen", OutcomeUnauthenticated)
	m.Request("sign", "EXPIRED")
	m.Request("sign", OutcomeAccepted)
	m.Request("keygen", OutcomeAccepted)
	m.Request("reshare", OutcomeAccepted)
	m.Finished("sign", OutcomeSuccess)
	m.Finished("keygen", "NODES_NOT_READY")
	m.Finished("reshare", OutcomeNotParticipant) // neither a success nor a failure
	m.Dropped("bad_signature")
	m.Dropped("bad_signature")
	m.Dropped("replay")
	m.ConfirmationIgnored("bad_signature")
	m.Healed("retired")
}

func TestSnapshot(t *testing.T) {
	reg := prometheus.NewRegistry()
	exported, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	want := Snapshot{Accepted: 3, Rejected: 4, InvalidSignature: 2, Succeeded: 1, Failed: 1,
		Drops:                map[string]int64{"bad_signature": 2, "replay": 1},
		RequestDrops:         map[string]int64{"dropped_subject": 1, "dropped_malformed": 1, "dropped_subject_mismatch": 1, "dropped_unauthenticated": 2},
		ConfirmationsIgnored: map[string]int64{"bad_signature": 1}, Healed: map[string]int64{"retired": 1}}
	for _, tc := range []struct {
		name string
		m    *Metrics
		want Snapshot
	}{
		{"counters only", NewCounters(), want},
		{"with Prometheus", exported, want},
		{"nil", nil, Snapshot{Drops: map[string]int64{}, RequestDrops: map[string]int64{}, ConfirmationsIgnored: map[string]int64{}, Healed: map[string]int64{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			record(tc.m)
			done := tc.m.SessionStarted("sign", "secp256k1")
			done(OutcomeSuccess)
			if err := tc.m.PoolDepth(prometheus.NewRegistry(), func() (int, error) { return 2, nil }); err != nil {
				t.Fatal(err)
			}
			got := tc.m.Snapshot()
			if !maps.Equal(got.Drops, tc.want.Drops) {
				t.Fatalf("drops %v, want %v", got.Drops, tc.want.Drops)
			}
			if !maps.Equal(got.RequestDrops, tc.want.RequestDrops) {
				t.Fatalf("request drops %v, want %v", got.RequestDrops, tc.want.RequestDrops)
			}
			if !maps.Equal(got.ConfirmationsIgnored, tc.want.ConfirmationsIgnored) || !maps.Equal(got.Healed, tc.want.Healed) {
				t.Fatalf("confirmations ignored %v, healed %v; want %v, %v", got.ConfirmationsIgnored, got.Healed, tc.want.ConfirmationsIgnored, tc.want.Healed)
			}
			got.Drops, tc.want.Drops = nil, nil
			got.RequestDrops, tc.want.RequestDrops = nil, nil
			got.ConfirmationsIgnored, tc.want.ConfirmationsIgnored = nil, nil
			got.Healed, tc.want.Healed = nil, nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("snapshot %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSnapshotIsACopy(t *testing.T) {
	m := NewCounters()
	m.Dropped("replay")
	s := m.Snapshot()
	s.Drops["replay"] = 99
	m.Dropped("replay")
	if got := m.Snapshot().Drops["replay"]; got != 2 {
		t.Fatalf("replay drops %d, want 2", got)
	}
}

// TestPrometheusSeesTheSameCounts: the exported series carry the counts
// Snapshot reports.
func TestPrometheusSeesTheSameCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	record(m)
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, series := range []string{
		`signer_requests_total{op="keygen",outcome="accepted"} 1`,
		`signer_requests_total{op="reshare",outcome="accepted"} 1`,
		`signer_requests_total{op="sign",outcome="accepted"} 1`,
		`signer_requests_total{op="keygen",outcome="dropped_unauthenticated"} 1`,
		`signer_requests_total{op="sign",outcome="dropped_unauthenticated"} 1`,
		`signer_requests_total{op="unknown",outcome="dropped_subject"} 1`,
		`signer_requests_total{op="sign",outcome="dropped_malformed"} 1`,
		`signer_requests_total{op="sign",outcome="EXPIRED"} 1`,
		`signer_requests_finished_total{op="sign",outcome="success"} 1`,
		`signer_requests_finished_total{op="keygen",outcome="NODES_NOT_READY"} 1`,
		`signer_requests_finished_total{op="reshare",outcome="not_participant"} 1`,
		`signer_round_messages_dropped_total{reason="bad_signature"} 2`,
		`signer_key_confirmations_ignored_total{reason="bad_signature"} 1`,
		`signer_shares_healed_total{action="retired"} 1`,
		`signer_round_messages_dropped_total{reason="replay"} 1`,
	} {
		if !slices.Contains(strings.Split(body, "\n"), series) {
			t.Errorf("no series %s in\n%s", series, body)
		}
	}
}
