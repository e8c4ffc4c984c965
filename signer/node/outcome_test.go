package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/committee"
	"github.com/hwsigner/signer/signer/metrics"
	"github.com/hwsigner/signer/signer/transport"
)

func TestBrokeRule(t *testing.T) {
	planErr := func(h map[string]committee.Holding) error {
		_, err := committee.PlanReshare(h, protocol.KeyTypeSecp256k1, "w1")
		return err
	}
	_, notMember := committee.ReshareParticipants([]string{"node0"}, "node0", nil, []string{"node9"})
	_, tooFew := committee.Signers("req", []string{"node0", "node1"}, nil, 1)
	for _, tc := range []struct {
		name string
		err  error
		code string
		msg  string
	}{
		{"keygen needs everyone", committee.Keygen([]string{"node0", "node1"}, map[string]bool{"node0": true}),
			protocol.CodeNodesNotReady, "keygen needs every committee member; node1 is not ready"},
		{"too few signers", tooFew, protocol.CodeNodesNotReady, "fewer than 2 committee members are ready"},
		{"new member outside the cluster", notMember, protocol.CodeBadRequest, "node node9 is not a member of this cluster"},
		{"no holder", planErr(nil), protocol.CodeUnknownWallet, "no ready node holds a secp256k1 key of wallet w1"},
		{"holders differ", planErr(map[string]committee.Holding{"node0": {Holds: true, Committee: []string{"node1"}}}),
			protocol.CodeCeremonyFailed, "node: the old committee's members disagree about the wallet: node0 holds a share outside its committee"},
		{"not a rule", errors.New("disk full"), protocol.CodeInternal, "disk full"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := brokeRule(&protocol.Result{ResultType: protocol.ResultSuccess}, tc.err)
			res := out.res
			if out.kind != outcomeFailed || res.Succeeded() {
				t.Fatalf("outcome %v, result %s: want a failure", out.kind, res.ResultType)
			}
			if res.ErrorCode != tc.code || res.ErrorReason != tc.msg {
				t.Fatalf("got %s %q, want %s %q", res.ErrorCode, res.ErrorReason, tc.code, tc.msg)
			}
		})
	}
}

func TestOutcomeLabel(t *testing.T) {
	ok := &protocol.Result{ResultType: protocol.ResultSuccess}
	for _, tc := range []struct {
		name string
		out  outcome
		want string
	}{
		{"success", succeeded(ok), metrics.OutcomeSuccess},
		{"stayed out", notParticipant(), metrics.OutcomeNotParticipant},
		{"error", failed(&protocol.Result{}, protocol.CodeTimeout, "late"), protocol.CodeTimeout},
	} {
		if got := tc.out.label(); got != tc.want {
			t.Errorf("%s: outcome %q, want %q", tc.name, got, tc.want)
		}
	}
	if notParticipant().res != nil {
		t.Error("a node that stays out must have no result to publish")
	}
}

func TestErrorCode(t *testing.T) {
	live := context.Background()
	expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		code string
	}{
		{"pool empty", live, fmt.Errorf("keygen: %w", errNoPreParams), protocol.CodeNoPreparams},
		{"peer did not join", live, transport.ErrNotReady, protocol.CodeNodesNotReady},
		{"peer did not join by the deadline", expired, transport.ErrNotReady, protocol.CodeTimeout},
		{"deadline", live, fmt.Errorf("round 2: %w", context.DeadlineExceeded), protocol.CodeTimeout},
		{"hsm", live, fmt.Errorf("open: %w", hsm.ErrTampered), protocol.CodeHSMFailure},
		{"parties differ", live, transport.ErrPartiesDiffer, protocol.CodeNodesNotReady},
		{"bad share", live, ceremony.ErrBadShare, protocol.CodeHSMFailure},
		{"equivocation", live, fmt.Errorf("round 1: %w", ceremony.ErrEquivocation), protocol.CodePeerEquivocated},
		{"tss", live, fmt.Errorf("%w: round 3", ceremony.ErrParty), protocol.CodeCeremonyFailed},
		{"other", live, errors.New("disk full"), protocol.CodeInternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _ := errorCode(tc.ctx, tc.err); code != tc.code {
				t.Fatalf("code %s, want %s", code, tc.code)
			}
		})
	}
}
