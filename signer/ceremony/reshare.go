package ceremony

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"

	"github.com/bnb-chain/tss-lib/v3/tss"
)

// ReshareSession describes one resharing ceremony as one node sees it.
//
// tss-lib resharing has two committees. A node in both runs two tss parties
// (old and new) with distinct keys: the old party at the key its share holds
// (OldKeys), the new one at NextPartyKey. Both talk over the node's one
// Transport: every message's envelope (echo.go) names the sending party's
// committee and the receiving node's committees, inside the payload the
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

// reshareKind is what one key type brings to a reshare; the steps (reshare
// below) are the same for every key type. K is tss-lib's save data type.
type reshareKind[K any] struct {
	curve tss.CurveName
	// fresh returns the save data a new party starts from.
	fresh func(newParties int) (K, error)
	// party builds a resharing party (tss-lib's resharing.NewLocalParty).
	party func(p *tss.ReSharingParameters, key K, out chan<- tss.Message, end chan<- *K) tss.Party
	// pub returns the public key of a new party's result, nil when the
	// result holds no share (Xi or the public key missing).
	pub func(*K) []byte
}

// reshare runs this node's parties of a resharing: an old party from a deep
// copy of old (tss-lib zeroes the old party's Xi in place, and the caller's
// share must stay intact until the new committee confirmed), a new party
// from kind.fresh. It returns the new party's share, checked against
// s.PubKey, or nil for an old-only node; the old party's output (Xi == nil)
// is dropped.
func reshare[K any](ctx context.Context, s ReshareSession, kind reshareKind[K], old *K, tr Transport) (*K, error) {
	rp, err := s.build()
	if err != nil {
		return nil, err
	}
	var locals []*local[*K]
	if rp.byRole[roleOld][s.Self] != nil {
		if old == nil {
			return nil, fmt.Errorf("%w: old party without a share", ErrBadParameters)
		}
		cp, err := deepCopy(old)
		if err != nil {
			return nil, err
		}
		l := newLocal[*K](roleOld, false)
		p := s.params(rp, kind.curve, roleOld)
		if err := l.build(p.Parameters, func(out chan<- tss.Message, end chan<- *K) tss.Party { return kind.party(p, *cp, out, end) }); err != nil {
			return nil, err
		}
		locals = append(locals, l)
	}
	if rp.byRole[roleNew][s.Self] != nil {
		save, err := kind.fresh(len(s.New))
		if err != nil {
			return nil, err
		}
		l := newLocal[*K](roleNew, true)
		p := s.params(rp, kind.curve, roleNew)
		if err := l.build(p.Parameters, func(out chan<- tss.Message, end chan<- *K) tss.Party { return kind.party(p, save, out, end) }); err != nil {
			return nil, err
		}
		locals = append(locals, l)
	}
	res, err := drive(ctx, newEchoes(s.ID, s.Self, s.peers(), echoAwait), tr, reshareRouter{self: s.Self, rp: rp}, locals, 0)
	if err != nil || res == nil {
		return nil, err
	}
	pub := kind.pub(res)
	if pub == nil {
		return nil, fmt.Errorf("%w: new party ended without a share", ErrParty)
	}
	if s.PubKey != nil && !bytes.Equal(pub, s.PubKey) {
		return nil, fmt.Errorf("%w: the reshared public key differs from the wallet's", ErrParty)
	}
	return res, nil
}

// peers are the other nodes of the reshare, in either committee.
func (s ReshareSession) peers() []string {
	var out []string
	for _, n := range append(slices.Clone(s.Old), s.New...) {
		if n != s.Self && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// reshareRouter routes a reshare's parties by PartyID.Key (both committees
// index from 0): a message goes to each node once, with the mask of its
// roles it is for (a broadcast can reach both committees); messages
// between this node's own two parties stay in process; nothing goes back
// to the sending party.
type reshareRouter struct {
	self string
	rp   *reshareParties
}

func (r reshareRouter) targets(from byte, routing *tss.MessageRouting) ([]target, byte, error) {
	self := r.rp.byRole[from][r.self]
	var out []target
	var mine byte
	index := map[string]int{}
	for _, to := range routing.To {
		if to == nil || to.Id == self.Id {
			continue // never back to the sender
		}
		role, node := r.rp.owner[to], to.Moniker
		if role == 0 {
			return nil, 0, fmt.Errorf("%w: message to unknown party %s", ErrParty, to.Id)
		}
		if node == r.self {
			mine |= role
			continue
		}
		i, ok := index[node]
		if !ok {
			i, index[node] = len(out), len(out)
			out = append(out, target{node: node})
		}
		out[i].roles |= role
	}
	return out, mine, nil
}

func (r reshareRouter) party(node string, role byte) *tss.PartyID {
	if role != roleOld && role != roleNew {
		return nil
	}
	return r.rp.byRole[role][node] // the sending node's party, as the transport authenticated it
}

// deepCopy copies a share through its JSON encoding (the buffer is zeroed).
func deepCopy[K any](k *K) (*K, error) {
	b, err := json.Marshal(k)
	if err != nil {
		return nil, fmt.Errorf("%w: copy share: %v", ErrBadParameters, err)
	}
	defer clear(b)
	var out K
	if err := json.Unmarshal(b, &out); err != nil { // its error may quote the secret
		return nil, fmt.Errorf("%w: copy share: it does not decode", ErrBadParameters)
	}
	return &out, nil
}
