package ceremony

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
	params *tss.Parameters
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

// build creates the local's party with mk from the parameters p, recovering
// a constructor panic.
func (l *local[T]) build(p *tss.Parameters, mk func(out chan<- tss.Message, end chan<- T) tss.Party) error {
	l.params = p
	party, err := newPartySafe(func() tss.Party { return mk(l.out, l.end) })
	l.party = party
	return err
}

// delivery is one message for a local party.
type delivery struct {
	from *tss.PartyID
	bc   bool
	wire []byte
}

// target is one node a message goes to, with the mask of its local roles
// the message is for.
type target struct {
	node  string
	roles byte
}

// router maps a ceremony's local parties to nodes: in keygen and signing
// PartyID.Id is the node ID (directRouter); a reshare routes by the
// committees (reshareRouter).
type router interface {
	// targets returns the other nodes a message of this node's party of
	// role from goes to, and the mask of this node's own other local roles
	// it is for.
	targets(from byte, r *tss.MessageRouting) (remote []target, local byte, err error)
	// party returns the tss party node runs in role, nil if none.
	party(node string, role byte) *tss.PartyID
}

// paramsHookKey is the context key of a test hook that sees the parameters
// of every party drive is given, before the session-nonce check.
type paramsHookKey struct{}

// checkParams refuses a party built without the session's nonce.
func checkParams[T any](ctx context.Context, sessionID string, locals []*local[T]) error {
	hook, _ := ctx.Value(paramsHookKey{}).(func(role byte, p *tss.Parameters) error)
	want := SessionNonce(sessionID)
	for _, l := range locals {
		if hook != nil {
			if err := hook(l.role, l.params); err != nil {
				return err
			}
		}
		if l.params == nil || l.params.SessionNonce() == nil || l.params.SessionNonce().Cmp(want) != 0 {
			return fmt.Errorf("%w: a party without the session nonce", ErrBadParameters)
		}
	}
	return nil
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
//
// Every message travels in an envelope (echo.go) that carries the digests
// of the broadcasts this node received; a digest that differs from this
// node's copy ends the ceremony with an *EquivocationError. With ec.mode
// echoAwait the result is returned only once every peer's final echo
// arrived. A ceremony that fails sends an abort echo (finish, failed); a
// peer's abort echo fails this node's ceremony too.
//
// stall > 0 bounds how long the run may go without an inbound message while
// a party waits for peers: then it ends with a *StalledError naming the
// nodes the parties wait for (a peer that died, or messages lost to a NATS
// restart), instead of waiting out ctx's deadline.
func drive[T any](ctx context.Context, ec *echoes, tr Transport, rt router, locals []*local[T], stall time.Duration) (T, error) {
	var zero T
	if err := checkParams(ctx, ec.session, locals); err != nil {
		return zero, err
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx) // the parties' run
	defer cancel()
	dctx, dcancel := context.WithCancel(parent) // the inbound dispatcher: it outlives the run for the echoes
	defer dcancel()
	errc := make(chan error, 1) // the first send or update error
	var lastIn atomic.Int64     // unix nanoseconds of the last inbound message dispatched
	lastIn.Store(time.Now().UnixNano())
	eqc := make(chan error, 1) // the first equivocation found
	first := func(c chan error, err error) {
		select {
		case c <- err:
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
		wire, routing, err := msg.WireBytes()
		if err != nil {
			return fmt.Errorf("%w: encode message: %v", ErrParty, err)
		}
		remote, mine, err := rt.targets(from, routing)
		if err != nil {
			return err
		}
		for _, role := range []byte{roleOld, roleNew} {
			if mine&role != 0 { // this node's other party: no envelope, no echo
				if err := deliver(ctx, role, delivery{from: rt.party(ec.self, from), bc: routing.IsBroadcast, wire: wire}); err != nil {
					return err
				}
			}
		}
		for _, t := range remote {
			env := envelope{kind: kindTSS, from: from, to: t.roles, entries: ec.claimsFor(t.node), wire: wire}
			o := Outbound{To: []string{t.node}, Broadcast: routing.IsBroadcast, Round: msg.Type(), Wire: env.encode(ec.tag)}
			if err := tr.Send(ctx, o); err != nil {
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
					// Send under the caller's context: a message taken
					// from out just as the party finished must still
					// reach the peers.
					if err := send(parent, l.role, msg); err != nil {
						first(errc, err)
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
						first(errc, err)
						return
					}
				}
			}
		}()
	}
	// Inbound dispatcher: compares the echoes, records the broadcasts and
	// feeds the parties, until the final echoes are in (dctx).
	var dwg sync.WaitGroup
	dwg.Add(1)
	go func() {
		defer dwg.Done()
		in := tr.Recv()
		for {
			select {
			case <-dctx.Done():
				return
			case m, ok := <-in:
				if !ok {
					return
				}
				env, ok := parseEnvelope(m.Wire, ec.tag)
				if !ok || m.From == ec.self || !ec.isPeer(m.From) {
					continue
				}
				var from *tss.PartyID
				if env.kind == kindTSS {
					if from = rt.party(m.From, env.from); from == nil {
						continue // not a party of this ceremony
					}
				}
				if err := ec.check(m.From, env.entries); err != nil {
					first(eqc, err)
					continue
				}
				if env.kind != kindTSS {
					ec.gotFinal(m.From)
					if env.kind == kindAbort {
						if err := ec.peerAborted(m.From, env.wire); errors.Is(err, ErrEquivocation) {
							first(eqc, err)
						} else {
							first(errc, err)
						}
					}
					continue
				}
				if m.Broadcast && ec.on {
					if typ := messageType(env.wire, from, true); typ != "" {
						if err := ec.record(m.From, env.from, typ, env.wire); err != nil {
							first(eqc, err)
							continue
						}
					}
				}
				for _, l := range locals {
					if l.role&env.to != 0 {
						// After the run nobody drains the inboxes: drop.
						_ = deliver(ctx, l.role, delivery{from: from, bc: m.Broadcast, wire: env.wire})
					}
				}
				lastIn.Store(time.Now().UnixNano())
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
	var stallC <-chan time.Time
	if stall > 0 {
		tick := time.NewTicker(max(stall/8, 10*time.Millisecond))
		defer tick.Stop()
		stallC = tick.C
	}
	quiet := func() bool { return time.Since(time.Unix(0, lastIn.Load())) >= stall }
	for pending := len(locals); pending > 0 && err == nil; {
		select {
		case <-stallC:
			if !quiet() {
				continue
			}
			// WaitingFor takes the party's lock: while a round computes it
			// waits for it, and a message that arrived meanwhile is progress.
			waiting := waitingFor(locals)
			if len(waiting) == 0 || !quiet() {
				continue
			}
			err = &StalledError{Waiting: waiting, After: stall}
		case e := <-ends:
			pending--
			if e.l.result {
				res = e.val
			}
		case err = <-errc:
		case err = <-eqc:
		case <-ctx.Done():
			err = ctx.Err()
			select { // a peer's abort can end the caller's context too (reshare.Mux.Watch)
			case err = <-eqc:
			default:
			}
		}
	}
	cancel()
	wg.Wait()
	if err == nil {
		err = finish(parent, ec, tr, locals, send, errc, eqc)
	}
	if err != nil {
		err = failed(parent, ec, tr, err, eqc)
	}
	dcancel()
	dwg.Wait()
	if err != nil {
		return zero, err
	}
	return res, nil
}

// finish ends a run whose parties all ended: it sends the messages still in
// their out channels (a party's last messages can sit there when its result
// arrives: its pump had not run yet); with echoAwait it then sends the
// final echo and waits for every peer's; a peer's abort echo or a mismatch
// fails it.
func finish[T any](ctx context.Context, ec *echoes, tr Transport, locals []*local[T], send func(context.Context, byte, tss.Message) error, errc, eqc chan error) error {
	for _, l := range locals {
		for done := false; !done; {
			select {
			case msg := <-l.out:
				if err := send(ctx, l.role, msg); err != nil {
					return err
				}
			default:
				done = true
			}
		}
	}
	select { // found while the party ended
	case err := <-eqc:
		return err
	default:
	}
	if !ec.on || ec.mode != echoAwait {
		return nil
	}
	if err := ec.sendEcho(ctx, tr, kindEcho, nil); err != nil {
		return err
	}
	select {
	case <-ec.allIn:
	case err := <-eqc:
		return err
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
	select { // the last echo may have held a mismatch, or been an abort
	case err := <-eqc:
		return err
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// failed ends a run that failed with err: unless the deadline passed, it
// sends an abort echo (its digests and why), so that its peers abort too
// and find a mismatch it found. When a party failed (a bad message or
// proof, or a peer aborted), it waits up to echoGrace for its peers'
// echoes: if a broadcast differed, the equivocation is the error, naming
// the liar.
func failed(ctx context.Context, ec *echoes, tr Transport, err error, eqc chan error) error {
	if !ec.on || ctx.Err() != nil {
		return err
	}
	_ = ec.sendEcho(ctx, tr, kindAbort, abortReason(err)) // best effort: the ceremony has failed anyway
	if !errors.Is(err, ErrParty) || errors.Is(err, ErrEquivocation) {
		return err
	}
	t := time.NewTimer(echoGrace)
	defer t.Stop()
	select {
	case e := <-eqc:
		return e
	case <-ec.allIn:
	case <-t.C:
	case <-ctx.Done():
	}
	select {
	case e := <-eqc:
		return e
	default:
		return err
	}
}

// runParty runs a one-party ceremony (keygen, signing) whose party mk
// builds from p, over tr with the session's parties ps.
func runParty[T any](ctx context.Context, s Session, ps *parties, p *tss.Parameters, mode echoMode, tr Transport, mk func(out chan<- tss.Message, end chan<- T) tss.Party) (T, error) {
	l := newLocal[T](roleOnly, true)
	if err := l.build(p, mk); err != nil {
		var zero T
		return zero, err
	}
	var peers []string
	for _, id := range ps.sorted {
		if id != ps.self {
			peers = append(peers, id.Id)
		}
	}
	return drive(ctx, newEchoes(s.ID, s.Self, peers, mode), tr, directRouter{ps}, []*local[T]{l}, s.Stall)
}

// directRouter routes a keygen or signing party: PartyID.Id is the node ID.
type directRouter struct{ ps *parties }

func (r directRouter) targets(_ byte, routing *tss.MessageRouting) ([]target, byte, error) {
	var out []target
	if routing.To == nil {
		for _, id := range r.ps.sorted {
			if id != r.ps.self {
				out = append(out, target{node: id.Id, roles: roleOnly})
			}
		}
		return out, 0, nil
	}
	for _, to := range routing.To {
		if to == nil || r.ps.byNode[to.Id] == nil {
			return nil, 0, fmt.Errorf("%w: message to unknown party", ErrParty)
		}
		if to.Id != r.ps.self.Id {
			out = append(out, target{node: to.Id, roles: roleOnly})
		}
	}
	return out, 0, nil
}

func (r directRouter) party(node string, role byte) *tss.PartyID {
	if role != roleOnly {
		return nil
	}
	return r.ps.byNode[node]
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

// StalledError ends a ceremony in which no message arrived for After while
// its parties waited for the nodes Waiting (sorted): they died, or their
// messages were lost (a NATS server restart). Signing sessions set
// Session.Stall; the node re-runs the request without them.
type StalledError struct {
	Waiting []string
	After   time.Duration
}

func (e *StalledError) Error() string {
	return fmt.Sprintf("ceremony: no message for %s while waiting for %v", e.After, e.Waiting)
}

// Unwrap returns ErrStalled.
func (e *StalledError) Unwrap() error { return ErrStalled }

// ErrStalled: see StalledError.
var ErrStalled = errors.New("ceremony: stalled")

// waitingFor returns the nodes the locals' parties wait for, sorted, without
// duplicates.
func waitingFor[T any](locals []*local[T]) []string {
	var out []string
	for _, l := range locals {
		if l.party == nil {
			continue
		}
		for _, id := range l.party.WaitingFor() {
			if id != nil && !slices.Contains(out, id.Id) {
				out = append(out, id.Id)
			}
		}
	}
	slices.Sort(out)
	return out
}
