package relay_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
)

// BenchmarkWebhookExtraLatency measures what the relay adds over the native
// NATS path: for each of 200 ed25519 signing results, the time from the
// result's publication on its NATS subject (a core subscription sees it as
// the nodes publish it: the earliest a native consumer can) to its verified
// arrival at a local webhook receiver. Reports median and p99.
//
//	go test -run '^$' -bench WebhookExtraLatency -benchtime 1x ./relay/
func BenchmarkWebhookExtraLatency(b *testing.B) {
	const n = 200
	e := startEnv(b)
	h := newReceiver(b, e, "svcA")
	run := startRelay(b, e.config(b, map[string]*receiver{"svcA": h}))
	raw, rid := e.keygenRequest(b, "svcA", "w-bench")
	if a := post(b, run.srv.URL+"/v1/wallets", e.tokens["svcA"], raw); a.Status != 202 {
		b.Fatalf("keygen: %d %s", a.Status, a.Body)
	}
	e.waitResult(b, run.srv.URL, e.tokens["svcA"], rid, 2*time.Minute)

	nc, err := nats.Connect(e.c.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	subj, _ := routing.SigningResultSubject("svcA")
	var mu sync.Mutex
	native := map[string][]time.Time{} // request_id -> node result arrivals
	sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
		t := time.Now()
		if res, err := protocol.DecodeResult(m.Data); err == nil {
			mu.Lock()
			native[res.RequestID] = append(native[res.RequestID], t)
			mu.Unlock()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = nc.Flush()

	for b.Loop() {
		ids := e.submitSigns(b, run.srv.URL, "svcA", "w-bench", n)
		h.waitFor(b, ids, 5*time.Minute)
		// From the first node result (as before), and from the second:
		// when a native client has the two signers' results and can
		// decide (the relay cannot decide earlier either).
		var extra, extraDecidable []time.Duration
		mu.Lock()
		h.mu.Lock()
		for _, id := range ids {
			if ts := native[id]; len(ts) > 0 {
				extra = append(extra, h.at[id].Sub(ts[0]))
				if len(ts) > 1 {
					extraDecidable = append(extraDecidable, h.at[id].Sub(ts[1]))
				}
			}
		}
		h.mu.Unlock()
		mu.Unlock()
		if len(extra) < n*9/10 || len(extraDecidable) < n*9/10 {
			b.Fatalf("only %d (%d with two results) of %d results seen on the native subject", len(extra), len(extraDecidable), n)
		}
		slices.Sort(extra)
		slices.Sort(extraDecidable)
		b.ReportMetric(float64(extra[len(extra)/2].Microseconds())/1000, "median_ms")
		b.ReportMetric(float64(extra[len(extra)*99/100].Microseconds())/1000, "p99_ms")
		b.ReportMetric(float64(extraDecidable[len(extraDecidable)/2].Microseconds())/1000, "median_decidable_ms")
		b.ReportMetric(float64(extraDecidable[len(extraDecidable)*99/100].Microseconds())/1000, "p99_decidable_ms")
		b.Logf("extra webhook latency over %d results from the first node result: median %s, p99 %s, max %s", len(extra), extra[len(extra)/2], extra[len(extra)*99/100], extra[len(extra)-1])
		b.Logf("from the second node result (decidable): median %s, p99 %s, max %s", extraDecidable[len(extraDecidable)/2], extraDecidable[len(extraDecidable)*99/100], extraDecidable[len(extraDecidable)-1])
	}
}
