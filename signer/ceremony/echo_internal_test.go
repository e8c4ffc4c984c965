package ceremony

import (
	"bytes"
	"context"
	"errors"
	"math/big"
	"testing"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"
	"github.com/bnb-chain/tss-lib/v3/tss"

	"github.com/hwsigner/signer/internal/fixtures"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	tag := sessionTag("s-1")
	e := envelope{kind: kindTSS, from: roleOld, to: roleOld | roleNew, wire: []byte("tss wire bytes")}
	for i := range 3 {
		e.entries = append(e.entries, echoEntry{id: idOf(tag, "node1", roleOld, "T"), d: digestOf(tag, "node1", roleOld, "T", []byte{byte(i)})})
	}
	got, ok := parseEnvelope(e.encode(tag), tag)
	if !ok || got.kind != e.kind || got.from != e.from || got.to != e.to || !bytes.Equal(got.wire, e.wire) || len(got.entries) != 3 || got.entries[2] != e.entries[2] {
		t.Fatalf("round trip: %+v, %v", got, ok)
	}
	echo := envelope{kind: kindEcho, entries: e.entries[:1]}.encode(tag)
	if got, ok := parseEnvelope(echo, tag); !ok || got.kind != kindEcho || len(got.entries) != 1 {
		t.Fatalf("echo round trip: %+v, %v", got, ok)
	}
	abort := envelope{kind: kindAbort, wire: abortReason(&EquivocationError{Sender: "node2", Round: "KGRound1Message", Reporter: "node1"})}.encode(tag)
	got, ok = parseEnvelope(abort, tag)
	if !ok || got.kind != kindAbort {
		t.Fatalf("abort round trip: %+v, %v", got, ok)
	}
	ec := newEchoes("s-1", "node0", []string{"node1", "node2"}, echoAwait)
	var eq *EquivocationError
	if err := ec.peerAborted("node1", got.wire); !errors.As(err, &eq) || !eq.Relayed || eq.Sender != "node2" || eq.Holder != "node1" || eq.Reporter != "node1" {
		t.Fatalf("relayed abort: %v", err)
	}

	good := e.encode(tag)
	bad := map[string][]byte{
		"other session (a replayed echo)": e.encode(sessionTag("s-2")),
		"version 1 envelope":              append([]byte{1, roleOld, roleOld}, e.wire...),
		"other version":                   append([]byte{3}, good[1:]...),
		"unknown kind":                    append([]byte{envelopeVersion, 9}, good[2:]...),
		"truncated entries":               good[:headerLen+entryLen+5],
		"no tss bytes":                    envelope{kind: kindTSS, from: roleOnly, to: roleOnly}.encode(tag),
		"echo with a role":                envelope{kind: kindEcho, from: roleOnly}.encode(tag),
		"echo with trailing bytes":        envelope{kind: kindEcho, wire: []byte{1}}.encode(tag),
		"short":                           good[:headerLen-1],
		"empty":                           nil,
	}
	for name, b := range bad {
		if _, ok := parseEnvelope(b, tag); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	// An abort's claims are checked for form: unknown nodes and odd round
	// labels make it a plain failure.
	for name, eq := range map[string]*EquivocationError{
		"unknown sender": {Sender: "node9", Round: "R", Reporter: "node1"},
		"odd round":      {Sender: "node2", Round: "R\nforged log line", Reporter: "node1"},
	} {
		if err := ec.peerAborted("node1", abortReason(eq)); errors.Is(err, ErrEquivocation) || !errors.Is(err, ErrParty) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestEchoesCompare(t *testing.T) {
	ec := newEchoes("s", "node0", []string{"node1", "node2"}, echoAwait)
	wire := []byte("round 1 of node2")
	typ := "binance.tsslib.eddsa.keygen.KGRound1Message"
	other := newEchoes("s", "node1", []string{"node0", "node2"}, echoAwait)
	// node1 echoes what it got from node2 before node0 got its own copy.
	if err := other.record("node2", roleOnly, typ, []byte("another round 1 of node2")); err != nil {
		t.Fatal(err)
	}
	claims := other.claimsFor("node0")
	if len(claims) != 1 || len(other.claimsFor("node0")) != 0 || len(other.claimsFor("node2")) != 0 {
		t.Fatalf("claims: %d, want 1, then none; none for the sender", len(claims))
	}
	if err := ec.check("node1", claims); err != nil {
		t.Fatal(err)
	}
	err := ec.record("node2", roleOnly, typ, wire)
	var eq *EquivocationError
	if !errors.As(err, &eq) || !errors.Is(err, ErrEquivocation) {
		t.Fatalf("record after a differing echo: %v", err)
	}
	want := "ceremony: node2's KGRound1Message broadcast differs between node0 and node1 (reported by node1)"
	if err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
	// The same copy everywhere: no error, in either order.
	a := newEchoes("s", "node0", []string{"node1", "node2"}, echoAwait)
	b := newEchoes("s", "node1", []string{"node0", "node2"}, echoAwait)
	if err := a.record("node2", roleOnly, typ, wire); err != nil {
		t.Fatal(err)
	}
	if err := b.record("node2", roleOnly, typ, wire); err != nil {
		t.Fatal(err)
	}
	if err := a.check("node1", b.claimsFor("node0")); err != nil {
		t.Fatal(err)
	}
	// Two nodes: nothing to compare, nothing echoed.
	two := newEchoes("s", "node0", []string{"node1"}, echoAwait)
	if err := two.record("node1", roleOnly, typ, wire); err != nil || len(two.claimsFor("node1")) != 0 || two.on {
		t.Fatal("a two-node ceremony echoes")
	}
}

// TestEveryCeremonySetsSessionNonce fails if any ceremony (keygen, signing,
// resharing; both key types) reaches the driver with a party whose
// parameters lack its session nonce, and TestDriveRefusesPartyWithoutNonce
// that the driver refuses such a party.
func TestEveryCeremonySetsSessionNonce(t *testing.T) {
	pre := fixtures.PreParams(t)[0]
	three := []string{"node0", "node1", "node2"}
	ks := []*big.Int{PartyKey("node0"), PartyKey("node1"), PartyKey("node2")}
	ecKey := ecdsakeygen.NewLocalPartySaveData(3)
	ecKey.Ks = ks
	edKey := eddsakeygen.NewLocalPartySaveData(3)
	edKey.Ks = ks
	keys := map[string]*big.Int{"node0": ks[0], "node1": ks[1], "node2": ks[2]}
	kg := Session{ID: "nonce-kg", Self: "node0", Parties: three, Threshold: 1}
	sg := Session{ID: "nonce-sign", Self: "node0", Parties: three, Threshold: 2}
	rs := ReshareSession{ID: "nonce-rs", Self: "node0", Old: three, OldKeys: keys, OldThreshold: 1, New: []string{"node0", "node1", "node3"}, NewThreshold: 1}
	digest := make([]byte, 32)
	for _, tc := range []struct {
		name    string
		session string
		roles   []byte
		run     func(ctx context.Context) error
	}{
		{"ECDSA keygen", kg.ID, []byte{roleOnly}, func(ctx context.Context) error { _, err := KeygenECDSA(ctx, kg, pre, nil); return err }},
		{"EdDSA keygen", kg.ID, []byte{roleOnly}, func(ctx context.Context) error { _, err := KeygenEdDSA(ctx, kg, nil); return err }},
		{"ECDSA signing", sg.ID, []byte{roleOnly}, func(ctx context.Context) error { _, err := SignECDSA(ctx, sg, ecKey, digest, nil, nil); return err }},
		{"EdDSA signing", sg.ID, []byte{roleOnly}, func(ctx context.Context) error { _, err := SignEdDSA(ctx, sg, edKey, digest, nil); return err }},
		{"ECDSA reshare", rs.ID, []byte{roleOld, roleNew}, func(ctx context.Context) error { _, err := ReshareECDSA(ctx, rs, &ecKey, pre, nil); return err }},
		{"EdDSA reshare", rs.ID, []byte{roleOld, roleNew}, func(ctx context.Context) error { _, err := ReshareEdDSA(ctx, rs, &edKey, nil); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errStop := errors.New("stopped by the test hook")
			var seen []byte
			hook := func(role byte, p *tss.Parameters) error {
				seen = append(seen, role)
				if p == nil || p.SessionNonce() == nil || p.SessionNonce().Cmp(SessionNonce(tc.session)) != 0 {
					t.Errorf("party of role %d built without the session nonce of %q", role, tc.session)
				}
				if len(seen) == len(tc.roles) {
					return errStop // before any party starts
				}
				return nil
			}
			err := tc.run(context.WithValue(context.Background(), paramsHookKey{}, hook))
			if !errors.Is(err, errStop) || !bytes.Equal(seen, tc.roles) {
				t.Fatalf("the driver saw roles %v (want %v): %v", seen, tc.roles, err)
			}
		})
	}
}

func TestDriveRefusesPartyWithoutNonce(t *testing.T) {
	s := Session{ID: "no-nonce", Self: "node0", Parties: []string{"node0", "node1", "node2"}, Threshold: 1}
	ps, _, err := s.params(tss.Ed25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	ec, _ := tss.GetCurveByName(tss.Ed25519)
	for name, nonce := range map[string]*big.Int{"no nonce": nil, "another session's": SessionNonce("other")} {
		p := tss.NewParameters(ec, tss.NewPeerContext(ps.sorted), ps.self, 3, 1)
		if nonce != nil {
			p.SetSessionNonce(nonce)
		}
		l := newLocal[*eddsakeygen.LocalPartySaveData](roleOnly, true)
		if err := l.build(p, func(out chan<- tss.Message, end chan<- *eddsakeygen.LocalPartySaveData) tss.Party {
			return eddsakeygen.NewLocalParty(p, out, end)
		}); err != nil {
			t.Fatal(err)
		}
		_, err := drive(context.Background(), newEchoes(s.ID, s.Self, []string{"node1", "node2"}, echoAwait), nil, directRouter{ps}, []*local[*eddsakeygen.LocalPartySaveData]{l}, 0)
		if !errors.Is(err, ErrBadParameters) || l.party.Running() {
			t.Errorf("%s: %v, want ErrBadParameters before the party starts", name, err)
		}
	}
}
