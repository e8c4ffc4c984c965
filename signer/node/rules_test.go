package node

import (
	"errors"
	"testing"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/signer/committee"
	"github.com/hwsigner/signer/signer/metrics"
)

func TestRuleFailure(t *testing.T) {
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
			res := &protocol.Result{}
			ruleFailure(res, tc.err)
			if res.ErrorCode != tc.code || res.ErrorReason != tc.msg {
				t.Fatalf("got %s %q, want %s %q", res.ErrorCode, res.ErrorReason, tc.code, tc.msg)
			}
		})
	}
}

func TestFinishOutcome(t *testing.T) {
	failed := &protocol.Result{}
	failed.SetError(protocol.CodeTimeout, "late")
	for _, tc := range []struct {
		name string
		res  *protocol.Result
		want string
	}{
		{"success", &protocol.Result{ResultType: protocol.ResultSuccess}, metrics.OutcomeSuccess},
		{"stayed out", &protocol.Result{}, "not_participant"},
		{"error", failed, protocol.CodeTimeout},
	} {
		if got := finishOutcome(tc.res); got != tc.want {
			t.Errorf("%s: outcome %q, want %q", tc.name, got, tc.want)
		}
	}
}
