package ceremony

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bnb-chain/tss-lib/v3/tss"
)

// Equivocation detection.
//
// tss-lib assumes a reliable broadcast: every honest party sees the same
// broadcast message from each sender. A transport sends a broadcast as one
// copy per peer, so a malicious sender can hand different copies to
// different peers (in an EdDSA keygen, two honest nodes then finish with
// different public keys). The driver closes that gap on its own, whatever
// the transport:
//
//   - Every broadcast a node receives from another node is recorded as a
//     digest of (session, sender, sender's committee role, tss-lib message
//     type, payload), under an ID of (session, sender, role, type).
//   - Every message the node sends to a peer carries, in its envelope, the
//     digests it recorded since its last message to that peer (except the
//     peer's own broadcasts). The receiver compares each with its own
//     record of that broadcast, at once or when its own copy arrives.
//   - Keygen and resharing (echoAwait): after the node's last round, one
//     echo message per peer carries the digests not yet echoed, and the
//     driver waits for every peer's echo before the output is returned, so
//     nothing is sealed or published before every broadcast was compared.
//     Signing (echoPiggyback) has no such round, to stay as fast as it
//     was: tss-lib's final check refuses a bad signature, so a lie in the
//     last round fails the signing (naming the liar when a peer still
//     running compares the failed party's abort echo).
//   - A node that aborts sends an abort echo (also after its final echo):
//     its digests and why (its party failed, or the equivocation it
//     found). A peer that
//     receives one aborts too, at once (it would otherwise wait for its
//     deadline), after comparing the digests. A party that failed waits up
//     to echoGrace for its peers' echoes, to name a liar if there is one.
//
// A mismatch ends the ceremony of every honest party with an
// *EquivocationError (ErrEquivocation), which names the sender, the round
// and the peer whose digest differed. When the sender sent different
// copies, every honest recipient finds the mismatch itself; a mismatch
// only one node can see (a false echo) reaches the others through its
// abort echo. Ceremonies of two nodes need no echo (each broadcast has one
// recipient): their envelopes carry none and no echo message is sent.
// Messages between the two local parties of one node (a reshare) are not
// recorded.

// ErrEquivocation: a peer's broadcast differed between the parties that
// received it (or a peer echoed a digest other than what was received).
// The error is an *EquivocationError.
var ErrEquivocation = errors.New("ceremony: a broadcast differs between parties")

// EquivocationError names a broadcast whose copies differed: Sender's
// broadcast of Round as Holder received it differs from what Reporter
// echoed. Either Sender sent different copies or Reporter echoed a false
// digest; both are Byzantine, and the honest parties abort. Relayed is set
// when Holder (another node) found it and this node learned it from
// Holder's abort echo.
type EquivocationError struct {
	Sender   string // node whose broadcast differed
	Round    string // tss-lib message type, with the committee in a reshare
	Holder   string // node whose copy differs from Reporter's echo
	Reporter string // the node whose echo differed from Holder's copy
	Relayed  bool
}

func (e *EquivocationError) Error() string {
	s := fmt.Sprintf("%s's %s broadcast differs between %s and %s (reported by %s)", e.Sender, e.Round, e.Holder, e.Reporter, e.Reporter)
	if e.Relayed {
		return "ceremony: " + e.Holder + " aborted: " + s
	}
	return "ceremony: " + s
}

// Is makes errors.Is(err, ErrEquivocation) hold.
func (e *EquivocationError) Is(target error) bool { return target == ErrEquivocation }

// The envelope around every message the driver sends (keygen, signing and
// resharing alike), inside the payload the transport signs:
//
//	0      version (envelopeVersion)
//	1      kind: kindTSS, kindEcho (a final echo) or kindAbort
//	2      role of the sending party (roleOnly, roleOld, roleNew; 0 for echoes)
//	3      mask of the receiving node's roles it is for (0 for echoes)
//	4-19   session tag: SHA-256 of the session nonce, first 16 bytes
//	20-21  number of echo entries, big-endian
//	       entries: 16-byte broadcast ID, 32-byte digest
//	       kindTSS: tss-lib's wire bytes; kindEcho: nothing; kindAbort: the
//	       reason, abortFailed, or abortEquivocation and three strings of
//	       at most 255 bytes (a length byte each): sender, round, reporter
//
// A message whose version, tag or layout does not match is dropped, so an
// echo from another session is never counted.
const (
	envelopeVersion byte = 2
	kindTSS         byte = 0
	kindEcho        byte = 1
	kindAbort       byte = 2
	tagLen               = 16
	idLen                = 16
	entryLen             = idLen + sha256.Size
	headerLen            = 4 + tagLen + 2
	// maxEntries bounds one envelope's echoes, maxPending the echoes kept
	// for broadcasts not received (yet): a peer cannot grow them at will.
	maxEntries = 4096
	maxPending = 1 << 15
)

// Reasons of an abort echo.
const (
	abortFailed       byte = 1
	abortEquivocation byte = 2
)

// echoRound is the Outbound.Round of an echo message.
const echoRound = "hwsigner.ceremony.Echo"

// echoGrace bounds how long a failed party waits for its peers' echoes.
const echoGrace = 3 * time.Second

// echoMode says when a ceremony exchanges its final echo.
type echoMode int

const (
	// echoAwait: send the final echo after the last round and wait for
	// every peer's before the output is returned (keygen, resharing).
	echoAwait echoMode = iota
	// echoPiggyback: only the echoes on the tss messages, and abort
	// echoes; no final echo (signing).
	echoPiggyback
)

type bcastID [idLen]byte
type digest [sha256.Size]byte

type echoEntry struct {
	id bcastID
	d  digest
}

type envelope struct {
	kind, from, to byte
	entries        []echoEntry
	wire           []byte // kindTSS: tss-lib's wire bytes; kindAbort: the reason
}

func (e envelope) encode(tag [tagLen]byte) []byte {
	b := make([]byte, headerLen, headerLen+len(e.entries)*entryLen+len(e.wire))
	b[0], b[1], b[2], b[3] = envelopeVersion, e.kind, e.from, e.to
	copy(b[4:], tag[:])
	binary.BigEndian.PutUint16(b[4+tagLen:], uint16(len(e.entries)))
	for _, x := range e.entries {
		b = append(b, x.id[:]...)
		b = append(b, x.d[:]...)
	}
	return append(b, e.wire...)
}

// parseEnvelope decodes b; ok is false for another version, another
// session's tag, an unknown kind or a short message.
func parseEnvelope(b []byte, tag [tagLen]byte) (envelope, bool) {
	if len(b) < headerLen || b[0] != envelopeVersion || [tagLen]byte(b[4:4+tagLen]) != tag {
		return envelope{}, false
	}
	e := envelope{kind: b[1], from: b[2], to: b[3]}
	n := int(binary.BigEndian.Uint16(b[4+tagLen:]))
	rest := b[headerLen:]
	if n > maxEntries || len(rest) < n*entryLen {
		return envelope{}, false
	}
	if n > 0 {
		e.entries = make([]echoEntry, n)
	}
	for i := range e.entries {
		e.entries[i].id = bcastID(rest[:idLen])
		e.entries[i].d = digest(rest[idLen:entryLen])
		rest = rest[entryLen:]
	}
	switch e.kind {
	case kindTSS:
		if len(rest) == 0 {
			return envelope{}, false
		}
		e.wire = rest
	case kindEcho, kindAbort:
		if e.from != 0 || e.to != 0 || (e.kind == kindEcho) != (len(rest) == 0) {
			return envelope{}, false
		}
		e.wire = rest
	default:
		return envelope{}, false
	}
	return e, true
}

// sessionTag binds envelopes to the session: the hash of its nonce.
func sessionTag(sessionID string) [tagLen]byte {
	h := sha256.New()
	h.Write([]byte("hwsigner/echo-session/v1\x00"))
	h.Write(SessionNonce(sessionID).Bytes())
	return [tagLen]byte(h.Sum(nil))
}

func hashFields(domain string, tag [tagLen]byte, sender string, role byte, typ string) []byte {
	var b []byte
	b = append(b, domain...)
	b = append(b, 0)
	b = append(b, tag[:]...)
	for _, s := range []string{sender, typ} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return append(b, role)
}

// idOf names one broadcast of a session: its sender, role and type.
func idOf(tag [tagLen]byte, sender string, role byte, typ string) bcastID {
	h := sha256.Sum256(hashFields("hwsigner/echo-id/v1", tag, sender, role, typ))
	return bcastID(h[:idLen])
}

// digestOf is what every recipient of one broadcast must agree on.
func digestOf(tag [tagLen]byte, sender string, role byte, typ string, wire []byte) digest {
	h := sha256.New()
	h.Write(hashFields("hwsigner/echo-digest/v1", tag, sender, role, typ))
	h.Write(wire)
	return digest(h.Sum(nil))
}

// received is one broadcast this node received.
type received struct {
	id     bcastID
	sender string
	role   byte
	typ    string
	d      digest
}

// claim is a peer's digest of a broadcast this node has not received (yet).
type claim struct {
	reporter string
	d        digest
}

// echoes is one ceremony's record of received broadcasts and of the
// peers' echoes.
type echoes struct {
	session string
	self    string
	peers   []string
	mode    echoMode
	on      bool // at least two peers: a broadcast can reach two of them
	tag     [tagLen]byte
	allIn   chan struct{} // closed when every peer's echo message arrived

	mu       sync.Mutex
	got      map[bcastID]*received
	order    []*received
	sent     map[string]int // peer -> how much of order was echoed to it
	pending  map[bcastID][]claim
	npending int
	finals   map[string]bool
	closed   bool
	sentKind map[byte]bool
}

func newEchoes(sessionID, self string, peers []string, mode echoMode) *echoes {
	return &echoes{
		session: sessionID, self: self, peers: peers, mode: mode, on: len(peers) >= 2,
		tag: sessionTag(sessionID), allIn: make(chan struct{}),
		got: map[bcastID]*received{}, sent: map[string]int{}, pending: map[bcastID][]claim{}, finals: map[string]bool{},
		sentKind: map[byte]bool{},
	}
}

func (ec *echoes) isPeer(node string) bool {
	for _, p := range ec.peers {
		if p == node {
			return true
		}
	}
	return false
}

// record notes a broadcast received from sender's party of role, whose
// tss-lib type is typ; a peer's earlier echo of it that differs is an
// equivocation. A second copy of the same broadcast is ignored (tss-lib
// takes the first).
func (ec *echoes) record(sender string, role byte, typ string, wire []byte) error {
	if !ec.on {
		return nil
	}
	id := idOf(ec.tag, sender, role, typ)
	ec.mu.Lock()
	defer ec.mu.Unlock()
	if ec.got[id] != nil {
		return nil
	}
	r := &received{id: id, sender: sender, role: role, typ: typ, d: digestOf(ec.tag, sender, role, typ, wire)}
	ec.got[id] = r
	ec.order = append(ec.order, r)
	claims := ec.pending[id]
	delete(ec.pending, id)
	ec.npending -= len(claims)
	for _, c := range claims {
		if c.d != r.d {
			return ec.equivocation(r, c.reporter)
		}
	}
	return nil
}

// check compares a peer's echoed digests with this node's records; those
// of broadcasts not received yet wait for them.
func (ec *echoes) check(reporter string, entries []echoEntry) error {
	if !ec.on || len(entries) == 0 {
		return nil
	}
	ec.mu.Lock()
	defer ec.mu.Unlock()
	for _, e := range entries {
		if r := ec.got[e.id]; r != nil {
			if r.d != e.d {
				return ec.equivocation(r, reporter)
			}
			continue
		}
		if ec.npending >= maxPending || hasClaim(ec.pending[e.id], reporter) {
			continue
		}
		ec.pending[e.id] = append(ec.pending[e.id], claim{reporter: reporter, d: e.d})
		ec.npending++
	}
	return nil
}

func hasClaim(cs []claim, reporter string) bool {
	for _, c := range cs {
		if c.reporter == reporter {
			return true
		}
	}
	return false
}

func (ec *echoes) equivocation(r *received, reporter string) error {
	round := r.typ
	if i := strings.LastIndexByte(round, '.'); i >= 0 {
		round = round[i+1:]
	}
	switch r.role {
	case roleOld:
		round = "old-committee " + round
	case roleNew:
		round = "new-committee " + round
	}
	return &EquivocationError{Sender: r.sender, Round: round, Holder: ec.self, Reporter: reporter}
}

// claimsFor returns the digests not yet echoed to peer (except its own
// broadcasts) and marks them echoed.
func (ec *echoes) claimsFor(peer string) []echoEntry {
	if !ec.on {
		return nil
	}
	ec.mu.Lock()
	defer ec.mu.Unlock()
	var out []echoEntry
	for _, r := range ec.order[ec.sent[peer]:] {
		if r.sender != peer {
			out = append(out, echoEntry{id: r.id, d: r.d})
		}
	}
	ec.sent[peer] = len(ec.order)
	return out
}

// gotFinal notes peer's echo message (final or abort).
func (ec *echoes) gotFinal(peer string) {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	ec.finals[peer] = true
	if ec.closed || len(ec.finals) < len(ec.peers) {
		return
	}
	ec.closed = true
	close(ec.allIn)
}

// sendEcho sends this node's echo message of kind (kindEcho, kindAbort
// with reason) to every peer, once per kind.
func (ec *echoes) sendEcho(ctx context.Context, tr Transport, kind byte, reason []byte) error {
	ec.mu.Lock()
	done := !ec.on || ec.sentKind[kind]
	ec.sentKind[kind] = true
	ec.mu.Unlock()
	if done {
		return nil
	}
	for _, p := range ec.peers {
		env := envelope{kind: kind, entries: ec.claimsFor(p), wire: reason}.encode(ec.tag)
		if err := tr.Send(ctx, Outbound{To: []string{p}, Round: echoRound, Wire: env}); err != nil {
			return fmt.Errorf("send echo: %w", err)
		}
	}
	return nil
}

// abortReason encodes why this node aborts with err.
func abortReason(err error) []byte {
	var eq *EquivocationError
	if !errors.As(err, &eq) {
		return []byte{abortFailed}
	}
	b := []byte{abortEquivocation}
	for _, s := range []string{eq.Sender, eq.Round, eq.Reporter} {
		if len(s) > 255 {
			s = s[:255]
		}
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return b
}

// peerAborted is the error of a peer's abort echo with reason b: the
// equivocation it found, relayed, or a failure. What a peer claims is
// checked only for form: node names must be this session's, the round a
// short label.
func (ec *echoes) peerAborted(peer string, b []byte) error {
	failed := fmt.Errorf("%w: %s aborted the ceremony", ErrParty, peer)
	if len(b) == 0 || b[0] != abortEquivocation {
		return failed
	}
	var f [3]string
	rest := b[1:]
	for i := range f {
		if len(rest) == 0 || len(rest) < 1+int(rest[0]) {
			return failed
		}
		f[i], rest = string(rest[1:1+int(rest[0])]), rest[1+int(rest[0]):]
	}
	node := func(n string) bool { return n == ec.self || ec.isPeer(n) }
	if len(rest) != 0 || !node(f[0]) || !node(f[2]) || !label(f[1]) {
		return failed
	}
	return &EquivocationError{Sender: f[0], Round: f[1], Holder: peer, Reporter: f[2], Relayed: true}
}

// label reports whether s is a round label as equivocation names one.
func label(s string) bool {
	if s == "" || len(s) > 96 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ' ' || c == '-') {
			return false
		}
	}
	return true
}

// messageType is the tss-lib type of a message's wire bytes, "" if they do
// not parse (tss-lib then refuses the message itself).
func messageType(wire []byte, from *tss.PartyID, bc bool) string {
	m, err := tss.ParseWireMessage(wire, from, bc)
	if err != nil {
		return ""
	}
	return m.Type()
}
