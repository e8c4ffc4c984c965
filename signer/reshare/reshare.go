// Package reshare is the control protocol that runs beside a reshare
// ceremony on the same session transport. A Mux splits the session in two:
// the tss ceremony's messages and control messages, told apart by the first
// byte of each payload (0: tss-lib wire bytes follow; 1: a JSON control
// message follows). Control messages are broadcast (one that arrives
// otherwise is dropped); there are three kinds:
//
//   - "meta": what a participant holds of the wallet's key type
//     (committee.Holding), announced once by every participant before the
//     ceremony (Exchange);
//   - "sealed": a new committee member sealed its new share as pending
//     (AnnounceSealed, AwaitSealed);
//   - "failed": a participant gave up, with a reason (GiveUp); it ends every
//     peer's wait for announcements (an Exchange after exchangeGrace, so
//     that the announcements still on their way arrive) and, through
//     Watch, their ceremony.
package reshare

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/committee"
)

// Round is the round name control messages are sent under.
const Round = "hwsigner-reshare-ctl"

// The first byte of every payload on a reshare session.
const (
	muxTSS byte = 0
	muxCtl byte = 1
)

// Kinds of control messages.
const (
	kindMeta   = "meta"
	kindSealed = "sealed"
	kindFailed = "failed"
)

// giveUpTimeout bounds the broadcast of a "failed" message.
const giveUpTimeout = 2 * time.Second

// exchangeGrace is how long Exchange still waits for the announcements it
// misses once a peer gave up. Every participant announces before it can
// give up, so a peer that refused the request after its own exchange (the
// requester may not use the wallet) must not keep the others from reaching
// the same decision, with its code, from the announcements still on their
// way.
const exchangeGrace = 2 * time.Second

// ErrPeerFailed: a participant announced that it gave up. Its text is the
// wording clients have always received in the result.
var ErrPeerFailed = errors.New("node: a reshare participant failed")

// Conn is what the protocol needs of a session transport
// (*transport.Session is one): send a message to some or all peers, receive
// the peers' messages.
type Conn interface {
	Send(ctx context.Context, o ceremony.Outbound) error
	Recv() <-chan ceremony.Inbound
}

// control is a control message on the wire. The field names and order are
// the wire format and must not change.
type control struct {
	Kind string `json:"kind"` // "meta", "sealed", "failed"
	// meta
	Holds     bool     `json:"holds,omitempty"`
	Epoch     uint64   `json:"epoch,omitempty"`
	Committee []string `json:"committee,omitempty"`
	Threshold int      `json:"threshold,omitempty"`
	PubKey    string   `json:"pub_key,omitempty"`   // meta, sealed: hex of the public key
	ShareKey  string   `json:"share_key,omitempty"` // hex of the share's x-coordinate
	Owner     string   `json:"owner,omitempty"`     // the client ID that created the wallet
	// failed
	Reason string `json:"reason,omitempty"`
}

func metaOf(h committee.Holding) control {
	return control{Kind: kindMeta, Holds: h.Holds, Epoch: h.Epoch, Committee: h.Committee, Threshold: h.Threshold,
		PubKey: h.PubKey, ShareKey: h.ShareKey, Owner: h.Owner}
}

func (c control) holding() committee.Holding {
	return committee.Holding{Holds: c.Holds, Epoch: c.Epoch, Committee: c.Committee, Threshold: c.Threshold,
		PubKey: c.PubKey, ShareKey: c.ShareKey, Owner: c.Owner}
}

type ctlMsg struct {
	from string
	msg  control
}

// Mux is one participant's end of a reshare session. It is the ceremony's
// Transport (Send, Recv carry tss messages only) and runs the control
// protocol.
type Mux struct {
	conn   Conn
	self   string
	log    *slog.Logger
	tss    chan ceremony.Inbound
	ctl    chan ctlMsg
	failed chan ctlMsg // a peer gave up
}

// New starts splitting conn's messages until ctx ends or conn's Recv
// closes. self is this participant's node ID; log (nil: slog.Default)
// records peers that give up. Payloads that are empty, start with another
// byte, or carry a control message that does not decode or was not
// broadcast are dropped.
func New(ctx context.Context, conn Conn, self string, log *slog.Logger) *Mux {
	if log == nil {
		log = slog.Default()
	}
	m := &Mux{conn: conn, self: self, log: log,
		tss: make(chan ceremony.Inbound, 1024), ctl: make(chan ctlMsg, 64), failed: make(chan ctlMsg, 1)}
	go m.demux(ctx)
	return m
}

func (m *Mux) demux(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case in, ok := <-m.conn.Recv():
			if !ok {
				return
			}
			if len(in.Wire) == 0 {
				continue
			}
			switch in.Wire[0] {
			case muxTSS:
				in.Wire = in.Wire[1:]
				select {
				case m.tss <- in:
				case <-ctx.Done():
					return
				}
			case muxCtl:
				var c control
				if json.Unmarshal(in.Wire[1:], &c) != nil || !in.Broadcast {
					continue
				}
				if c.Kind == kindFailed {
					select {
					case m.failed <- ctlMsg{in.From, c}:
					default:
					}
					continue
				}
				select {
				case m.ctl <- ctlMsg{in.From, c}:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// Send sends one tss ceremony message.
func (m *Mux) Send(ctx context.Context, o ceremony.Outbound) error {
	o.Wire = append([]byte{muxTSS}, o.Wire...)
	return m.conn.Send(ctx, o)
}

// Recv delivers the peers' tss ceremony messages.
func (m *Mux) Recv() <-chan ceremony.Inbound { return m.tss }

func (m *Mux) send(ctx context.Context, c control) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("reshare: encode %s message: %w", c.Kind, err)
	}
	return m.conn.Send(ctx, ceremony.Outbound{Broadcast: true, Round: Round, Wire: append([]byte{muxCtl}, b...)})
}

// Exchange announces mine and waits for the announcement of every other
// node of participants. It returns every participant's holding, this
// node's (mine) included.
func (m *Mux) Exchange(ctx context.Context, mine committee.Holding, participants []string) (map[string]committee.Holding, error) {
	if err := m.send(ctx, metaOf(mine)); err != nil {
		return nil, err
	}
	got, err := m.collect(ctx, kindMeta, m.others(participants), exchangeGrace)
	if err != nil {
		return nil, err
	}
	out := map[string]committee.Holding{m.self: mine}
	for id, c := range got {
		out[id] = c.holding()
	}
	return out, nil
}

// AnnounceSealed tells the peers that this node sealed its new share of the
// key pub.
func (m *Mux) AnnounceSealed(ctx context.Context, pub []byte) error {
	return m.send(ctx, control{Kind: kindSealed, PubKey: hex.EncodeToString(pub)})
}

// AwaitSealed waits for "sealed" from every member of newCommittee but this
// node.
func (m *Mux) AwaitSealed(ctx context.Context, newCommittee []string) error {
	_, err := m.collect(ctx, kindSealed, m.others(newCommittee), 0)
	return err
}

// GiveUp tells the peers that this node stopped, with reason. It tries for
// at most two seconds, even when ctx has ended; it never fails the caller
// further, so the error only says whether the message left.
func (m *Mux) GiveUp(ctx context.Context, reason string) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), giveUpTimeout)
	defer cancel()
	return m.send(sctx, control{Kind: kindFailed, Reason: reason})
}

// Watch returns a context derived from ctx that ends as soon as a peer gives
// up (the ceremony's context). The peer's "failed" stays queued, so the
// next Exchange or AwaitSealed returns ErrPeerFailed. Call cancel to stop
// watching.
func (m *Mux) Watch(ctx context.Context) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case f := <-m.failed:
			m.log.Info("reshare peer gave up", "peer", f.from, "reason", f.msg.Reason)
			select {
			case m.failed <- f: // for collect
			default:
			}
			cancel()
		case <-wctx.Done():
		}
	}()
	return wctx, cancel
}

func (m *Mux) others(ids []string) []string {
	return slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == m.self })
}

// collect waits for one control message of kind from each of peers.
// Messages from other nodes are dropped; messages of another kind (a later
// step's, come early) are queued again when collect returns. A peer's
// "failed" ends it with ErrPeerFailed, at once or, with a grace, once the
// grace has passed without the missing messages (when they all arrive, the
// "failed" stays queued for the next step); the end of ctx ends it with an
// error that names the peers still missing.
func (m *Mux) collect(ctx context.Context, kind string, peers []string, grace time.Duration) (map[string]control, error) {
	peers = slices.Compact(slices.Sorted(slices.Values(peers)))
	got := map[string]control{}
	var early []ctlMsg
	var failure *ctlMsg
	var graceOver <-chan time.Time
	defer func() {
		for _, c := range early {
			select {
			case m.ctl <- c:
			default:
			}
		}
		if failure != nil {
			select {
			case m.failed <- *failure: // for Watch and the next step
			default:
			}
		}
	}()
	peerFailed := func(f ctlMsg) error {
		return fmt.Errorf("%w: %s gave up: %s", ErrPeerFailed, f.from, f.msg.Reason)
	}
	for len(got) < len(peers) {
		select {
		case c := <-m.ctl:
			if !slices.Contains(peers, c.from) {
				continue
			}
			if c.msg.Kind != kind {
				early = append(early, c)
				continue
			}
			got[c.from] = c.msg
		case f := <-m.failed:
			if grace <= 0 {
				return nil, peerFailed(f)
			}
			if failure == nil {
				failure, graceOver = &f, time.After(grace)
			}
		case <-graceOver:
			f := *failure
			failure = nil
			return nil, peerFailed(f)
		case <-ctx.Done():
			missing := slices.DeleteFunc(peers, func(p string) bool { _, ok := got[p]; return ok })
			return nil, fmt.Errorf("no %s announcement from %v: %w", kind, missing, ctx.Err())
		}
	}
	return got, nil
}
