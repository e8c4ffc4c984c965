// Package ceremony runs one tss-lib party (keygen or signing, ECDSA secp256k1
// or EdDSA ed25519) over an abstract Transport. It knows nothing of NATS, HSMs
// or requests: the caller hands it the session nonce, the participants, the
// key material and a transport, and gets back the result or an error.
//
// The traps of tss-lib it handles (see shared/LIBRARY-NOTES.md): messages are
// delivered from a goroutine other than the one draining the party's output;
// the party is started before its inbox is drained; fresh PartyIDs are built
// for every ceremony; panics inside the party are recovered; r, s and EdDSA
// messages keep their full length.
package ceremony

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"sync"

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

func newParties(self string, nodes []string) (*parties, error) {
	return newPartiesWithKeys(self, nodes, nil)
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

// Nodes returns node IDs sorted as tss-lib orders them.
func sortedNodes(nodes []string) []string {
	out := append([]string(nil), nodes...)
	sort.Slice(out, func(i, j int) bool { return PartyKey(out[i]).Cmp(PartyKey(out[j])) < 0 })
	return out
}

// run drives one party to its end. start builds and starts nothing itself:
// the party is created by the caller with out and a typed end channel; done
// is closed by the caller's end-watcher when the result arrived.
func run[T any](ctx context.Context, ps *parties, party tss.Party, out <-chan tss.Message, end <-chan T, tr Transport) (T, error) {
	var zero T
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	errc := make(chan error, 4)
	var wg sync.WaitGroup

	// Outbound pump: drains the party's out channel.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case msg := <-out:
				// Send under the caller's context: a message taken from out
				// just as the party finished must still reach the peers.
				if err := send(parent, tr, msg); err != nil {
					select {
					case errc <- err:
					default:
					}
					return
				}
			}
		}
	}()

	// Start before draining the inbox: a message delivered before Start is
	// only stored and nothing would restart the round.
	if err := safeStart(party); err != nil {
		cancel()
		wg.Wait()
		return zero, err
	}

	// Inbound pump: feeds the party from another goroutine than the outbound
	// pump, so a full out channel never deadlocks Update.
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
				from := ps.byNode[m.From]
				if from == nil || from == ps.self {
					continue // not a participant of this ceremony
				}
				if err := safeUpdate(party, m.Wire, from, m.Broadcast); err != nil {
					select {
					case errc <- err:
					default:
					}
					return
				}
			}
		}
	}()

	var res T
	var err error
	finished := false
	select {
	case res = <-end:
		finished = true
	case err = <-errc:
	case <-ctx.Done():
		err = ctx.Err()
	}
	cancel()
	wg.Wait()
	if finished {
		// The party's last messages can still sit in out when its result
		// arrives (the pump had not run yet); peers need them to finish too.
		if ferr := flush(parent, tr, out); ferr != nil {
			return res, ferr
		}
	}
	return res, err
}

func flush(ctx context.Context, tr Transport, out <-chan tss.Message) error {
	for {
		select {
		case msg := <-out:
			if err := send(ctx, tr, msg); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

func send(ctx context.Context, tr Transport, msg tss.Message) error {
	wire, routing, err := msg.WireBytes()
	if err != nil {
		return fmt.Errorf("%w: encode message: %v", ErrParty, err)
	}
	o := Outbound{Broadcast: routing.IsBroadcast, Round: msg.Type(), Wire: wire}
	if !routing.IsBroadcast || len(routing.To) > 0 {
		for _, to := range routing.To {
			o.To = append(o.To, to.Id)
		}
	}
	if err := tr.Send(ctx, o); err != nil {
		return fmt.Errorf("send %s: %w", o.Round, err)
	}
	return nil
}

func safeStart(p tss.Party) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: panic in start: %v", ErrParty, r)
		}
	}()
	if e := p.Start(); e != nil {
		return fmt.Errorf("%w: %v", ErrParty, e)
	}
	return nil
}

func safeUpdate(p tss.Party, wire []byte, from *tss.PartyID, bc bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: panic in update from %s: %v", ErrParty, from.Id, r)
		}
	}()
	if _, e := p.UpdateFromBytes(wire, from, bc); e != nil {
		return fmt.Errorf("%w: %v", ErrParty, e)
	}
	return nil
}

// chanCap is the capacity of a party's out and end channels: large enough
// that a party whose ceremony was abandoned never blocks forever on them.
const chanCap = 1024
