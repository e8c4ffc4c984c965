package routing

import (
	"errors"
	"strings"
	"testing"

	"github.com/hwsigner/signer/protocol"
)

func TestSubjects(t *testing.T) {
	type build func() (string, error)
	tests := []struct {
		name string
		f    build
		want string // "" = error
	}{
		{"keygen request", func() (string, error) { return KeygenRequestSubject("w1") }, "mpc.keygen_request.w1"},
		{"signing request", func() (string, error) { return SigningRequestSubject("w1") }, "mpc.signing_request.w1"},
		{"reshare request", func() (string, error) { return ReshareRequestSubject("w1") }, "mpc.reshare_request.w1"},
		{"request bad op", func() (string, error) { return RequestSubject("burn", "w1") }, ""},
		{"request bad wallet", func() (string, error) { return SigningRequestSubject("w.1") }, ""},
		{"request wildcard wallet", func() (string, error) { return SigningRequestSubject("*") }, ""},
		{"request empty wallet", func() (string, error) { return SigningRequestSubject("") }, ""},
		{"keygen result legacy", func() (string, error) { return KeygenResultSubject("", "w1") }, "mpc.mpc_keygen_result.w1"},
		{"keygen result scoped", func() (string, error) { return KeygenResultSubject("svcA", "w1") }, "mpc.mpc_keygen_result.svcA.w1"},
		{"keygen result bad client", func() (string, error) { return KeygenResultSubject("svc.A", "w1") }, ""},
		{"keygen result bad wallet", func() (string, error) { return KeygenResultSubject("svcA", "w>") }, ""},
		{"signing result legacy", func() (string, error) { return SigningResultSubject("") }, "mpc.mpc_signing_result.complete"},
		{"signing result scoped", func() (string, error) { return SigningResultSubject("svcA") }, "mpc.mpc_signing_result.svcA.complete"},
		{"signing result bad client", func() (string, error) { return SigningResultSubject("svc A") }, ""},
		{"reshare result legacy", func() (string, error) { return ReshareResultSubject("", "s1") }, "mpc.mpc_reshare_result.s1"},
		{"reshare result scoped", func() (string, error) { return ReshareResultSubject("a_b", "s1") }, "mpc.mpc_reshare_result.a_b.s1"},
		{"reshare result bad session", func() (string, error) { return ReshareResultSubject("a_b", "") }, ""},
		{"too long client", func() (string, error) { return SigningResultSubject(strings.Repeat("x", 65)) }, ""},
		{"result of keygen", func() (string, error) {
			return ResultSubject(&protocol.Result{Op: protocol.OpKeygen, ClientID: "svcB", WalletID: "w9"})
		}, "mpc.mpc_keygen_result.svcB.w9"},
		{"result of sign", func() (string, error) { return ResultSubject(&protocol.Result{Op: protocol.OpSign}) }, "mpc.mpc_signing_result.complete"},
		{"result of reshare", func() (string, error) {
			return ResultSubject(&protocol.Result{Op: protocol.OpReshare, ClientID: "c", SessionID: "s"})
		}, "mpc.mpc_reshare_result.c.s"},
		{"result without op", func() (string, error) { return ResultSubject(&protocol.Result{}) }, ""},
		{"filter keygen legacy", func() (string, error) { return ResultFilterSubject(protocol.OpKeygen, "") }, "mpc.mpc_keygen_result.*"},
		{"filter keygen scoped", func() (string, error) { return ResultFilterSubject(protocol.OpKeygen, "svcA") }, "mpc.mpc_keygen_result.svcA.*"},
		{"filter sign legacy", func() (string, error) { return ResultFilterSubject(protocol.OpSign, "") }, "mpc.mpc_signing_result.complete"},
		{"filter sign scoped", func() (string, error) { return ResultFilterSubject(protocol.OpSign, "svcA") }, "mpc.mpc_signing_result.svcA.complete"},
		{"filter reshare legacy", func() (string, error) { return ResultFilterSubject(protocol.OpReshare, "") }, "mpc.mpc_reshare_result.*"},
		{"filter reshare scoped", func() (string, error) { return ResultFilterSubject(protocol.OpReshare, "svcA") }, "mpc.mpc_reshare_result.svcA.*"},
		{"consumer keygen legacy", func() (string, error) { return ResultConsumerName(protocol.OpKeygen, "") }, "mpc_keygen_result"},
		{"consumer sign scoped", func() (string, error) { return ResultConsumerName(protocol.OpSign, "svcA") }, "mpc_signing_result_svcA"},
		{"consumer reshare a-b", func() (string, error) { return ResultConsumerName(protocol.OpReshare, "a-b") }, "mpc_reshare_result_a-b"},
		{"consumer reshare a_b", func() (string, error) { return ResultConsumerName(protocol.OpReshare, "a_b") }, "mpc_reshare_result_a_b"},
		{"consumer bad client", func() (string, error) { return ResultConsumerName(protocol.OpSign, "a.b") }, ""},
		{"round", func() (string, error) { return RoundSubject("9f86d081884c7d65", "node-1") }, "mpc.round.9f86d081884c7d65.node-1"},
		{"round bad session", func() (string, error) { return RoundSubject("s.1", "node-1") }, ""},
		{"round empty session", func() (string, error) { return RoundSubject("", "node-1") }, ""},
		{"round wildcard node", func() (string, error) { return RoundSubject("s1", "*") }, ""},
		{"round empty node", func() (string, error) { return RoundSubject("s1", "") }, ""},
		{"all rounds", func() (string, error) { return AllRoundsSubject(), nil }, "mpc.round.>"},
		{"node consumer", func() (string, error) { return NodeConsumerName("node-1") }, "node_node-1"},
		{"node consumer bad", func() (string, error) { return NodeConsumerName("node.1") }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.f()
			if tt.want == "" {
				if err == nil || !errors.Is(err, ErrInvalidSubject) || got != "" {
					t.Fatalf("got %q, %v; want an ErrInvalidSubject", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestParseRequestSubject(t *testing.T) {
	for _, op := range []string{protocol.OpKeygen, protocol.OpSign, protocol.OpReshare} {
		subj, err := RequestSubject(op, "wallet_1")
		if err != nil {
			t.Fatal(err)
		}
		gotOp, wallet, err := ParseRequestSubject(subj)
		if err != nil || gotOp != op || wallet != "wallet_1" {
			t.Fatalf("ParseRequestSubject(%s) = %s, %s, %v", subj, gotOp, wallet, err)
		}
	}
	for _, bad := range []string{"", "mpc", "mpc.signing_request", "mpc.signing_request.a.b", "x.signing_request.a",
		"mpc.mpc_signing_result.complete", "mpc.signing_request.a*"} {
		if _, _, err := ParseRequestSubject(bad); !errors.Is(err, ErrInvalidSubject) {
			t.Errorf("ParseRequestSubject(%q) = %v", bad, err)
		}
	}
}

func TestParseRoundSubject(t *testing.T) {
	tests := []struct {
		subject, session, node string // session "" = error
	}{
		{"mpc.round.s1.node-1", "s1", "node-1"},
		{"mpc.round.9f86d081884c7d65.n_2", "9f86d081884c7d65", "n_2"},
		{"", "", ""},
		{"mpc.round", "", ""},
		{"mpc.round.s1", "", ""},
		{"mpc.round.s1.node-1.x", "", ""},
		{"mpc.round..node-1", "", ""},
		{"mpc.round.s1.*", "", ""},
		{"mpc.round.s1.>", "", ""},
		{"x.round.s1.node-1", "", ""},
		{"mpc.rounds.s1.node-1", "", ""},
		{"mpc.signing_request.w1", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			session, node, err := ParseRoundSubject(tt.subject)
			if tt.session == "" {
				if !errors.Is(err, ErrInvalidSubject) || session != "" || node != "" {
					t.Fatalf("got %q, %q, %v; want an ErrInvalidSubject", session, node, err)
				}
				return
			}
			if err != nil || session != tt.session || node != tt.node {
				t.Fatalf("got %q, %q, %v; want %q, %q", session, node, err, tt.session, tt.node)
			}
			built, err := RoundSubject(session, node)
			if err != nil || built != tt.subject {
				t.Fatalf("RoundSubject(%q, %q) = %q, %v; want %q", session, node, built, err, tt.subject)
			}
		})
	}
}

// Round messages travel on core NATS: no stream captures a round subject, and
// AllRoundsSubject matches every one of them.
func TestRoundSubjectsOutsideStreams(t *testing.T) {
	subj, err := RoundSubject("s1", "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if !matches(AllRoundsSubject(), subj) {
		t.Errorf("%s does not match %s", AllRoundsSubject(), subj)
	}
	for _, f := range append(RequestStreamSubjects(), ResultStreamSubjects()...) {
		if matches(f, subj) {
			t.Errorf("stream subject %s captures round subject %s", f, subj)
		}
	}
}

// matches reports whether NATS subject subj matches filter (tokens, '*', '>').
func matches(filter, subj string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subj, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || tok != "*" && tok != s[i] {
			return false
		}
	}
	return len(f) == len(s)
}

// Every result subject is matched by exactly the filter of its own client.
func TestFiltersDoNotOverlap(t *testing.T) {
	clients := []string{"", "svcA", "svcB", "a-b", "a_b", "complete"}
	for _, op := range []string{protocol.OpKeygen, protocol.OpSign, protocol.OpReshare} {
		for _, owner := range clients {
			res := &protocol.Result{Op: op, ClientID: owner, WalletID: "complete", SessionID: "s1"}
			subj, err := ResultSubject(res)
			if err != nil {
				t.Fatal(err)
			}
			inStream := false
			for _, s := range ResultStreamSubjects() {
				inStream = inStream || matches(s, subj)
			}
			if !inStream {
				t.Fatalf("%s not captured by MPC_RESULTS", subj)
			}
			for _, c := range clients {
				filter, _ := ResultFilterSubject(op, c)
				if got := matches(filter, subj); got != (c == owner) {
					t.Errorf("filter %s vs subject %s: match=%v", filter, subj, got)
				}
			}
		}
	}
}

func TestMsgIDs(t *testing.T) {
	const hx = "2d711642b726b04401627ca9fbac32f5" // sha256("x")[:16], hex
	const he = "e3b0c44298fc1c149afbf4c8996fb924" // sha256("")[:16], hex
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"request scoped", RequestMsgID("svcA", "r1", []byte("x")), "req.svcA.r1." + hx},
		{"request legacy", RequestMsgID("", "r1", []byte("x")), "req..r1." + hx},
		{"request empty body", RequestMsgID("svcA", "r1", nil), "req.svcA.r1." + he},
		{"result scoped", ResultMsgID("svcA", "r1", "node-1", []byte("x")), "result.svcA.r1.node-1." + hx},
		{"result legacy", ResultMsgID("", "r1", "node-1", []byte("x")), "result..r1.node-1." + hx},
		{"result empty body", ResultMsgID("svcA", "r1", "node-1", []byte{}), "result.svcA.r1.node-1." + he},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
	// Distinct inputs give distinct ids.
	ids := map[string]string{}
	for name, id := range map[string]string{
		"client":  ResultMsgID("svcB", "r1", "node-1", []byte("x")),
		"request": ResultMsgID("svcA", "r2", "node-1", []byte("x")),
		"node":    ResultMsgID("svcA", "r1", "node-2", []byte("x")),
		"bytes":   ResultMsgID("svcA", "r1", "node-1", []byte("y")),
		"base":    ResultMsgID("svcA", "r1", "node-1", []byte("x")),
		"req":     RequestMsgID("svcA", "r1", []byte("x")),
	} {
		if other, dup := ids[id]; dup {
			t.Fatalf("%s and %s share id %q", name, other, id)
		}
		ids[id] = name
	}
}
