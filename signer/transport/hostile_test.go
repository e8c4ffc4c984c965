package transport

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestHostileRoundMessages feeds a session's handler each hostile round
// message of docs/hostile-input.md and checks the drop reason it is counted
// under (nothing reaches the ceremony inbox), then that a genuine message
// still gets through.
func TestHostileRoundMessages(t *testing.T) {
	seeds := transportSeeds(t)
	tests := []struct {
		name, seed, reason string
		handshake          bool
	}{
		{"malformed JSON", "not-json", DropMalformed, false},
		{"wrong member types", "wrong-types", DropMalformed, false},
		{"unknown sender", "unknown-peer", DropUnknownPeer, false},
		{"peer outside the committee", "outsider", DropUnknownPeer, false},
		{"forged signature", "forged", DropBadSignature, false},
		{"another session", "wrong-session", DropWrongSession, false},
		{"addressed to another node", "wrong-to", DropWrongSession, false},
		{"unknown kind", "bad-kind", DropMalformed, false},
		{"hello with a bad X25519 key", "bad-hello-key", DropMalformed, false},
		{"P2P ciphertext that does not open", "p2p", DropDecrypt, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, dc := fuzzNewSession(t)
			feed := func(b []byte) { s.onMsg(&nats.Msg{Data: b}) }
			if tc.handshake {
				feed(node1Hello(t, 1<<40))
			}
			feed(seeds[tc.seed])
			if got := drain(s); len(got) != 0 {
				t.Fatalf("delivered %d messages", len(got))
			}
			if dc.n[tc.reason] != 1 {
				t.Fatalf("drops %v, want one %q", dc.n, tc.reason)
			}
		})
	}
	t.Run("replayed message", func(t *testing.T) {
		s, dc := fuzzNewSession(t)
		s.onMsg(&nats.Msg{Data: seeds["broadcast"]})
		s.onMsg(&nats.Msg{Data: seeds["broadcast"]})
		if got := drain(s); len(got) != 1 || dc.n[DropReplay] != 1 {
			t.Fatalf("delivered %d, drops %v; want 1 delivered and one replay", len(got), dc.n)
		}
	})
	t.Run("hello with another signer set", func(t *testing.T) {
		s, _ := fuzzNewSession(t)
		s.onMsg(&nats.Msg{Data: seeds["other-parties"]})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var pd *PartiesDifferError
		if err := s.WaitReady(ctx); !errors.Is(err, ErrPartiesDiffer) || !errors.As(err, &pd) || pd.Node != "node2" {
			t.Fatalf("WaitReady: %v, want ErrPartiesDiffer naming node2", err)
		}
	})
	t.Run("hello with another signer set from a non-participant", func(t *testing.T) {
		s, dc := fuzzNewSession(t)
		s.onMsg(&nats.Msg{Data: seeds["outsider-parties"]})
		select {
		case <-s.failed:
			t.Fatalf("node3, not a participant, made the session fail: %v", s.failErr)
		default:
		}
		if dc.n[DropPartiesDiffer] != 1 {
			t.Fatalf("drops %v, want one %q", dc.n, DropPartiesDiffer)
		}
	})
}
