// Package transport carries one ceremony's round messages between nodes over
// core NATS. Every message is signed by the sending node's identity key (held
// in its HSM or TPM) over (session, from, to, kind, round, seq, payload); P2P
// payloads are also encrypted with AES-256-GCM under pairwise keys derived
// from ephemeral X25519 keys that the nodes exchange, signed, at session start
// (AAD = session|from|to|round|seq). Keys die with the session.
//
// A message from an unknown peer, with a bad signature, for another session
// or replayed is dropped and counted before it can reach tss-lib.
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
	in   chan ceremony.Inbound
	log  *slog.Logger
	seq  atomic.Uint64
	done chan struct{}
	ctx  context.Context // the session's, for replies sent from the NATS callback

	mu       sync.Mutex
	keys     map[string]cipher.AEAD // pairwise, by peer
	ackedBy  map[string]bool        // peers whose hello lists us
	seenSeq  map[string]map[uint64]bool
	pending  []*wireMsg // P2P messages waiting for the sender's hello
	ready    chan struct{}
	isReady  bool
	closeOne sync.Once
	failed   chan struct{} // closed when the session cannot proceed
	failErr  error
	failOne  sync.Once
	told     map[string]bool // non-participants told our set
}

// ErrPartiesDiffer is returned when another committee member runs the same
// session with a different participant set: the nodes' readiness views
// disagreed (a node had just stopped or started). Retrying the request
// succeeds once the views agree again.
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
	s.sub, err = nc.Subscribe(subject, s.onMsg)
	if err != nil {
		return nil, fmt.Errorf("transport: subscribe: %w", err)
	}
	if err := s.sub.SetPendingLimits(-1, -1); err != nil {
		_ = s.sub.Unsubscribe()
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
		cfg: cfg, nc: nc, eph: eph, ctx: ctx,
		in:      make(chan ceremony.Inbound, 1024),
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
func (s *Session) Recv() <-chan ceremony.Inbound { return s.in }

// Close unsubscribes and forgets the session keys.
func (s *Session) Close() {
	s.closeOne.Do(func() {
		close(s.done)
		_ = s.sub.Unsubscribe()
		s.mu.Lock()
		s.keys = map[string]cipher.AEAD{}
		s.pending = nil
		s.mu.Unlock()
	})
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
	s.log.Debug("round message dropped", append([]any{"reason", reason}, kv...)...)
}

func (s *Session) onMsg(msg *nats.Msg) {
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
	if !ecdsa.VerifyASN1(pub, m.signingInput(), m.Sig) {
		s.drop(DropBadSignature, "from", m.From)
		return
	}
	if m.Session != s.cfg.SessionID || m.To != s.cfg.Self.NodeID {
		s.drop(DropWrongSession, "from", m.From)
		return
	}
	if m.Kind == "hello" && !slices.Equal(m.Parties, s.parties()) {
		// An authentic committee member runs this session with another
		// signer set (the readiness views disagreed): fail fast instead of
		// waiting out the deadline, and tell it our set so that it fails
		// fast too. An observer (not in its own set) only tells.
		s.fail(fmt.Errorf("%w: %s chose %v, this node chose %v", ErrPartiesDiffer, m.From, m.Parties, s.parties()))
		s.mu.Lock()
		tell := !s.told[m.From]
		s.told[m.From] = true
		s.mu.Unlock()
		if tell {
			s.sendHello(s.ctx, m.From, nil)
		}
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
	seen[m.Seq] = true
	switch m.Kind {
	case "hello":
		reply = s.onHello(&m)
	case "msg":
		if !m.BC && s.keys[m.From] == nil {
			s.pending = append(s.pending, &m)
			return
		}
		s.deliver(&m)
	default:
		s.drop(DropMalformed, "kind", m.Kind)
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
				s.deliver(p)
			} else {
				rest = append(rest, p)
			}
		}
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
	select {
	case s.in <- ceremony.Inbound{From: m.From, Broadcast: m.BC, Wire: payload}:
	default:
		s.log.Warn("round inbox full; message dropped", "from", m.From)
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
		return fmt.Errorf("%w: no answer from %v: %w", ErrNotReady, missing, ctx.Err())
	}
}
