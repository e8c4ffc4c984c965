package ceremony

import (
	"context"
	"fmt"
	"sync"

	"github.com/bnb-chain/tss-lib/v3/tss"
)

// chanCap is the capacity of a party's out, end and inbox channels: large
// enough that a party whose ceremony was abandoned never blocks forever on
// them.
const chanCap = 1024

// Roles of a node's local parties, as bits of a mask. Keygen and signing
// run one party (roleOnly); a reshare runs an old-committee party, a
// new-committee party or both, and its envelope carries roleOld and roleNew.
const (
	roleOld  byte = 1
	roleNew  byte = 2
	roleOnly byte = 4
)

// local is one tss party this node runs in a ceremony.
type local[T any] struct {
	role   byte
	result bool // its end value is the ceremony's result
	party  tss.Party
	out    chan tss.Message
	end    chan T
	inbox  chan delivery
}

func newLocal[T any](role byte, result bool) *local[T] {
	return &local[T]{
		role: role, result: result,
		out: make(chan tss.Message, chanCap), end: make(chan T, 1), inbox: make(chan delivery, chanCap),
	}
}

// build creates the local's party with mk, recovering a constructor panic.
func (l *local[T]) build(mk func(out chan<- tss.Message, end chan<- T) tss.Party) error {
	p, err := newPartySafe(func() tss.Party { return mk(l.out, l.end) })
	l.party = p
	return err
}

// delivery is one message for a local party.
type delivery struct {
	from *tss.PartyID
	bc   bool
	wire []byte
}

// router connects a ceremony's local parties to the transport: keygen and
// signing send tss-lib's messages as they are (directRouter), a reshare
// wraps them in an envelope naming the committees (reshareRouter).
type router interface {
	// send sends msg, emitted by the local party of role from, to its
	// recipients: other nodes over tr, this node's other local party
	// through deliver.
	send(ctx context.Context, tr Transport, from byte, msg tss.Message, deliver func(ctx context.Context, role byte, d delivery) error) error
	// receive maps a message from the transport to a delivery and the mask
	// of local roles it is for; ok is false for a message to drop.
	receive(m Inbound) (d delivery, roles byte, ok bool)
}

// drive runs this node's local parties of one ceremony (one for keygen and
// signing, one or two for a reshare) over tr until every one has ended, and
// returns the end value of the local marked result (zero value if none is).
//
// Each party's out channel is drained by its own pump goroutine; each party
// is fed from its own inbox by another goroutine, so a full out channel
// never blocks Update. Every party is started before any inbox is drained
// (a message delivered before Start is only stored, and nothing would
// restart the round). When the parties have ended, the messages still in
// their out channels are sent: peers need them to finish too. ctx ends the
// ceremony early; so does the first send or update error.
func drive[T any](ctx context.Context, tr Transport, rt router, locals []*local[T]) (T, error) {
	var zero T
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
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
	deliver := func(ctx context.Context, role byte, d delivery) error {
		l := byRole[role]
		if l == nil {
			return nil
		}
		select {
		case l.inbox <- d:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var sendMu sync.Mutex // one send at a time keeps a party's messages in order
	send := func(ctx context.Context, from byte, msg tss.Message) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return rt.send(ctx, tr, from, msg, deliver)
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
					// Send under the caller's context: a message taken
					// from out just as the party finished must still
					// reach the peers.
					if err := send(parent, l.role, msg); err != nil {
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
	// Inbound dispatcher: feeds the parties the messages the router accepts.
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
				d, roles, ok := rt.receive(m)
				if !ok {
					continue
				}
				for _, l := range locals {
					if l.role&roles != 0 {
						if deliver(ctx, l.role, d) != nil {
							return
						}
					}
				}
			}
		}
	}()

	type ended struct {
		l   *local[T]
		val T
	}
	ends := make(chan ended, len(locals))
	for _, l := range locals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case v := <-l.end:
				ends <- ended{l, v}
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
			if e.l.result {
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
	// A party's last messages can still sit in its out channel when its
	// result arrives (its pump had not run yet).
	for _, l := range locals {
		for done := false; !done; {
			select {
			case msg := <-l.out:
				if ferr := send(parent, l.role, msg); ferr != nil {
					return res, ferr
				}
			default:
				done = true
			}
		}
	}
	return res, nil
}

// runParty runs a one-party ceremony (keygen, signing) whose party mk
// builds, over tr with the session's parties ps.
func runParty[T any](ctx context.Context, ps *parties, tr Transport, mk func(out chan<- tss.Message, end chan<- T) tss.Party) (T, error) {
	l := newLocal[T](roleOnly, true)
	if err := l.build(mk); err != nil {
		var zero T
		return zero, err
	}
	return drive(ctx, tr, directRouter{ps}, []*local[T]{l})
}

// directRouter routes a keygen or signing party: PartyID.Id is the node ID,
// and messages travel as tss-lib encodes them.
type directRouter struct{ ps *parties }

func (r directRouter) send(ctx context.Context, tr Transport, _ byte, msg tss.Message, _ func(context.Context, byte, delivery) error) error {
	wire, routing, err := msg.WireBytes()
	if err != nil {
		return fmt.Errorf("%w: encode message: %v", ErrParty, err)
	}
	o := Outbound{Broadcast: routing.IsBroadcast, Round: msg.Type(), Wire: wire}
	for _, to := range routing.To {
		o.To = append(o.To, to.Id)
	}
	if err := tr.Send(ctx, o); err != nil {
		return fmt.Errorf("send %s: %w", o.Round, err)
	}
	return nil
}

func (r directRouter) receive(m Inbound) (delivery, byte, bool) {
	from := r.ps.byNode[m.From]
	if from == nil || from == r.ps.self {
		return delivery{}, 0, false // not a participant of this ceremony
	}
	return delivery{from: from, bc: m.Broadcast, wire: m.Wire}, roleOnly, true
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

// safeUpdate feeds one message to a party. It runs in the party's feeding
// goroutine, so a panic inside tss-lib there (a reshare from a zeroed share
// panics in Update) becomes an error instead of ending the process.
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

func newPartySafe(mk func() tss.Party) (p tss.Party, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrBadParameters, r)
		}
	}()
	return mk(), nil
}
