package ceremony_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	decredecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"

	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/signer/ceremony"
)

// Malicious transports for the liar node. Each wraps the liar's end of a
// MemNetwork.

// halfTransport is one of two copies of the liar's party: it sends only to
// the honest nodes of its group and receives everything sent to the liar.
type halfTransport struct {
	base  ceremony.Transport
	group []string
	in    chan ceremony.Inbound
}

func (h halfTransport) Recv() <-chan ceremony.Inbound { return h.in }

func (h halfTransport) Send(ctx context.Context, m ceremony.Outbound) error {
	to := m.To
	if len(to) == 0 {
		to = h.group
	}
	var keep []string
	for _, n := range to {
		if slices.Contains(h.group, n) {
			keep = append(keep, n)
		}
	}
	if len(keep) == 0 {
		return nil
	}
	m.To = keep
	return h.base.Send(ctx, m)
}

// split runs the attack of issue 14: two independent copies of the liar's
// party, one per group of honest peers, each receiving all the liar's
// inbound messages.
func split(ctx context.Context, base ceremony.Transport, groups ...[]string) []ceremony.Transport {
	var out []ceremony.Transport
	var ins []chan ceremony.Inbound
	for _, g := range groups {
		h := halfTransport{base: base, group: g, in: make(chan ceremony.Inbound, 4096)}
		out, ins = append(out, h), append(ins, h.in)
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-base.Recv():
				for _, in := range ins {
					select {
					case in <- m:
					default: // a copy that stopped reading
					}
				}
			}
		}
	}()
	return out
}

// flipTransport sends victim a copy of the liar's broadcasts of one round
// (a tss-lib message type suffix) whose last byte is flipped: still a
// well-formed message, with another value.
type flipTransport struct {
	ceremony.Transport
	round, victim string
}

func (f flipTransport) Send(ctx context.Context, m ceremony.Outbound) error {
	if !m.Broadcast || !strings.HasSuffix(m.Round, "."+f.round) {
		return f.Transport.Send(ctx, m)
	}
	to := m.To
	if len(to) != 1 {
		panic("the driver sends one copy per recipient")
	}
	if to[0] == f.victim {
		m.Wire = slices.Clone(m.Wire)
		m.Wire[len(m.Wire)-1] ^= 0x01
	}
	return f.Transport.Send(ctx, m)
}

// falseEchoTransport corrupts the first digest the liar echoes to victim in
// each message: the liar reports a broadcast it never received.
type falseEchoTransport struct {
	ceremony.Transport
	victim string
}

func (f falseEchoTransport) Send(ctx context.Context, m ceremony.Outbound) error {
	w := m.Wire
	if len(m.To) == 1 && m.To[0] == f.victim && len(w) >= ceremony.EnvelopeHeaderLen &&
		(w[ceremony.EnvelopeHeaderLen-2] != 0 || w[ceremony.EnvelopeHeaderLen-1] != 0) {
		m.Wire = slices.Clone(w)
		m.Wire[ceremony.EnvelopeHeaderLen+ceremony.EchoIDLen] ^= 0x01
	}
	return f.Transport.Send(ctx, m)
}

// runFn runs one node's side of a ceremony and returns its output (public
// key, signature) or an error.
type runFn func(ctx context.Context, id string, tr ceremony.Transport) ([]byte, error)

type attackOutcome struct {
	out []byte
	err error
}

// attack runs the ceremony on ids with liar misbehaving as mode says and
// returns what every honest node returned.
func attack(t *testing.T, ids []string, liar, mode, round, victim string, run runFn) map[string]attackOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	liarCtx, stopLiar := context.WithCancel(ctx)
	defer stopLiar()
	net := ceremony.NewMemNetwork(ids)
	var honest []string
	for _, id := range ids {
		if id != liar {
			honest = append(honest, id)
		}
	}
	var liars []ceremony.Transport
	switch mode {
	case "split":
		half := len(honest) / 2
		liars = split(liarCtx, net.Transport(liar), honest[:half], honest[half:])
	case "flip":
		liars = []ceremony.Transport{flipTransport{Transport: net.Transport(liar), round: round, victim: victim}}
	case "false-echo":
		liars = []ceremony.Transport{falseEchoTransport{Transport: net.Transport(liar), victim: victim}}
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	var liarWG sync.WaitGroup
	for _, tr := range liars {
		liarWG.Add(1)
		go func() {
			defer liarWG.Done()
			_, _ = run(liarCtx, liar, tr)
		}()
	}
	res := map[string]attackOutcome{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range honest {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := run(ctx, id, net.Transport(id))
			mu.Lock()
			res[id] = attackOutcome{out, err}
			mu.Unlock()
		}()
	}
	wg.Wait()
	stopLiar()
	liarWG.Wait()
	return res
}

// keyMaterial is a 3-of-3 key (t = 2) of one key type, so that three
// nodes sign and the liar's broadcasts reach two honest signers.
type keyMaterial struct {
	pub    []byte
	ec     []*ecdsakeygen.LocalPartySaveData
	ed     []*eddsakeygen.LocalPartySaveData
	shares map[string]*big.Int
}

func threeOfThree(t *testing.T, kt string, ids []string, pre []*ecdsakeygen.LocalPreParams) keyMaterial {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	net := ceremony.NewMemNetwork(ids)
	k := keyMaterial{shares: map[string]*big.Int{}}
	if kt == protocol.KeyTypeSecp256k1 {
		k.ec = each(t, ids, func(i int, id string) (*ecdsakeygen.LocalPartySaveData, error) {
			return ceremony.KeygenECDSA(ctx, ceremony.Session{ID: "eq-kg3", Self: id, Parties: ids, Threshold: 2}, pre[i], net.Transport(id))
		})
		k.pub = ceremony.ECDSAPublicKey(k.ec[0].ECDSAPub)
		for i, id := range ids {
			k.shares[id] = k.ec[i].ShareID
		}
		return k
	}
	k.ed = each(t, ids, func(_ int, id string) (*eddsakeygen.LocalPartySaveData, error) {
		return ceremony.KeygenEdDSA(ctx, ceremony.Session{ID: "eq-kg3", Self: id, Parties: ids, Threshold: 2}, net.Transport(id))
	})
	k.pub = ceremony.EdDSAPublicKey(k.ed[0].EDDSAPub)
	for i, id := range ids {
		k.shares[id] = k.ed[i].ShareID
	}
	return k
}

// TestEquivocationIsCaught: a node that sends different broadcasts to
// different peers (hostile-input.md) in keygen, signing or resharing, of
// either key type, makes every honest node fail with ErrEquivocation naming
// it, and no honest node returns an output. The one exception is a lie in
// signing's last round (signing has no final echo round): tss-lib's final
// check refuses the bad signature at the victim, which names the liar if
// the peer with the good copy was still running to compare (else it fails
// with ErrParty); that peer may finish with a signature that verifies.
func TestEquivocationIsCaught(t *testing.T) {
	pre := fixtures.PreParams(t)
	ids, liar, victim := nodes(3), "node2", "node1"
	idx := func(id string) int { return slices.Index(ids, id) }
	msg := []byte("equivocation")
	digest := sha256.Sum256(msg)

	type row struct {
		name, op, mode string
		round          map[string]string // key type -> tss-lib message type; a key type without one skips the row
		mayFinish      []string          // may return a signature that verifies
		mayFail        []string          // may fail with ErrParty without naming the liar
		blameReporter  bool              // a false echo: the liar is the reporter, not the sender
	}
	both := map[string]string{protocol.KeyTypeEd25519: "", protocol.KeyTypeSecp256k1: ""}
	rows := []row{
		{name: "keygen, two copies of the liar", op: "keygen", mode: "split", round: both},
		{name: "keygen, final-round broadcast flipped", op: "keygen", mode: "flip", round: map[string]string{protocol.KeyTypeEd25519: "KGRound2Message2"}},
		{name: "keygen, false echo", op: "keygen", mode: "false-echo", round: map[string]string{protocol.KeyTypeEd25519: ""}, blameReporter: true},
		{name: "signing, two copies of the liar", op: "sign", mode: "split", round: both},
		{name: "signing, first-round broadcast flipped", op: "sign", mode: "flip", round: map[string]string{protocol.KeyTypeEd25519: "SignRound1Message", protocol.KeyTypeSecp256k1: "SignRound1Message2"}},
		{name: "signing, last-round broadcast flipped", op: "sign", mode: "flip", round: map[string]string{protocol.KeyTypeEd25519: "SignRound3Message", protocol.KeyTypeSecp256k1: "SignRound9Message"}, mayFinish: []string{"node0"}, mayFail: []string{victim}},
		{name: "reshare, two copies of the liar", op: "reshare", mode: "split", round: both},
		{name: "reshare, old committee's decommitment flipped", op: "reshare", mode: "flip", round: map[string]string{protocol.KeyTypeEd25519: "DGRound3Message2"}},
	}
	for _, kt := range []string{protocol.KeyTypeEd25519, protocol.KeyTypeSecp256k1} {
		t.Run(kt, func(t *testing.T) {
			key := threeOfThree(t, kt, ids, pre)
			ecdsa := kt == protocol.KeyTypeSecp256k1
			runs := map[string]runFn{
				"keygen": func(ctx context.Context, id string, tr ceremony.Transport) ([]byte, error) {
					s := ceremony.Session{ID: "eq-kg", Self: id, Parties: ids, Threshold: 1}
					if ecdsa {
						k, err := ceremony.KeygenECDSA(ctx, s, pre[idx(id)], tr)
						if err != nil || k == nil {
							return nil, err
						}
						return ceremony.ECDSAPublicKey(k.ECDSAPub), nil
					}
					k, err := ceremony.KeygenEdDSA(ctx, s, tr)
					if err != nil || k == nil {
						return nil, err
					}
					return ceremony.EdDSAPublicKey(k.EDDSAPub), nil
				},
				"sign": func(ctx context.Context, id string, tr ceremony.Transport) ([]byte, error) {
					s := ceremony.Session{ID: "eq-sign", Self: id, Parties: ids, Threshold: 2}
					if ecdsa {
						sig, err := ceremony.SignECDSA(ctx, s, *key.ec[idx(id)], digest[:], nil, tr)
						if err != nil || sig == nil {
							return nil, err
						}
						return append(pad32(sig.R), pad32(sig.S)...), nil
					}
					sig, err := ceremony.SignEdDSA(ctx, s, *key.ed[idx(id)], msg, tr)
					if err != nil || sig == nil {
						return nil, err
					}
					return sig.Signature, nil
				},
				"reshare": func(ctx context.Context, id string, tr ceremony.Transport) ([]byte, error) {
					s := ceremony.ReshareSession{ID: "eq-rs", Self: id, Old: ids, OldKeys: key.shares, OldThreshold: 2, New: ids, NewThreshold: 1, PubKey: key.pub}
					if ecdsa {
						k, err := ceremony.ReshareECDSA(ctx, s, key.ec[idx(id)], pre[3+idx(id)], tr)
						if err != nil || k == nil {
							return nil, err
						}
						return ceremony.ECDSAPublicKey(k.ECDSAPub), nil
					}
					k, err := ceremony.ReshareEdDSA(ctx, s, key.ed[idx(id)], tr)
					if err != nil || k == nil {
						return nil, err
					}
					return ceremony.EdDSAPublicKey(k.EDDSAPub), nil
				},
			}
			verify := func(sig []byte) bool {
				if !ecdsa {
					return ed25519.Verify(key.pub, msg, sig)
				}
				pk, err := secp256k1.ParsePubKey(key.pub)
				if err != nil || len(sig) != 64 {
					return false
				}
				var r, s secp256k1.ModNScalar
				r.SetByteSlice(sig[:32])
				s.SetByteSlice(sig[32:])
				return decredecdsa.NewSignature(&r, &s).Verify(digest[:], pk)
			}
			for _, tc := range rows {
				round, ok := tc.round[kt]
				if !ok {
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					start := time.Now()
					got := attack(t, ids, liar, tc.mode, round, victim, runs[tc.op])
					t.Logf("honest nodes done in %s", time.Since(start).Round(time.Millisecond))
					for _, id := range ids {
						if id == liar {
							continue
						}
						o := got[id]
						if o.err == nil && slices.Contains(tc.mayFinish, id) && tc.op == "sign" && verify(o.out) {
							continue
						}
						if slices.Contains(tc.mayFail, id) && !errors.Is(o.err, ceremony.ErrEquivocation) && errors.Is(o.err, ceremony.ErrParty) && o.out == nil {
							t.Logf("%s: %v", id, o.err)
							continue
						}
						var eq *ceremony.EquivocationError
						if !errors.Is(o.err, ceremony.ErrEquivocation) || !errors.As(o.err, &eq) {
							t.Errorf("%s: %v (output %x), want ErrEquivocation", id, o.err, o.out)
							continue
						}
						if o.out != nil {
							t.Errorf("%s: an output beside %v", id, o.err)
						}
						blamed := eq.Sender
						if tc.blameReporter {
							blamed = eq.Reporter
						}
						if blamed != liar || !strings.Contains(o.err.Error(), liar) {
							t.Errorf("%s: %q does not name %s", id, o.err, liar)
						}
						t.Logf("%s: %v", id, o.err)
					}
				})
			}
		})
	}
}
