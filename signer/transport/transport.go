// Package transport carries one ceremony's round messages between nodes over
// core NATS. Every message is signed by the sending node's identity key (held
// in its HSM or TPM) over (session, from, to, kind, round, seq, payload); P2P
// payloads are also encrypted with AES-256-GCM under pairwise keys derived
// from ephemeral X25519 keys that the nodes exchange, signed, at session start
// (AAD = session|from|to|round|seq). Keys die with the session.
//
// A message from an unknown peer, with a bad signature, for another session
// or replayed is dropped and counted before it can reach tss-lib. What a
// session buffers is bounded in bytes and in messages (Limits): a flood on
// its subject is dropped and counted, most of it before it is decoded.
package transport

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/ceremony"
)

// Drop reasons, as counted by Counters.
const (
	DropMalformed    = "malformed"
	DropUnknownPeer  = "unknown_peer"
	DropBadSignature = "bad_signature"
	DropWrongSession = "wrong_session"
	DropReplay       = "replay"
	DropDecrypt      = "decrypt_failed"
	// DropTooLarge: the message is larger than Limits.MaxMessageBytes; it
	// is dropped unread.
	DropTooLarge = "too_large"
	// DropOverflow: a session buffer is full: the NATS subscription's
	// pending messages, the queue of messages not yet decoded, the
	// ceremony inbox, the P2P messages waiting for a hello, or a peer's
	// message allowance (Limits).
	DropOverflow = "overflow"
	// DropPartiesDiffer: an authentic hello with another participant set
	// from a node that is not a participant of this session (it cannot
	// make the session fail; it is told this node's set).
	DropPartiesDiffer = "parties_differ"
)

// Counters receives drop counts (wired to Prometheus by the node).
type Counters interface {
	Dropped(reason string)
}

// Identity is a node's signing key and ID.
type Identity struct {
	NodeID string
	Signer crypto.Signer
}

// Config is one session's transport setup.
type Config struct {
	SessionID    string
	Self         Identity
	Participants []string                    // including Self
	Peers        map[string]*ecdsa.PublicKey // identity keys of the cluster
	Counters     Counters
	Logger       *slog.Logger
	Limits       Limits // zero fields take DefaultLimits
}

type wireMsg struct {
	Session string   `json:"s"`
	From    string   `json:"f"`
	To      string   `json:"t"`
	Kind    string   `json:"k"` // "hello" or "msg"
	Round   string   `json:"r,omitempty"`
	Seq     uint64   `json:"n"`
	BC      bool     `json:"b,omitempty"`
	Payload []byte   `json:"p"`
	Seen    []string `json:"seen,omitempty"` // hello: peers whose hello we hold
	Parties []string `json:"ps,omitempty"`   // hello: the sender's participant set, sorted
	Sig     []byte   `json:"sig"`
}

func (m *wireMsg) signingInput() []byte {
	h := sha256.New()
	h.Write([]byte("hwsigner/v1/round\n"))
	for _, s := range []string{m.Session, m.From, m.To, m.Kind, m.Round} {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(s)))
		h.Write(l[:])
		h.Write([]byte(s))
	}
	var n [9]byte
	binary.BigEndian.PutUint64(n[:8], m.Seq)
	if m.BC {
		n[8] = 1
	}
	h.Write(n[:])
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(m.Payload)))
	h.Write(l[:])
	h.Write(m.Payload)
	seen := append([]string(nil), m.Seen...)
	sort.Strings(seen)
	for _, list := range [][]string{seen, m.Parties} {
		binary.BigEndian.PutUint32(l[:], uint32(len(list)))
		h.Write(l[:])
		for _, s := range list {
			binary.BigEndian.PutUint32(l[:], uint32(len(s)))
			h.Write(l[:])
			h.Write([]byte(s))
		}
	}
	return h.Sum(nil)
}

// Session is one node's end of a ceremony's transport; it implements
// ceremony.Transport.
type Session struct {
	cfg  Config
	nc   *nats.Conn
	sub  *nats.Subscription
	eph  *ecdh.PrivateKey
	lim  Limits
	out  chan ceremony.Inbound // Recv; fed by forward from inq
	log  *slog.Logger
	seq  atomic.Uint64
	done chan struct{}
	ctx  context.Context // the session's, for replies sent from the NATS callback
	// flooded is set at the first drop for a full buffer or an oversized
	// message: that one is logged as a warning, the rest only counted.
	flooded atomic.Bool

	// Received messages under the size cap, waiting for work to decode and
	// verify them: the NATS callback (receive) only checks sizes and room,
	// so that the subscription's pending messages stay few even while a
	// message is verified or a hello signed (in hardware, milliseconds).
	rawMu    sync.Mutex
	raw      []*nats.Msg
	rawBytes int
	rawSig   chan struct{}

	mu           sync.Mutex
	keys         map[string]cipher.AEAD // pairwise, by peer
	ackedBy      map[string]bool        // peers whose hello lists us
	seenSeq      map[string]map[uint64]bool
	inq          []ceremony.Inbound // authenticated, waiting for the ceremony
	inBytes      int                // payload bytes in inq and in hand-off
	inSig        chan struct{}      // something was added to inq
	pending      []*wireMsg         // P2P messages waiting for the sender's hello
	pendingBytes int
	natsDropped  int // the subscription's drop count already counted
	ready        chan struct{}
	isReady      bool
	closeOne     sync.Once
	failed       chan struct{} // closed when the session cannot proceed
	failErr      error
	failOne      sync.Once
	told         map[string]bool // non-participants told our set
}

// ErrPartiesDiffer is returned when another participant runs the same
// session with a different participant set: the nodes' readiness views
// disagreed (a node had just stopped or started). Retrying the request
// succeeds once the views agree again. The error is a *PartiesDifferError
// that names that participant.
var ErrPartiesDiffer = errors.New("transport: nodes chose different signer sets (their readiness views disagree)")

// Open subscribes to the session's subject (routing.RoundSubject) and starts
// the signed X25519 handshake. Ready is closed once every participant's key
// is known and every participant has ours. A session or node ID that is not
// a valid subject token is an error wrapping routing.ErrInvalidSubject.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Session, error) {
	subject, err := routing.RoundSubject(cfg.SessionID, cfg.Self.NodeID)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	s, err := newSession(ctx, nc, cfg)
	if err != nil {
		return nil, err
	}
	go s.forward()
	go s.work()
	s.sub, err = nc.Subscribe(subject, s.receive)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("transport: subscribe: %w", err)
	}
	if err := s.sub.SetPendingLimits(s.lim.PendingMsgs, s.lim.PendingBytes); err != nil {
		s.Close()
		return nil, fmt.Errorf("transport: pending limits: %w", err)
	}
	if s.isParticipant(cfg.Self.NodeID) {
		go s.helloLoop(ctx)
	}
	// Otherwise this node observes: it chose a signer set without itself
	// and only answers the hellos of members that chose it (see onMsg).
	return s, nil
}

// newSession builds a session that is not subscribed yet (the fuzz tests
// feed its onMsg directly).
func newSession(ctx context.Context, nc *nats.Conn, cfg Config) (*Session, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("transport: ephemeral key: %w", err)
	}
	return &Session{
		cfg: cfg, nc: nc, eph: eph, ctx: ctx, lim: cfg.Limits.withDefaults(),
		out:     make(chan ceremony.Inbound),
		inSig:   make(chan struct{}, 1),
		rawSig:  make(chan struct{}, 1),
		log:     cfg.Logger.With("session", cfg.SessionID),
		done:    make(chan struct{}),
		keys:    map[string]cipher.AEAD{},
		ackedBy: map[string]bool{},
		seenSeq: map[string]map[uint64]bool{},
		ready:   make(chan struct{}),
		failed:  make(chan struct{}),
		told:    map[string]bool{},
	}, nil
}

// Ready is closed when the handshake is complete.
func (s *Session) Ready() <-chan struct{} { return s.ready }

// Recv implements ceremony.Transport.
func (s *Session) Recv() <-chan ceremony.Inbound { return s.out }

// Close unsubscribes and forgets the session keys and what was not read.
func (s *Session) Close() {
	s.closeOne.Do(func() {
		close(s.done)
		if s.sub != nil {
			s.countNATSDrops(s.sub)
			_ = s.sub.Unsubscribe()
		}
		s.rawMu.Lock()
		s.raw, s.rawBytes = nil, 0
		s.rawMu.Unlock()
		s.mu.Lock()
		s.keys = map[string]cipher.AEAD{}
		s.pending, s.pendingBytes = nil, 0
		s.inq, s.inBytes = nil, 0
		s.mu.Unlock()
	})
}

// forward hands the inbox's messages to Recv in order. A message's bytes
// leave the inbox's budget once the ceremony has taken it.
func (s *Session) forward() {
	for {
		s.mu.Lock()
		if len(s.inq) == 0 {
			s.mu.Unlock()
			select {
			case <-s.inSig:
				continue
			case <-s.done:
				return
			}
		}
		m := s.inq[0]
		s.inq[0] = ceremony.Inbound{}
		s.inq = s.inq[1:]
		s.mu.Unlock()
		select {
		case s.out <- m:
		case <-s.done:
			return
		}
		s.mu.Lock()
		s.inBytes = max(0, s.inBytes-len(m.Wire)) // Close may have reset it
		s.mu.Unlock()
	}
}

// inboxFull reports, with s.mu held, whether the inbox has no room left.
func (s *Session) inboxFull() bool {
	return len(s.inq) >= s.lim.InboxMsgs || s.inBytes >= s.lim.InboxBytes
}

// countNATSDrops counts the messages nats.go dropped for the
// subscription's pending limits since the last call.
func (s *Session) countNATSDrops(sub *nats.Subscription) {
	if sub == nil {
		return
	}
	n, err := sub.Dropped()
	if err != nil {
		return
	}
	s.mu.Lock()
	d := n - s.natsDropped
	if d > 0 {
		s.natsDropped = n
	}
	s.mu.Unlock()
	for range d {
		s.drop(DropOverflow, "buffer", "nats_pending")
	}
}

func (s *Session) others() []string {
	var out []string
	for _, p := range s.cfg.Participants {
		if p != s.cfg.Self.NodeID {
			out = append(out, p)
		}
	}
	return out
}

// helloLoop re-sends our signed ephemeral key to each peer until that peer
// shows it holds it: core NATS does not store messages for a peer that has
// not subscribed yet.
func (s *Session) helloLoop(ctx context.Context) {
	delay := 50 * time.Millisecond
	for {
		s.mu.Lock()
		var seen, missing []string
		for _, p := range s.others() {
			if s.keys[p] != nil {
				seen = append(seen, p)
			}
			if !s.ackedBy[p] {
				missing = append(missing, p)
			}
		}
		s.mu.Unlock()
		for _, p := range missing {
			s.sendHello(ctx, p, seen)
		}
		if len(missing) == 0 && len(seen) == len(s.others()) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case <-time.After(delay):
		}
		if delay < 500*time.Millisecond {
			delay *= 2
		}
	}
}

// sendHello sends our signed ephemeral key to peer, listing the peers whose
// keys we hold.
func (s *Session) sendHello(ctx context.Context, peer string, seen []string) {
	m := &wireMsg{Session: s.cfg.SessionID, From: s.cfg.Self.NodeID, To: peer, Kind: "hello", Payload: s.eph.PublicKey().Bytes(), Seen: seen, Parties: s.parties()}
	if err := s.publish(ctx, m); err != nil {
		s.log.Debug("hello publish failed", "to", peer, "err", err)
	}
}

func (s *Session) publish(ctx context.Context, m *wireMsg) error {
	m.Seq = s.seq.Add(1)
	digest := m.signingInput()
	sig, err := s.cfg.Self.Signer.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		return fmt.Errorf("transport: sign round message: %w", err)
	}
	m.Sig = sig
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.send(m.To, b)
}

// Send implements ceremony.Transport: one signed message per recipient, P2P
// payloads encrypted.
func (s *Session) Send(ctx context.Context, o ceremony.Outbound) error {
	targets := o.To
	if len(targets) == 0 {
		targets = s.others()
	}
	for _, to := range targets {
		if to == s.cfg.Self.NodeID {
			continue
		}
		m := &wireMsg{Session: s.cfg.SessionID, From: s.cfg.Self.NodeID, To: to, Kind: "msg", Round: o.Round, BC: o.Broadcast, Payload: o.Wire}
		if !o.Broadcast {
			s.mu.Lock()
			aead := s.keys[to]
			s.mu.Unlock()
			if aead == nil {
				return fmt.Errorf("transport: no session key for %s yet", to)
			}
			// The seq is assigned in publish; reserve it here so the AAD has it.
			seq := s.seq.Add(1)
			nonce := make([]byte, aead.NonceSize())
			if _, err := rand.Read(nonce); err != nil {
				return err
			}
			m.Payload = aead.Seal(nonce, nonce, o.Wire, aad(s.cfg.SessionID, m.From, to, o.Round, seq))
			m.Seq = seq
			if err := s.publishSeq(ctx, m); err != nil {
				return err
			}
			continue
		}
		if err := s.publish(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

func (s *Session) publishSeq(ctx context.Context, m *wireMsg) error {
	sig, err := s.cfg.Self.Signer.Sign(rand.Reader, m.signingInput(), crypto.SHA256)
	if err != nil {
		return fmt.Errorf("transport: sign round message: %w", err)
	}
	m.Sig = sig
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.send(m.To, b)
}

// send publishes an encoded message on the round subject of peer to.
func (s *Session) send(to string, b []byte) error {
	subject, err := routing.RoundSubject(s.cfg.SessionID, to)
	if err != nil {
		return fmt.Errorf("transport: %w", err)
	}
	return s.nc.Publish(subject, b)
}

func aad(session, from, to, round string, seq uint64) []byte {
	out := []byte("hwsigner/v1/p2p")
	for _, s := range []string{session, from, to, round} {
		out = binary.BigEndian.AppendUint32(out, uint32(len(s)))
		out = append(out, s...)
	}
	return binary.BigEndian.AppendUint64(out, seq)
}

func (s *Session) drop(reason string, kv ...any) {
	if s.cfg.Counters != nil {
		s.cfg.Counters.Dropped(reason)
	}
	if (reason == DropOverflow || reason == DropTooLarge) && !s.flooded.Swap(true) {
		s.log.Warn("round messages dropped: a buffer is full or a message too large; further drops are only counted",
			append([]any{"reason", reason}, kv...)...)
		return
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("round message dropped", append([]any{"reason", reason}, kv...)...)
	}
}

// receive is the subscription's callback. It drops, unread, a message
// over the size cap and one that finds the queue or the inbox full, and
// queues the rest for work; it never blocks.
func (s *Session) receive(msg *nats.Msg) {
	s.countNATSDrops(msg.Sub)
	if len(msg.Data) > s.lim.MaxMessageBytes {
		s.drop(DropTooLarge, "bytes", len(msg.Data))
		return
	}
	s.mu.Lock()
	full := s.inboxFull()
	s.mu.Unlock()
	if full {
		s.drop(DropOverflow, "buffer", "inbox")
		return
	}
	s.rawMu.Lock()
	if len(s.raw) >= s.lim.QueueMsgs || s.rawBytes+len(msg.Data) > s.lim.QueueBytes {
		s.rawMu.Unlock()
		s.drop(DropOverflow, "buffer", "queue")
		return
	}
	s.raw = append(s.raw, msg)
	s.rawBytes += len(msg.Data)
	s.rawMu.Unlock()
	select {
	case s.rawSig <- struct{}{}:
	default:
	}
}

// work handles the queued messages in order until the session closes.
func (s *Session) work() {
	for {
		s.rawMu.Lock()
		if len(s.raw) == 0 {
			s.rawMu.Unlock()
			select {
			case <-s.rawSig:
				continue
			case <-s.done:
				return
			}
		}
		msg := s.raw[0]
		s.raw[0] = nil
		s.raw = s.raw[1:]
		s.rawMu.Unlock()
		s.onMsg(msg)
		s.rawMu.Lock()
		s.rawBytes = max(0, s.rawBytes-len(msg.Data)) // Close may have reset it
		s.rawMu.Unlock()
	}
}

// onMsg handles one message. The checks run cheapest first: size and the
// inbox's room before the message is decoded, sender, session, recipient
// and the sender's allowance before its signature is verified.
func (s *Session) onMsg(msg *nats.Msg) {
	if len(msg.Data) > s.lim.MaxMessageBytes {
		s.drop(DropTooLarge, "bytes", len(msg.Data))
		return
	}
	s.mu.Lock()
	full := s.inboxFull()
	s.mu.Unlock()
	if full {
		s.drop(DropOverflow, "buffer", "inbox")
		return
	}
	var m wireMsg
	if err := json.Unmarshal(msg.Data, &m); err != nil {
		s.drop(DropMalformed)
		return
	}
	pub := s.cfg.Peers[m.From]
	if pub == nil || m.From == s.cfg.Self.NodeID {
		s.drop(DropUnknownPeer, "from", m.From)
		return
	}
	if m.Session != s.cfg.SessionID || m.To != s.cfg.Self.NodeID {
		s.drop(DropWrongSession, "from", m.From)
		return
	}
	// Only verified messages count, so a forgery cannot use up a peer's
	// allowance.
	if s.exhausted(m.From) {
		s.drop(DropOverflow, "buffer", "peer_allowance", "from", m.From)
		return
	}
	if !ecdsa.VerifyASN1(pub, m.signingInput(), m.Sig) {
		s.drop(DropBadSignature, "from", m.From)
		return
	}
	if m.Kind == "hello" && !slices.Equal(m.Parties, s.parties()) {
		s.otherParties(&m)
		return
	}
	if !s.isParticipant(m.From) || !s.isParticipant(s.cfg.Self.NodeID) {
		s.drop(DropUnknownPeer, "from", m.From)
		return
	}
	s.mu.Lock()
	reply := false
	defer func() {
		var held []string
		if reply {
			for p := range s.keys {
				held = append(held, p)
			}
		}
		s.mu.Unlock()
		if reply {
			// Answer at once instead of at the hello loop's next tick: the
			// peer is subscribed (it just sent from its session) and lacks
			// our key, so this saves a resend period on every session.
			s.sendHello(s.ctx, m.From, held)
		}
	}()
	seen := s.seenSeq[m.From]
	if seen == nil {
		seen = map[uint64]bool{}
		s.seenSeq[m.From] = seen
	}
	if seen[m.Seq] {
		s.drop(DropReplay, "from", m.From, "seq", m.Seq)
		return
	}
	if len(seen) >= s.lim.PerPeerMsgs {
		s.drop(DropOverflow, "buffer", "peer_allowance", "from", m.From)
		return
	}
	seen[m.Seq] = true
	switch m.Kind {
	case "hello":
		reply = s.onHello(&m)
	case "msg":
		if !m.BC && s.keys[m.From] == nil {
			if len(s.pending) >= s.lim.EarlyMsgs || s.pendingBytes+len(m.Payload) > s.lim.EarlyBytes {
				s.drop(DropOverflow, "buffer", "awaiting_hello", "from", m.From)
				return
			}
			s.pending = append(s.pending, &m)
			s.pendingBytes += len(m.Payload)
			return
		}
		s.deliver(&m)
	default:
		s.drop(DropMalformed, "kind", m.Kind)
	}
}

// exhausted reports whether peer has had its allowance of messages
// accepted in this session (checked before a signature is verified).
func (s *Session) exhausted(peer string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seenSeq[peer]) >= s.lim.PerPeerMsgs
}

// PartiesDifferError is the error of a session that a participant's hello
// with another participant set made fail: Node chose Theirs, this node
// chose Ours. It wraps ErrPartiesDiffer.
type PartiesDifferError struct {
	Node         string
	Theirs, Ours []string
}

func (e *PartiesDifferError) Error() string {
	return fmt.Sprintf("%v: %s chose %v, this node chose %v", ErrPartiesDiffer, e.Node, e.Theirs, e.Ours)
}

// Unwrap returns ErrPartiesDiffer.
func (e *PartiesDifferError) Unwrap() error { return ErrPartiesDiffer }

// otherParties handles an authentic hello whose sender runs this session
// with another participant set (their readiness views disagreed). If the
// sender is a participant this node waits for, and this node takes part,
// the session fails at once (it cannot complete: the sender will not run
// it with us) instead of waiting out the deadline. A sender that is not a
// participant cannot make the session fail: its hello is only counted
// (DropPartiesDiffer). Either way the sender is told our set once, so that
// it fails fast too.
func (s *Session) otherParties(m *wireMsg) {
	ours := s.parties()
	if s.isParticipant(m.From) && s.isParticipant(s.cfg.Self.NodeID) {
		s.fail(&PartiesDifferError{Node: m.From, Theirs: slices.Clone(m.Parties), Ours: ours})
	} else {
		s.drop(DropPartiesDiffer, "from", m.From, "theirs", m.Parties, "ours", ours)
	}
	s.mu.Lock()
	tell := !s.told[m.From]
	s.told[m.From] = true
	s.mu.Unlock()
	if tell {
		s.sendHello(s.ctx, m.From, nil)
	}
}

// onHello runs with s.mu held. It reports whether the sender still lacks
// our key (its hello does not list us) and should get our hello now.
func (s *Session) onHello(m *wireMsg) (reply bool) {
	for _, p := range m.Seen {
		if p == s.cfg.Self.NodeID {
			s.ackedBy[m.From] = true
		}
	}
	reply = !s.ackedBy[m.From]
	if s.keys[m.From] == nil {
		peerPub, err := ecdh.X25519().NewPublicKey(m.Payload)
		if err != nil {
			s.drop(DropMalformed, "from", m.From)
			return false
		}
		shared, err := s.eph.ECDH(peerPub)
		if err != nil {
			s.drop(DropMalformed, "from", m.From)
			return false
		}
		a, b := s.cfg.Self.NodeID, m.From
		if b < a {
			a, b = b, a
		}
		key, err := hkdf.Key(sha256.New, shared, []byte(s.cfg.SessionID), "hwsigner/v1/p2p-key|"+a+"|"+b, 32)
		clear(shared)
		if err != nil {
			return false
		}
		block, _ := aes.NewCipher(key)
		clear(key)
		aead, _ := cipher.NewGCM(block)
		s.keys[m.From] = aead
		// Deliver what waited for this key.
		rest := s.pending[:0]
		for _, p := range s.pending {
			if p.From == m.From {
				s.pendingBytes -= len(p.Payload)
				s.deliver(p)
			} else {
				rest = append(rest, p)
			}
		}
		clear(s.pending[len(rest):])
		s.pending = rest
	}
	if !s.isReady && len(s.keys) == len(s.others()) {
		// Ready as soon as we hold every key; a peer that still lacks ours
		// gets it from the reply above or the hello loop, and keeps our P2P
		// messages pending until then.
		s.isReady = true
		close(s.ready)
	}
	return reply
}

// deliver runs with s.mu held.
func (s *Session) deliver(m *wireMsg) {
	payload := m.Payload
	if !m.BC {
		aead := s.keys[m.From]
		ns := aead.NonceSize()
		if len(payload) < ns+aead.Overhead() {
			s.drop(DropDecrypt, "from", m.From)
			return
		}
		pt, err := aead.Open(nil, payload[:ns], payload[ns:], aad(m.Session, m.From, m.To, m.Round, m.Seq))
		if err != nil {
			s.drop(DropDecrypt, "from", m.From)
			return
		}
		payload = pt
	}
	if len(s.inq) >= s.lim.InboxMsgs || s.inBytes+len(payload) > s.lim.InboxBytes {
		s.drop(DropOverflow, "buffer", "inbox", "from", m.From)
		return
	}
	s.inq = append(s.inq, ceremony.Inbound{From: m.From, Broadcast: m.BC, Wire: payload})
	s.inBytes += len(payload)
	select {
	case s.inSig <- struct{}{}:
	default:
	}
}

// parties is the sorted participant set.
func (s *Session) parties() []string {
	ps := slices.Clone(s.cfg.Participants)
	slices.Sort(ps)
	return ps
}

// fail marks the session as unable to proceed.
func (s *Session) fail(err error) {
	s.failOne.Do(func() {
		s.failErr = err
		close(s.failed)
	})
}

func (s *Session) isParticipant(id string) bool {
	for _, p := range s.cfg.Participants {
		if p == id {
			return true
		}
	}
	return false
}

// ErrNotReady is returned when the handshake did not complete in time.
var ErrNotReady = errors.New("transport: peers did not complete the session handshake")

// WaitReady waits for the handshake or ctx.
func (s *Session) WaitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-s.failed:
		return s.failErr
	case <-ctx.Done():
		s.mu.Lock()
		var missing []string
		for _, p := range s.others() {
			if s.keys[p] == nil {
				missing = append(missing, p)
			}
		}
		s.mu.Unlock()
		return &NotReadyError{Missing: missing, Err: ctx.Err()}
	}
}

// NotReadyError is WaitReady's error when the handshake did not complete in
// time: Missing are the participants that did not answer (sorted as the
// participant list). It wraps ErrNotReady and the context's error.
type NotReadyError struct {
	Missing []string
	Err     error
}

func (e *NotReadyError) Error() string {
	return fmt.Sprintf("%v: no answer from %v: %v", ErrNotReady, e.Missing, e.Err)
}

// Unwrap returns ErrNotReady and the context's error.
func (e *NotReadyError) Unwrap() []error { return []error{ErrNotReady, e.Err} }
