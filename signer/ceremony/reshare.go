package ceremony

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"sync"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	ecdsaresharing "github.com/bnb-chain/tss-lib/v3/ecdsa/resharing"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"
	eddsaresharing "github.com/bnb-chain/tss-lib/v3/eddsa/resharing"
	"github.com/bnb-chain/tss-lib/v3/tss"
)

// ReshareSession describes one resharing ceremony as one node sees it.
//
// tss-lib resharing has two committees. A node in both runs two tss parties
// (old and new) with distinct keys: the old party at the key its share holds
// (OldKeys), the new one at NextPartyKey. Both talk over the node's one
// Transport: every message carries a small envelope (the sending party's
// committee and the receiving node's committees), inside the payload the
// transport signs and, for P2P messages, encrypts; messages between the two
// parties of one node never leave the process.
type ReshareSession struct {
	ID   string
	Self string
	// Old are the old committee members taking part (each holds a share);
	// at least OldThreshold+1 of them.
	Old          []string
	OldKeys      map[string]*big.Int // each old party's share key (its ShareID)
	OldThreshold int
	// New is the new committee; NewThreshold its t (t+1 sign).
	New          []string
	NewThreshold int
	// PubKey, when set, is the wallet's public key (33-byte compressed
	// secp256k1 or 32-byte ed25519): a new share for another key fails.
	PubKey []byte
}

// Committee roles inside one node, as carried in the envelope.
const (
	roleOld byte = 1
	roleNew byte = 2
)

const envelopeVersion = 1

type reshareParties struct {
	oldCtx, newCtx *tss.PeerContext
	byRole         map[byte]map[string]*tss.PartyID // role -> node -> party
	owner          map[*tss.PartyID]byte            // party -> role
}

func (s ReshareSession) build() (*reshareParties, error) {
	if s.ID == "" || s.Self == "" {
		return nil, fmt.Errorf("%w: empty session ID or self", ErrBadParameters)
	}
	if s.OldThreshold < 1 || len(s.Old) < s.OldThreshold+1 {
		return nil, fmt.Errorf("%w: %d old parties for old threshold %d", ErrBadParameters, len(s.Old), s.OldThreshold)
	}
	if s.NewThreshold < 1 || s.NewThreshold >= len(s.New) {
		return nil, fmt.Errorf("%w: new threshold %d with %d new parties", ErrBadParameters, s.NewThreshold, len(s.New))
	}
	rp := &reshareParties{byRole: map[byte]map[string]*tss.PartyID{roleOld: {}, roleNew: {}}, owner: map[*tss.PartyID]byte{}}
	keys := map[string]bool{}
	mk := func(role byte, nodes []string, key func(string) (*big.Int, error)) (*tss.PeerContext, error) {
		ids := make(tss.UnSortedPartyIDs, 0, len(nodes))
		for _, n := range nodes {
			if n == "" || rp.byRole[role][n] != nil {
				return nil, fmt.Errorf("%w: empty or duplicate participant %q", ErrBadParameters, n)
			}
			k, err := key(n)
			if err != nil {
				return nil, err
			}
			if keys[k.String()] {
				return nil, fmt.Errorf("%w: party key of %s used twice", ErrBadParameters, n)
			}
			keys[k.String()] = true
			suffix := "#old"
			if role == roleNew {
				suffix = "#new"
			}
			id := tss.NewPartyID(n+suffix, n, k)
			rp.byRole[role][n] = id
			rp.owner[id] = role
			ids = append(ids, id)
		}
		return tss.NewPeerContext(tss.SortPartyIDs(ids)), nil
	}
	var err error
	if rp.oldCtx, err = mk(roleOld, s.Old, func(n string) (*big.Int, error) {
		k := s.OldKeys[n]
		if k == nil || (k.Cmp(PartyKey(n)) != 0 && k.Cmp(AltPartyKey(n)) != 0) {
			return nil, fmt.Errorf("%w: old party %s has no valid share key", ErrBadParameters, n)
		}
		return k, nil
	}); err != nil {
		return nil, err
	}
	if rp.newCtx, err = mk(roleNew, s.New, func(n string) (*big.Int, error) {
		return NextPartyKey(n, s.OldKeys[n]), nil
	}); err != nil {
		return nil, err
	}
	if rp.byRole[roleOld][s.Self] == nil && rp.byRole[roleNew][s.Self] == nil {
		return nil, ErrNotParticipant
	}
	return rp, nil
}

func (s ReshareSession) params(rp *reshareParties, curve tss.CurveName, role byte) *tss.ReSharingParameters {
	ec, _ := tss.GetCurveByName(curve)
	p := tss.NewReSharingParameters(ec, rp.oldCtx, rp.newCtx, rp.byRole[role][s.Self],
		len(s.Old), s.OldThreshold, len(s.New), s.NewThreshold)
	p.SetSessionNonce(SessionNonce(s.ID))
	return p
}

// ReshareECDSA runs secp256k1 resharing. old is this node's share when it is
// an old party (it is not modified: tss-lib zeroes a copy), pre its fresh
// pre-params when it is a new party. It returns the new share for a new
// party and nil for an old-only party, once its parties finished.
func ReshareECDSA(ctx context.Context, s ReshareSession, old *ecdsakeygen.LocalPartySaveData, pre *ecdsakeygen.LocalPreParams, tr Transport) (*ecdsakeygen.LocalPartySaveData, error) {
	rp, err := s.build()
	if err != nil {
		return nil, err
	}
	var locals []*local[*ecdsakeygen.LocalPartySaveData]
	if rp.byRole[roleOld][s.Self] != nil {
		if old == nil {
			return nil, fmt.Errorf("%w: old party without a share", ErrBadParameters)
		}
		cp, err := copyECDSA(old)
		if err != nil {
			return nil, err
		}
		l := newLocal[*ecdsakeygen.LocalPartySaveData](roleOld)
		p := s.params(rp, tss.Secp256k1, roleOld)
		if l.party, err = newPartySafe(func() tss.Party { return ecdsaresharing.NewLocalParty(p, *cp, l.out, l.end) }); err != nil {
			return nil, err
		}
		locals = append(locals, l)
	}
	if rp.byRole[roleNew][s.Self] != nil {
		if pre == nil || !pre.ValidateWithProof() {
			return nil, fmt.Errorf("%w: a new ECDSA party needs complete pre-params", ErrBadParameters)
		}
		save := ecdsakeygen.NewLocalPartySaveData(len(s.New))
		save.LocalPreParams = *pre
		l := newLocal[*ecdsakeygen.LocalPartySaveData](roleNew)
		p := s.params(rp, tss.Secp256k1, roleNew)
		if l.party, err = newPartySafe(func() tss.Party { return ecdsaresharing.NewLocalParty(p, save, l.out, l.end) }); err != nil {
			return nil, err
		}
		locals = append(locals, l)
	}
	res, err := runReshare(ctx, s, rp, locals, tr)
	if err != nil || res == nil {
		return nil, err
	}
	if res.Xi == nil || res.ECDSAPub == nil {
		return nil, fmt.Errorf("%w: new party ended without a share", ErrParty)
	}
	if s.PubKey != nil && !bytes.Equal(ECDSAPublicKey(res.ECDSAPub), s.PubKey) {
		return nil, fmt.Errorf("%w: the reshared public key differs from the wallet's", ErrParty)
	}
	return res, nil
}

// ReshareEdDSA runs ed25519 resharing; see ReshareECDSA.
func ReshareEdDSA(ctx context.Context, s ReshareSession, old *eddsakeygen.LocalPartySaveData, tr Transport) (*eddsakeygen.LocalPartySaveData, error) {
	rp, err := s.build()
	if err != nil {
		return nil, err
	}
	var locals []*local[*eddsakeygen.LocalPartySaveData]
	if rp.byRole[roleOld][s.Self] != nil {
		if old == nil {
			return nil, fmt.Errorf("%w: old party without a share", ErrBadParameters)
		}
		cp, err := copyEdDSA(old)
		if err != nil {
			return nil, err
		}
		l := newLocal[*eddsakeygen.LocalPartySaveData](roleOld)
		p := s.params(rp, tss.Ed25519, roleOld)
		if l.party, err = newPartySafe(func() tss.Party { return eddsaresharing.NewLocalParty(p, *cp, l.out, l.end) }); err != nil {
			return nil, err
		}
		locals = append(locals, l)
	}
	if rp.byRole[roleNew][s.Self] != nil {
		save := eddsakeygen.NewLocalPartySaveData(len(s.New))
		l := newLocal[*eddsakeygen.LocalPartySaveData](roleNew)
		p := s.params(rp, tss.Ed25519, roleNew)
		if l.party, err = newPartySafe(func() tss.Party { return eddsaresharing.NewLocalParty(p, save, l.out, l.end) }); err != nil {
			return nil, err
		}
		locals = append(locals, l)
	}
	res, err := runReshare(ctx, s, rp, locals, tr)
	if err != nil || res == nil {
		return nil, err
	}
	if res.Xi == nil || res.EDDSAPub == nil {
		return nil, fmt.Errorf("%w: new party ended without a share", ErrParty)
	}
	if s.PubKey != nil && !bytes.Equal(EdDSAPublicKey(res.EDDSAPub), s.PubKey) {
		return nil, fmt.Errorf("%w: the reshared public key differs from the wallet's", ErrParty)
	}
	return res, nil
}

// local is one tss party of this node.
type local[T any] struct {
	role  byte
	party tss.Party
	out   chan tss.Message
	end   chan T
	inbox chan delivery
}

type delivery struct {
	from *tss.PartyID
	bc   bool
	wire []byte
}

func newLocal[T any](role byte) *local[T] {
	return &local[T]{role: role, out: make(chan tss.Message, chanCap), end: make(chan T, 1), inbox: make(chan delivery, chanCap)}
}

// runReshare drives this node's parties (one or two) to their end and
// returns the new party's result (zero value for an old-only node).
func runReshare[T any](ctx context.Context, s ReshareSession, rp *reshareParties, locals []*local[T], tr Transport) (T, error) {
	var zero T
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 8)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	byRole := map[byte]*local[T]{}
	for _, l := range locals {
		byRole[l.role] = l
	}
	var sendMu sync.Mutex // one route at a time keeps a party's messages in order
	route := func(sendCtx context.Context, from byte, msg tss.Message) error {
		wire, routing, err := msg.WireBytes()
		if err != nil {
			return fmt.Errorf("%w: encode message: %v", ErrParty, err)
		}
		masks := map[string]byte{}
		var order []string
		self := rp.byRole[from][s.Self]
		for _, to := range routing.To {
			if to == nil || to.Id == self.Id {
				continue // never back to the sender
			}
			role, node := rp.owner[to], to.Moniker
			if role == 0 {
				return fmt.Errorf("%w: message to unknown party %s", ErrParty, to.Id)
			}
			if masks[node] == 0 {
				order = append(order, node)
			}
			masks[node] |= role
		}
		sendMu.Lock()
		defer sendMu.Unlock()
		for _, node := range order {
			if node == s.Self {
				for _, r := range []byte{roleOld, roleNew} {
					if masks[node]&r != 0 && byRole[r] != nil {
						select {
						case byRole[r].inbox <- delivery{from: self, bc: routing.IsBroadcast, wire: wire}:
						case <-sendCtx.Done():
							return sendCtx.Err()
						}
					}
				}
				continue
			}
			env := append([]byte{envelopeVersion, from, masks[node]}, wire...)
			o := Outbound{To: []string{node}, Broadcast: routing.IsBroadcast, Round: msg.Type(), Wire: env}
			if err := tr.Send(sendCtx, o); err != nil {
				return fmt.Errorf("send %s: %w", o.Round, err)
			}
		}
		return nil
	}

	var wg sync.WaitGroup
	for _, l := range locals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case msg := <-l.out:
					if err := route(parent, l.role, msg); err != nil {
						fail(err)
						return
					}
				}
			}
		}()
	}
	for _, l := range locals {
		if err := safeStart(l.party); err != nil {
			cancel()
			wg.Wait()
			return zero, err
		}
	}
	for _, l := range locals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case d := <-l.inbox:
					if err := safeUpdate(l.party, d.wire, d.from, d.bc); err != nil {
						fail(err)
						return
					}
				}
			}
		}()
	}
	// Inbound dispatcher: unwraps the envelope and feeds the right party.
	wg.Add(1)
	go func() {
		defer wg.Done()
		in := tr.Recv()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-in:
				if !ok {
					return
				}
				if len(m.Wire) < 3 || m.Wire[0] != envelopeVersion {
					continue
				}
				from := rp.byRole[m.Wire[1]][m.From] // the sending node's party, as the transport authenticated it
				if from == nil {
					continue
				}
				for _, r := range []byte{roleOld, roleNew} {
					if m.Wire[2]&r == 0 || byRole[r] == nil {
						continue
					}
					select {
					case byRole[r].inbox <- delivery{from: from, bc: m.Broadcast, wire: m.Wire[3:]}:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()

	type ended struct {
		role byte
		val  T
	}
	ends := make(chan ended, len(locals))
	for _, l := range locals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case v := <-l.end:
				ends <- ended{l.role, v}
			case <-ctx.Done():
			}
		}()
	}
	var res T
	var err error
	for pending := len(locals); pending > 0 && err == nil; {
		select {
		case e := <-ends:
			pending--
			if e.role == roleNew {
				res = e.val
			}
		case err = <-errc:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	cancel()
	wg.Wait()
	if err != nil {
		return zero, err
	}
	// A party's last messages can still sit in its out channel.
	for _, l := range locals {
		for done := false; !done; {
			select {
			case msg := <-l.out:
				if ferr := route(parent, l.role, msg); ferr != nil {
					return res, ferr
				}
			default:
				done = true
			}
		}
	}
	return res, nil
}

// copyECDSA deep-copies a share: tss-lib's old party zeroes Xi in place.
func copyECDSA(k *ecdsakeygen.LocalPartySaveData) (*ecdsakeygen.LocalPartySaveData, error) {
	b, err := json.Marshal(k)
	if err != nil {
		return nil, fmt.Errorf("%w: copy share: %v", ErrBadParameters, err)
	}
	defer clear(b)
	var out ecdsakeygen.LocalPartySaveData
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%w: copy share: %v", ErrBadParameters, err)
	}
	return &out, nil
}

func copyEdDSA(k *eddsakeygen.LocalPartySaveData) (*eddsakeygen.LocalPartySaveData, error) {
	b, err := json.Marshal(k)
	if err != nil {
		return nil, fmt.Errorf("%w: copy share: %v", ErrBadParameters, err)
	}
	defer clear(b)
	var out eddsakeygen.LocalPartySaveData
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%w: copy share: %v", ErrBadParameters, err)
	}
	return &out, nil
}
