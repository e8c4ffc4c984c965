// Package ceremony runs this node's side of a tss-lib threshold ceremony
// (keygen, signing or resharing) over an abstract Transport. It knows
// nothing of NATS, HSMs or requests: the caller hands it the session, the
// key material and a transport, and gets back the result or an error.
//
// Each key type is one Scheme (secp256k1.go: ECDSA, ed25519.go: EdDSA),
// found with SchemeFor. A Scheme takes and returns shares as opaque
// plaintext bytes (the JSON encoding of tss-lib's save data), so its caller
// only seals and unseals bytes and never branches on the key type. The
// typed functions under each scheme (KeygenECDSA, SignEdDSA, ...) work on
// tss-lib's own types, for tests and benchmarks.
//
// Every ceremony goes through one driver (driver.go), which handles the
// traps of tss-lib: messages are delivered from a goroutine other than the
// one draining the party's output; a party is started before its inbox is
// drained; fresh PartyIDs are built for every ceremony; panics in party
// constructors, Start and Update are recovered; the last messages a party
// emits before its result are still sent; a party without the session nonce
// is refused; every broadcast received is echoed to the other peers and
// compared, so a peer that sends different copies is caught
// (ErrEquivocation, echo.go). The schemes keep r, s and EdDSA messages at
// their full length, and every ceremony sets a session nonce.
package ceremony

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/bnb-chain/tss-lib/v3/tss"
)

// Outbound is one message a party wants sent.
type Outbound struct {
	To        []string // node IDs; empty for a broadcast
	Broadcast bool
	Round     string // tss-lib message type, for logging and AAD
	Wire      []byte
}

// Inbound is one message received for the party.
type Inbound struct {
	From      string
	Broadcast bool
	Wire      []byte
}

// Transport moves a party's messages. Send must not block for long; Recv is
// closed or ctx is cancelled when the session ends.
type Transport interface {
	Send(ctx context.Context, m Outbound) error
	Recv() <-chan Inbound
}

// Errors.
var (
	ErrNotParticipant = errors.New("ceremony: this node is not a participant")
	ErrBadParameters  = errors.New("ceremony: bad parameters")
	ErrParty          = errors.New("ceremony: tss party failed")
	// ErrUnknownKeyType: SchemeFor knows no scheme for the key type.
	ErrUnknownKeyType = errors.New("ceremony: unknown key type")
	// ErrBadShare: share plaintext handed to a Scheme does not decode.
	ErrBadShare = errors.New("ceremony: share does not decode")
	// ErrDerivation: a share could not be adjusted to an HD child key, or
	// tss-lib's child key differs from protocol/hd's.
	ErrDerivation = errors.New("ceremony: HD derivation failed")
)

// PartyKey is the stable tss-lib party key of a node: every ceremony of every
// wallet uses the same key for the same node ID, so saved shares match later
// signing sessions.
func PartyKey(nodeID string) *big.Int {
	h := sha256.Sum256([]byte("hwsigner/party-key/v1\x00" + nodeID))
	return new(big.Int).SetBytes(h[:])
}

// SessionNonce derives the tss-lib session nonce from a session ID; every
// participant computes the same value.
func SessionNonce(sessionID string) *big.Int {
	h := sha256.Sum256([]byte("hwsigner/session-nonce/v1\x00" + sessionID))
	return new(big.Int).SetBytes(h[:])
}

// parties builds fresh, sorted PartyIDs for the given node IDs (tss-lib
// writes Index into them, so they are never shared between ceremonies).
type parties struct {
	sorted tss.SortedPartyIDs
	byNode map[string]*tss.PartyID
	self   *tss.PartyID
}

// AltPartyKey is a node's second party key. A reshare in which a node is in
// both committees needs two distinct tss parties (old and new) for it: the
// new party takes whichever of PartyKey and AltPartyKey the node's old share
// does not use, so a node's share is always at one of its two keys.
func AltPartyKey(nodeID string) *big.Int {
	h := sha256.Sum256([]byte("hwsigner/party-key-alt/v1\x00" + nodeID))
	return new(big.Int).SetBytes(h[:])
}

// NextPartyKey is the key of node's new party in a reshare: the other of its
// two keys when it holds a share at current (its old party's key), else
// PartyKey.
func NextPartyKey(nodeID string, current *big.Int) *big.Int {
	if current != nil && current.Cmp(PartyKey(nodeID)) == 0 {
		return AltPartyKey(nodeID)
	}
	return PartyKey(nodeID)
}

// shareKeyOf returns node's key in a share's Ks (its Shamir x-coordinate):
// PartyKey or AltPartyKey, whichever the share holds; with ks nil (keygen)
// PartyKey.
func shareKeyOf(node string, ks []*big.Int) (*big.Int, error) {
	a := PartyKey(node)
	if ks == nil {
		return a, nil
	}
	b := AltPartyKey(node)
	for _, k := range ks {
		if k == nil {
			continue
		}
		if k.Cmp(a) == 0 {
			return a, nil
		}
		if k.Cmp(b) == 0 {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%w: %s holds no part of this share's committee", ErrBadParameters, node)
}

// Session is what keygen and signing need: who we are, who takes part, the
// threshold t (t+1 parties sign) and the session ID the nonce derives from.
type Session struct {
	ID        string
	Self      string
	Parties   []string
	Threshold int
	// Stall, when positive, ends the ceremony with a *StalledError once no
	// message has arrived for this long while its party waits for peers
	// (signing: the node then re-runs the request without them). Zero: only
	// ctx bounds the wait.
	Stall time.Duration
}

// params builds fresh PartyIDs and the tss parameters, with each party at
// its key in ks, the Ks of the share used (nil for keygen: PartyKey): after
// a reshare a node's share may sit at its AltPartyKey. The session nonce is
// set from s.ID.
func (s Session) params(curve tss.CurveName, ks []*big.Int) (*parties, *tss.Parameters, error) {
	ps, err := newPartiesWithKeys(s.Self, s.Parties, ks)
	if err != nil {
		return nil, nil, err
	}
	if s.ID == "" {
		return nil, nil, fmt.Errorf("%w: empty session ID", ErrBadParameters)
	}
	if s.Threshold < 1 || s.Threshold >= len(s.Parties) {
		return nil, nil, fmt.Errorf("%w: threshold %d with %d parties", ErrBadParameters, s.Threshold, len(s.Parties))
	}
	ctx := tss.NewPeerContext(ps.sorted)
	ec, _ := tss.GetCurveByName(curve)
	p := tss.NewParameters(ec, ctx, ps.self, len(ps.sorted), s.Threshold)
	p.SetSessionNonce(SessionNonce(s.ID))
	return ps, p, nil
}

// signers checks that a signing session has exactly t+1 parties.
func (s Session) signers() error {
	if len(s.Parties) != s.Threshold+1 {
		return fmt.Errorf("%w: signing needs exactly t+1=%d parties, got %d", ErrBadParameters, s.Threshold+1, len(s.Parties))
	}
	return nil
}

// newPartiesWithKeys builds the PartyIDs of nodes at the keys the share's Ks
// holds for them (ks nil: PartyKey).
func newPartiesWithKeys(self string, nodes []string, ks []*big.Int) (*parties, error) {
	if len(nodes) < 2 {
		return nil, fmt.Errorf("%w: need at least 2 participants, got %d", ErrBadParameters, len(nodes))
	}
	seen := map[string]bool{}
	ids := make(tss.UnSortedPartyIDs, 0, len(nodes))
	for _, n := range nodes {
		if n == "" || seen[n] {
			return nil, fmt.Errorf("%w: empty or duplicate participant %q", ErrBadParameters, n)
		}
		seen[n] = true
		key, err := shareKeyOf(n, ks)
		if err != nil {
			return nil, err
		}
		ids = append(ids, tss.NewPartyID(n, n, key))
	}
	p := &parties{sorted: tss.SortPartyIDs(ids), byNode: map[string]*tss.PartyID{}}
	for _, id := range p.sorted {
		p.byNode[id.Id] = id
	}
	p.self = p.byNode[self]
	if p.self == nil {
		return nil, ErrNotParticipant
	}
	return p, nil
}
