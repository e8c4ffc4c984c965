package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/signer/attempt"
	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/store"
	"github.com/hwsigner/signer/signer/transport"
)

func testSignRequest(id string) *protocol.SigningRequest {
	r := &protocol.SigningRequest{WalletID: "w1", KeyType: protocol.KeyTypeEd25519}
	r.ClientID, r.RequestID = "svcA", id
	r.ExpiresAt = time.Now().Add(time.Minute).UnixMilli()
	return r
}

func plan(id string, k int, from string, signers ...string) *attempt.Plan {
	return &attempt.Plan{V: 1, ClientID: "svcA", RequestID: id, Attempt: k, Signers: signers, From: from}
}

// The board follows the first fitting plan of each attempt, in the order
// plans arrive, before and after the request is opened; it starts an
// attempt only on its signers, and never after the node finished.
func TestBoardFollowsFirstFittingPlan(t *testing.T) {
	meta := store.WalletMeta{Committee: []string{"node0", "node1", "node2"}, Threshold: 1}
	type step struct {
		plan      *attempt.Plan // nil: open the request here
		wantStart bool
	}
	for _, tc := range []struct {
		name        string
		steps       []step
		wantCurrent int
		wantSigners []string
	}{
		{"first plan wins", []step{{nil, false}, {plan("r", 1, "node0", "node0", "node2"), true}, {plan("r", 1, "node2", "node1", "node2"), false}}, 1, []string{"node0", "node2"}},
		{"plans before the request", []step{{plan("r", 1, "node1", "node1", "node2"), false}, {plan("r", 1, "node0", "node0", "node2"), false}, {nil, false}}, 1, []string{"node1", "node2"}},
		{"misfit skipped", []step{{nil, false}, {plan("r", 1, "node9", "node0", "node2"), false}, {plan("r", 1, "node2", "node0", "node1", "node2"), false}, {plan("r", 1, "node1", "node0", "node1"), true}}, 1, []string{"node0", "node1"}},
		{"not a signer", []step{{nil, false}, {plan("r", 1, "node1", "node1", "node2"), false}}, 1, []string{"node1", "node2"}},
		{"newer attempt", []step{{nil, false}, {plan("r", 1, "node1", "node1", "node2"), false}, {plan("r", 2, "node1", "node0", "node1"), true}, {plan("r", 1, "node2", "node0", "node2"), false}}, 2, []string{"node0", "node1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBoard()
			var o *openSign
			for i, s := range tc.steps {
				if s.plan == nil {
					o = b.open(testSignRequest("r"), nil, meta, nil)
					continue
				}
				got, start := b.offer(s.plan, "node0")
				if start != s.wantStart {
					t.Fatalf("step %d: start %v, want %v", i, start, s.wantStart)
				}
				if o == nil {
					o = got
				}
			}
			if o.current != tc.wantCurrent || !slices.Equal(o.plans[o.current].Signers, tc.wantSigners) {
				t.Fatalf("current attempt %d with %v, want %d with %v", o.current, o.plans[o.current].Signers, tc.wantCurrent, tc.wantSigners)
			}
		})
	}

	t.Run("finished node starts nothing and an older attempt is stopped", func(t *testing.T) {
		b := newBoard()
		o := b.open(testSignRequest("r"), nil, meta, nil)
		ctx, cancel := context.WithCancel(context.Background())
		o.started, o.cancel = 0, cancel
		if _, start := b.offer(plan("r", 1, "node1", "node0", "node1"), "node0"); !start {
			t.Fatal("attempt 1 not started")
		}
		if ctx.Err() == nil {
			t.Fatal("attempt 0 not stopped by the plan of attempt 1")
		}
		o.finished = true
		if _, start := b.offer(plan("r", 2, "node1", "node0", "node1"), "node0"); start {
			t.Fatal("a finished request started again")
		}
	})

	t.Run("bounded", func(t *testing.T) {
		b := newBoard()
		for i := range maxUnopened + 10 {
			if o, _ := b.offer(plan(fmt.Sprint("r", i), 1, "node1", "node0", "node1"), "node0"); o == nil && i < maxUnopened {
				t.Fatalf("plan %d refused below the bound", i)
			}
		}
		if len(b.reqs) != maxUnopened {
			t.Fatalf("%d unopened requests held, bound %d", len(b.reqs), maxUnopened)
		}
		for range attempt.MaxAttempts + 5 {
			b.offer(plan("r0", 1, "node1", "node0", "node1"), "node0")
		}
		if n := len(b.reqs[boardKey("svcA", "r0")].early); n > attempt.MaxAttempts {
			t.Fatalf("%d early plans held for one request", n)
		}
		if n := b.prune(time.Now().Add(2 * unopenedTTL)); n != maxUnopened || b.unopened != 0 {
			t.Fatalf("pruned %d, %d unopened left", n, b.unopened)
		}
	})
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		ok       bool
		culprits []string
	}{
		{"handshake", &transport.NotReadyError{Missing: []string{"node1"}, Err: context.DeadlineExceeded}, true, []string{"node1"}},
		{"stall", fmt.Errorf("sign: %w", &ceremony.StalledError{Waiting: []string{"node2"}}), true, []string{"node2"}},
		{"sets differ", &transport.PartiesDifferError{Node: "node1"}, true, nil},
		{"peer aborted", fmt.Errorf("%w: node1 aborted the ceremony", ceremony.ErrParty), true, nil},
		{"equivocation", &ceremony.EquivocationError{Sender: "node1"}, false, nil},
		{"bad share", ceremony.ErrBadShare, false, nil},
		{"other", errors.New("disk on fire"), false, nil},
		{"nil", nil, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			culprits, ok := retryable(tc.err)
			if ok != tc.ok || !slices.Equal(culprits, tc.culprits) {
				t.Fatalf("retryable = %v %v, want %v %v", culprits, ok, tc.culprits, tc.ok)
			}
		})
	}
}
