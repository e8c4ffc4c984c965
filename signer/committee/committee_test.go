package committee

import (
	"errors"
	"fmt"
	"math/big"
	"slices"
	"testing"
)

func set(ids ...string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

var five = []string{"node0", "node1", "node2", "node3", "node4"}

func TestKeygen(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster []string
		ready   map[string]bool
		msg     string // "" when the rule holds
	}{
		{"all ready", five[:3], set(five...), ""},
		{"extra ready nodes do not matter", five[:3], set("node0", "node1", "node2", "stranger"), ""},
		{"one missing", five[:3], set("node0", "node2"), "keygen needs every committee member; node1 is not ready"},
		{"first missing is named", five[:3], set("node2"), "keygen needs every committee member; node0 is not ready"},
		{"nobody ready", five[:3], nil, "keygen needs every committee member; node0 is not ready"},
		{"empty cluster", nil, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Keygen(tc.cluster, tc.ready)
			checkRule(t, err, ErrNotReady, tc.msg)
		})
	}
}

// checkRule: err is nil when msg is empty, else it matches rule and reads
// msg.
func checkRule(t *testing.T, err, rule error, msg string) {
	t.Helper()
	if msg == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if !errors.Is(err, rule) {
		t.Fatalf("error %v does not match %v", err, rule)
	}
	if err.Error() != msg {
		t.Fatalf("message\n got %q\nwant %q", err.Error(), msg)
	}
}

func TestSigners(t *testing.T) {
	all := set(five...)
	some := set("node0", "node2", "node3", "node4", "stranger")
	// Golden sets: the choice every node of a running cluster makes, so it
	// must never change.
	for _, tc := range []struct {
		request   string
		committee []string
		ready     map[string]bool
		t         int
		want      []string
	}{
		{"req-1", five, all, 1, []string{"node3", "node4"}},
		{"req-1", five, all, 2, []string{"node0", "node3", "node4"}},
		{"req-1", five, some, 2, []string{"node0", "node3", "node4"}},
		{"req-1", five[:3], all, 1, []string{"node0", "node2"}},
		{"req-2", five, all, 1, []string{"node1", "node3"}},
		{"req-2", five, all, 2, []string{"node0", "node1", "node3"}},
		{"req-2", five, some, 2, []string{"node0", "node2", "node3"}},
		{"req-2", five[:3], all, 1, []string{"node0", "node1"}},
		{"req-3", five, all, 1, []string{"node0", "node1"}},
		{"req-3", five, all, 2, []string{"node0", "node1", "node2"}},
		{"req-3", five, some, 2, []string{"node0", "node2", "node4"}},
		{"r", five, all, 1, []string{"node0", "node2"}},
		{"r", five, all, 2, []string{"node0", "node2", "node3"}},
		{"", five, all, 1, []string{"node0", "node4"}},
		{"", five, all, 2, []string{"node0", "node1", "node4"}},
		{"", five, some, 2, []string{"node0", "node2", "node4"}},
		{"7f3c", five, all, 2, []string{"node0", "node2", "node3"}},
		{"7f3c", five[:3], all, 1, []string{"node0", "node2"}},
		{"exactly enough", five[:3], set("node1", "node2"), 1, []string{"node1", "node2"}},
		{"t=0", five[:3], set("node1"), 0, []string{"node1"}},
	} {
		t.Run(tc.request, func(t *testing.T) {
			committee := slices.Clone(tc.committee)
			got, err := Signers(tc.request, committee, tc.ready, tc.t)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if !slices.Equal(committee, tc.committee) {
				t.Fatalf("committee modified: %q", committee)
			}
			again, _ := Signers(tc.request, committee, tc.ready, tc.t)
			if !slices.Equal(again, got) {
				t.Fatalf("second choice %q differs from the first %q", again, got)
			}
		})
	}
}

func TestSignersTooFewReady(t *testing.T) {
	for _, tc := range []struct {
		name      string
		committee []string
		ready     map[string]bool
		t         int
		msg       string
	}{
		{"one short", five[:3], set("node0"), 1, "fewer than 2 committee members are ready"},
		{"ready non-members do not count", five[:3], set("node0", "node7", "node8"), 1, "fewer than 2 committee members are ready"},
		{"nobody ready", five, nil, 2, "fewer than 3 committee members are ready"},
		{"empty committee", nil, set(five...), 0, "fewer than 1 committee members are ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Signers("req", tc.committee, tc.ready, tc.t)
			if got != nil {
				t.Fatalf("signers %q chosen", got)
			}
			checkRule(t, err, ErrNotReady, tc.msg)
		})
	}
	if _, err := Signers("req", five, set(five...), -1); err == nil {
		t.Fatal("negative threshold accepted")
	}
}

func TestReshareParticipants(t *testing.T) {
	cluster := five[:4]
	for _, tc := range []struct {
		name  string
		self  string
		ready map[string]bool
		next  []string
		want  []string
		rule  error
		msg   string
	}{
		{"all ready", "node0", set(five...), []string{"node0", "node1", "node2"}, cluster, nil, ""},
		{"self counts although not ready yet", "node3", set("node0", "node1", "node2"), []string{"node1", "node3"},
			cluster, nil, ""},
		{"a not-ready node outside the new committee stays out", "node0", set("node0", "node1", "node2"), []string{"node0", "node1"},
			[]string{"node0", "node1", "node2"}, nil, ""},
		{"ready strangers are no participants", "node0", set("node0", "node1", "node9"), []string{"node0", "node1"},
			[]string{"node0", "node1"}, nil, ""},
		{"new member not ready", "node0", set("node0", "node1"), []string{"node0", "node2", "node3"},
			nil, ErrNotReady, "the new committee member node2 is not ready"},
		{"new member outside the cluster", "node0", set(five...), []string{"node0", "node4"},
			nil, ErrNotMember, "node node4 is not a member of this cluster"},
		{"membership is checked before readiness", "node0", set("node0"), []string{"node1", "node4"},
			nil, ErrNotMember, "node node4 is not a member of this cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReshareParticipants(cluster, tc.self, tc.ready, tc.next)
			checkRule(t, err, tc.rule, tc.msg)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("participants %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPlanReshare(t *testing.T) {
	old := []string{"node0", "node1", "node2"}
	holder := func(id string) Holding {
		return Holding{Holds: true, Epoch: 3, Committee: old, Threshold: 1, PubKey: "02ab", ShareKey: map[string]string{"node0": "1a", "node1": "2b", "node2": "3c", "node3": "4d"}[id], Owner: "svcA"}
	}
	with := func(h Holding, f func(*Holding)) Holding { f(&h); return h }
	for _, tc := range []struct {
		name     string
		holdings map[string]Holding
		rule     error
		msg      string
		old      []string // the plan's old parties when the rules hold
	}{
		{"every holder", map[string]Holding{"node0": holder("node0"), "node1": holder("node1"), "node2": holder("node2"), "node3": {}},
			nil, "", old},
		{"t+1 holders are enough", map[string]Holding{"node2": holder("node2"), "node0": holder("node0"), "node3": {}},
			nil, "", []string{"node0", "node2"}},
		{"no holder", map[string]Holding{"node0": {}, "node3": {}},
			ErrNoHolder, "no ready node holds a secp256k1 key of wallet w1", nil},
		{"no announcement", nil,
			ErrNoHolder, "no ready node holds a secp256k1 key of wallet w1", nil},
		{"too few holders", map[string]Holding{"node1": holder("node1"), "node3": {}},
			ErrNotReady, "1 of the old committee [node0 node1 node2] are ready, 2 needed", nil},
		{"epochs differ", map[string]Holding{"node0": holder("node0"), "node1": with(holder("node1"), func(h *Holding) { h.Epoch = 4 })},
			ErrHoldersDiffer, "node: the old committee's members disagree about the wallet: node1 has epoch 4, committee [node0 node1 node2], threshold 1; another holder has epoch 3, committee [node0 node1 node2], threshold 1", nil},
		{"thresholds differ", map[string]Holding{"node0": holder("node0"), "node1": with(holder("node1"), func(h *Holding) { h.Threshold = 2 })},
			ErrHoldersDiffer, "node: the old committee's members disagree about the wallet: node1 has epoch 3, committee [node0 node1 node2], threshold 2; another holder has epoch 3, committee [node0 node1 node2], threshold 1", nil},
		{"committees differ", map[string]Holding{"node0": holder("node0"), "node1": with(holder("node1"), func(h *Holding) { h.Committee = []string{"node1", "node0", "node2"} })},
			ErrHoldersDiffer, "node: the old committee's members disagree about the wallet: node1 has epoch 3, committee [node1 node0 node2], threshold 1; another holder has epoch 3, committee [node0 node1 node2], threshold 1", nil},
		{"public keys differ", map[string]Holding{"node0": holder("node0"), "node2": with(holder("node2"), func(h *Holding) { h.PubKey = "02ac" })},
			ErrHoldersDiffer, "node: the old committee's members disagree about the wallet: node2 has epoch 3, committee [node0 node1 node2], threshold 1; another holder has epoch 3, committee [node0 node1 node2], threshold 1", nil},
		{"owners differ", map[string]Holding{"node0": holder("node0"), "node1": with(holder("node1"), func(h *Holding) { h.Owner = "svcB" })},
			ErrHoldersDiffer, "node: the old committee's members disagree about the wallet: node1 and another holder name different owners", nil},
		{"one holder names a legacy owner", map[string]Holding{"node0": with(holder("node0"), func(h *Holding) { h.Owner = "" }), "node2": holder("node2")},
			ErrHoldersDiffer, "node: the old committee's members disagree about the wallet: node2 and another holder name different owners", nil},
		{"share outside its committee", map[string]Holding{"node0": holder("node0"), "node3": holder("node3")},
			ErrHoldersDiffer, "node: the old committee's members disagree about the wallet: node3 holds a share outside its committee", nil},
		{"first holder outside its committee", map[string]Holding{"node0": with(holder("node0"), func(h *Holding) { h.Committee = []string{"node1", "node2"} })},
			ErrHoldersDiffer, "node: the old committee's members disagree about the wallet: node0 holds a share outside its committee", nil},
		{"malformed share key", map[string]Holding{"node0": holder("node0"), "node1": with(holder("node1"), func(h *Holding) { h.ShareKey = "xyz" })},
			ErrHoldersDiffer, "node: the old committee's members disagree about the wallet: node1 announced a malformed share key", nil},
		{"empty share key", map[string]Holding{"node0": with(holder("node0"), func(h *Holding) { h.ShareKey = "" }), "node1": holder("node1")},
			ErrHoldersDiffer, "node: the old committee's members disagree about the wallet: node0 announced a malformed share key", nil},
		{"public key not hex", map[string]Holding{"node0": with(holder("node0"), func(h *Holding) { h.PubKey = "zz" }), "node1": with(holder("node1"), func(h *Holding) { h.PubKey = "zz" })},
			ErrHoldersDiffer, "node: the old committee's members disagree about the wallet: malformed public key", nil},
		{"public key empty", map[string]Holding{"node0": with(holder("node0"), func(h *Holding) { h.PubKey = "" }), "node1": with(holder("node1"), func(h *Holding) { h.PubKey = "" })},
			ErrHoldersDiffer, "node: the old committee's members disagree about the wallet: malformed public key", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanReshare(tc.holdings, "secp256k1", "w1")
			checkRule(t, err, tc.rule, tc.msg)
			if err != nil {
				if p != nil {
					t.Fatalf("plan %+v with an error", p)
				}
				return
			}
			if !slices.Equal(p.Old, tc.old) {
				t.Fatalf("old parties %q, want %q", p.Old, tc.old)
			}
			if p.OldThreshold != 1 || p.Epoch != 3 || string(p.PubKey) != "\x02\xab" || p.Owner != "svcA" {
				t.Fatalf("plan threshold %d epoch %d pub %x owner %q", p.OldThreshold, p.Epoch, p.PubKey, p.Owner)
			}
			if len(p.Keys) != len(tc.old) {
				t.Fatalf("%d share keys for %d old parties", len(p.Keys), len(tc.old))
			}
			for _, id := range tc.old {
				want, _ := new(big.Int).SetString(holder(id).ShareKey, 16)
				if p.Keys[id].Cmp(want) != 0 {
					t.Fatalf("%s: share key %x, want %x", id, p.Keys[id], want)
				}
			}
		})
	}
}

func TestRerun(t *testing.T) {
	all := []string{"node0", "node1", "node2", "node3", "node4"}
	allReady := map[string]bool{"node0": true, "node1": true, "node2": true, "node3": true, "node4": true}
	for _, tc := range []struct {
		name      string
		committee []string
		excluded  []string
		ready     map[string]bool
		t         int
		wantErr   error
		check     func(t *testing.T, got []string)
	}{
		{name: "excluded left out", committee: all, excluded: []string{"node1", "node3"}, ready: allReady, t: 2,
			check: func(t *testing.T, got []string) {
				if !slices.Equal(got, []string{"node0", "node2", "node4"}) {
					t.Fatalf("got %v", got)
				}
			}},
		{name: "ready first", committee: all, excluded: []string{"node0"}, ready: map[string]bool{"node3": true, "node4": true}, t: 1,
			check: func(t *testing.T, got []string) {
				if !slices.Equal(got, []string{"node3", "node4"}) {
					t.Fatalf("got %v", got)
				}
			}},
		{name: "not ready fill in", committee: all[:3], excluded: []string{"node0"}, ready: map[string]bool{"node1": true}, t: 1,
			check: func(t *testing.T, got []string) {
				if !slices.Equal(got, []string{"node1", "node2"}) {
					t.Fatalf("got %v", got)
				}
			}},
		{name: "too few left", committee: all[:3], excluded: []string{"node0", "node1"}, ready: allReady, t: 1, wantErr: ErrNotReady},
		{name: "negative threshold", committee: all, ready: allReady, t: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Rerun("req-1", 1, tc.committee, tc.excluded, tc.ready, tc.t)
			if tc.check == nil {
				if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, got)
			again, _ := Rerun("req-1", 1, tc.committee, tc.excluded, tc.ready, tc.t)
			if !slices.Equal(got, again) {
				t.Fatalf("not deterministic: %v then %v", got, again)
			}
		})
	}
	// Another attempt number orders the members anew: over many requests
	// every non-excluded member gets chosen.
	seen := map[string]bool{}
	for i := range 40 {
		got, err := Rerun(fmt.Sprintf("req-%d", i), 1+i%3, all, []string{"node2"}, allReady, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range got {
			seen[id] = true
		}
	}
	if len(seen) != 4 || seen["node2"] {
		t.Fatalf("members chosen over 40 requests: %v", seen)
	}
}
