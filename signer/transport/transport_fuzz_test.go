package transport

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/signer/ceremony"
)

// The session under test is node0 of session "sess-1" with participants
// node0..node2; node3 is a cluster peer outside this session's committee.
const fuzzSession = "sess-1"

var fuzzParticipants = []string{"node0", "node1", "node2"}

// fuzzIdentity returns a fixed P-256 identity key per node, so that signed
// seeds verify in every run.
func fuzzIdentity(node string) *ecdsa.PrivateKey {
	h := sha256.Sum256([]byte("fuzz identity " + node))
	d := new(big.Int).SetBytes(h[:])
	d.Mod(d, elliptic.P256().Params().N)
	x, y := elliptic.P256().ScalarBaseMult(d.Bytes())
	return &ecdsa.PrivateKey{PublicKey: ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}, D: d}
}

// fuzzPeerEph is node1's fixed X25519 session key in the handshake the
// harness performs.
var fuzzPeerEph = func() *ecdh.PrivateKey {
	h := sha256.Sum256([]byte("fuzz eph node1"))
	k, err := ecdh.X25519().NewPrivateKey(h[:])
	if err != nil {
		panic(err)
	}
	return k
}()

type dropCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *dropCounter) Dropped(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[reason]++
}

func fuzzNewSession(t testing.TB) (*Session, *dropCounter) {
	peers := map[string]*ecdsa.PublicKey{}
	for _, n := range []string{"node0", "node1", "node2", "node3"} {
		peers[n] = &fuzzIdentity(n).PublicKey
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // replies (sendHello) stop before publishing: there is no NATS connection
	dc := &dropCounter{n: map[string]int{}}
	s, err := newSession(ctx, nil, Config{
		SessionID:    fuzzSession,
		Self:         Identity{NodeID: "node0", Signer: fuzzIdentity("node0")},
		Participants: fuzzParticipants,
		Peers:        peers,
		Counters:     dc,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, dc
}

// signWire signs m as node signer and encodes it.
func signWire(t testing.TB, m *wireMsg, signer *ecdsa.PrivateKey) []byte {
	sig, err := ecdsa.SignASN1(rand.Reader, signer, m.signingInput())
	if err != nil {
		t.Fatal(err)
	}
	m.Sig = sig
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pairwiseAEAD is the key node1 derives with s (as onHello does on s's side).
func pairwiseAEAD(t testing.TB, s *Session) cipher.AEAD {
	shared, err := fuzzPeerEph.ECDH(s.eph.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	key, err := hkdf.Key(sha256.New, shared, []byte(fuzzSession), "hwsigner/v1/p2p-key|node0|node1", 32)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	return aead
}

func node1Hello(t testing.TB, seq uint64) []byte {
	return signWire(t, &wireMsg{Session: fuzzSession, From: "node1", To: "node0", Kind: "hello", Seq: seq,
		Payload: fuzzPeerEph.PublicKey().Bytes(), Seen: []string{"node0"}, Parties: fuzzParticipants}, fuzzIdentity("node1"))
}

// drain returns what the session delivered to the ceremony inbox (a
// session from newSession has no forward goroutine: the inbox keeps it).
func drain(s *Session) []ceremony.Inbound {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.inq
	s.inq, s.inBytes = nil, 0
	return out
}

// authentic reports whether raw is a message the session may deliver: it
// decodes, is signed by the identity key of its sender, a participant other
// than node0, and is addressed to node0 in this session.
func authentic(raw []byte) bool {
	var m wireMsg
	if json.Unmarshal(raw, &m) != nil || m.From == "node0" || !slices.Contains(fuzzParticipants, m.From) {
		return false
	}
	pub := &fuzzIdentity(m.From).PublicKey
	return ecdsa.VerifyASN1(pub, m.signingInput(), m.Sig) && m.Session == fuzzSession && m.To == "node0" && m.Kind == "msg"
}

func transportSeeds(t testing.TB) map[string][]byte {
	k1 := fuzzIdentity("node1")
	bc := func(m wireMsg) []byte { return signWire(t, &m, k1) }
	msg := wireMsg{Session: fuzzSession, From: "node1", To: "node0", Kind: "msg", Round: "KGRound1Message", Seq: 7, BC: true, Payload: []byte("round-1 broadcast")}
	p2p := msg
	p2p.BC, p2p.Seq, p2p.Payload = false, 8, make([]byte, 12+16+5)
	otherParties := wireMsg{Session: fuzzSession, From: "node2", To: "node0", Kind: "hello", Seq: 1, Payload: make([]byte, 32), Parties: []string{"node0", "node2"}}
	outsiderParties := wireMsg{Session: fuzzSession, From: "node3", To: "node0", Kind: "hello", Seq: 1, Payload: make([]byte, 32), Parties: []string{"node0", "node1", "node3"}}
	fromOutsider := msg
	fromOutsider.From = "node3"
	// Forged: a genuine signature over another payload.
	fm := msg
	signWire(t, &fm, k1)
	fm.Payload = []byte("forged payload")
	forged, _ := json.Marshal(&fm)
	wrongSession, wrongTo, badKind, badHello := msg, msg, msg, wireMsg{Session: fuzzSession, From: "node1", To: "node0", Kind: "hello", Seq: 2, Payload: []byte{1, 2, 3}, Parties: fuzzParticipants}
	wrongSession.Session = "sess-2"
	wrongTo.To = "node2"
	badKind.Kind = "bogus"
	return map[string][]byte{
		"hello":            node1Hello(t, 1),
		"broadcast":        bc(msg),
		"p2p":              bc(p2p),
		"other-parties":    signWire(t, &otherParties, fuzzIdentity("node2")),
		"outsider":         signWire(t, &fromOutsider, fuzzIdentity("node3")),
		"outsider-parties": signWire(t, &outsiderParties, fuzzIdentity("node3")),
		"forged":           forged,
		"wrong-session":    bc(wrongSession),
		"wrong-to":         bc(wrongTo),
		"bad-kind":         bc(badKind),
		"bad-hello-key":    bc(badHello),
		"unknown-peer":     []byte(`{"s":"sess-1","f":"node9","t":"node0","k":"msg","n":1,"b":true,"p":"AAAA","sig":"AAAA"}`),
		"not-json":         []byte("not json"),
		"wrong-types":      []byte(`{"s":1,"n":-1,"p":"!","sig":[]}`),
	}
}

// FuzzRoundMessage feeds arbitrary bytes to a session's NATS message handler:
// it never panics and never delivers to the ceremony inbox a message that is
// not signed by a participant for this session and node. To reach the code
// after the signature check, the input is also re-signed by the identity key
// of its claimed sender (when that is a cluster peer), P2P payloads encrypted
// under the pairwise key when encrypt is set, optionally after node1's
// handshake: such a message is delivered at most once (a second copy is a
// replay), and the same message signed with another peer's key is dropped.
func FuzzRoundMessage(f *testing.F) {
	seeds := transportSeeds(f)
	if os.Getenv("WRITE_FUZZ_SEEDS") != "" {
		dir := filepath.Join("testdata", "fuzz", "FuzzRoundMessage")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			f.Fatal(err)
		}
		for name, b := range seeds {
			for _, v := range []struct {
				suffix             string
				handshake, encrypt bool
			}{{"", false, false}, {"-handshake", true, true}} {
				body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbool(%v)\nbool(%v)\n", b, v.handshake, v.encrypt)
				if err := os.WriteFile(filepath.Join(dir, name+v.suffix), []byte(body), 0o644); err != nil {
					f.Fatal(err)
				}
			}
		}
	}
	for _, b := range seeds {
		f.Add(b, false, false)
		f.Add(b, true, true)
	}
	roundSubject, err := routing.RoundSubject(fuzzSession, "node0")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte, handshake, encrypt bool) {
		s, _ := fuzzNewSession(t)
		feed := func(b []byte) []ceremony.Inbound {
			s.onMsg(&nats.Msg{Subject: roundSubject, Data: b})
			return drain(s)
		}
		if handshake {
			if got := feed(node1Hello(t, 1<<40)); len(got) != 0 {
				t.Fatalf("a hello delivered %d messages", len(got))
			}
			if s.keys["node1"] == nil {
				t.Fatal("handshake with node1 failed")
			}
		}
		// As received.
		for _, in := range feed(raw) {
			if !authentic(raw) || in.From == "node0" {
				t.Fatalf("delivered an unauthenticated message from %q: %q", in.From, raw)
			}
		}
		// Re-signed by its claimed sender.
		var m wireMsg
		if json.Unmarshal(raw, &m) != nil {
			return
		}
		if !slices.Contains([]string{"node1", "node2", "node3"}, m.From) {
			return
		}
		plain := m.Payload
		if encrypt && handshake && m.From == "node1" && !m.BC {
			aead := pairwiseAEAD(t, s)
			nonce := make([]byte, aead.NonceSize())
			m.Payload = aead.Seal(nonce, nonce, plain, aad(m.Session, m.From, m.To, m.Round, m.Seq))
		}
		// The same message under another peer's key first: always dropped.
		wrongKey := "node2"
		if m.From == "node2" {
			wrongKey = "node1"
		}
		mm := m
		if got := feed(signWire(t, &mm, fuzzIdentity(wrongKey))); len(got) != 0 {
			t.Fatalf("delivered a message from %s signed by %s", m.From, wrongKey)
		}
		mm = m
		signed := signWire(t, &mm, fuzzIdentity(m.From))
		first := feed(signed)
		for _, in := range first {
			if !authentic(signed) || in.From != m.From || in.Broadcast != m.BC {
				t.Fatalf("delivered %+v for %q", in, signed)
			}
			if m.BC && string(in.Wire) != string(m.Payload) {
				t.Fatal("broadcast payload changed")
			}
			if !m.BC && string(in.Wire) != string(plain) {
				t.Fatal("P2P payload does not decrypt to what was sent")
			}
		}
		if len(first) > 1 {
			t.Fatalf("one message delivered %d times", len(first))
		}
		if again := feed(signed); len(again) != 0 && m.Kind != "hello" {
			t.Fatalf("replayed message delivered again: %+v", again)
		}
	})
}
