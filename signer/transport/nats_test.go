package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
)

// testCluster is n nodes, each with its own identity key and NATS
// connection to one server, and one drop counter each.
type testCluster struct {
	url   string
	ids   []string
	keys  map[string]*ecdsa.PrivateKey
	peers map[string]*ecdsa.PublicKey
	conns map[string]*nats.Conn
	drops map[string]*dropCounter
}

// newTestCluster runs an embedded NATS server for n nodes.
func newTestCluster(t testing.TB, n int) *testCluster {
	t.Helper()
	return newTestClusterAt(t, n, natstest.RunServer(t).ClientURL())
}

// newTestClusterAt connects n nodes to the NATS server at url. A node's
// connection that the server closes is logged.
func newTestClusterAt(t testing.TB, n int, url string) *testCluster {
	t.Helper()
	c := &testCluster{
		url:  url,
		keys: map[string]*ecdsa.PrivateKey{}, peers: map[string]*ecdsa.PublicKey{},
		conns: map[string]*nats.Conn{}, drops: map[string]*dropCounter{},
	}
	for i := range n {
		id := fmt.Sprintf("node%d", i)
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		c.ids = append(c.ids, id)
		c.keys[id], c.peers[id] = k, &k.PublicKey
		c.conns[id] = c.connect(t, nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				t.Logf("%s: NATS connection lost: %v", id, err)
			}
		}))
		c.drops[id] = &dropCounter{n: map[string]int{}}
	}
	return c
}

// connect opens a connection to the cluster's server, closed when the test
// ends.
func (c *testCluster) connect(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(c.url, opts...)
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// open opens node's end of session sid with the given participants.
func (c *testCluster) open(t testing.TB, ctx context.Context, node, sid string, participants []string) *Session {
	t.Helper()
	s, err := Open(ctx, c.conns[node], Config{
		SessionID: sid, Self: Identity{NodeID: node, Signer: c.keys[node]},
		Participants: participants, Peers: c.peers, Counters: c.drops[node],
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("%s: open %s: %v", node, sid, err)
	}
	t.Cleanup(s.Close)
	return s
}

// openAll opens the session on every participant and waits until each is
// ready.
func (c *testCluster) openAll(t testing.TB, ctx context.Context, sid string, participants []string) map[string]*Session {
	t.Helper()
	out := map[string]*Session{}
	for _, p := range participants {
		out[p] = c.open(t, ctx, p, sid, participants)
	}
	hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for p, s := range out {
		if err := s.WaitReady(hctx); err != nil {
			t.Fatalf("%s: %s not ready: %v", sid, p, err)
		}
	}
	return out
}

// totalDrops sums every node's drops by reason.
func (c *testCluster) totalDrops() map[string]int {
	out := map[string]int{}
	for _, d := range c.drops {
		d.mu.Lock()
		for k, v := range d.n {
			out[k] += v
		}
		d.mu.Unlock()
	}
	return out
}

// sizeSpy records the size of every round message on the server, by kind
// and round, from a connection of its own.
type sizeSpy struct {
	mu      sync.Mutex
	max     map[string]int
	count   map[string]int
	largest int
}

func spySizes(t testing.TB, c *testCluster) *sizeSpy {
	t.Helper()
	sp := &sizeSpy{max: map[string]int{}, count: map[string]int{}}
	nc := c.connect(t)
	sub, err := nc.Subscribe(routing.AllRoundsSubject(), func(m *nats.Msg) {
		var w wireMsg
		key := "undecodable"
		if json.Unmarshal(m.Data, &w) == nil {
			key = w.Kind + " " + w.Round
			if w.Kind == "msg" {
				key += map[bool]string{true: " (broadcast)", false: " (p2p)"}[w.BC]
			}
		}
		sp.mu.Lock()
		defer sp.mu.Unlock()
		sp.count[key]++
		sp.max[key] = max(sp.max[key], len(m.Data))
		sp.largest = max(sp.largest, len(m.Data))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sp
}

func (sp *sizeSpy) report(t testing.TB, what string) int {
	t.Helper()
	sp.mu.Lock()
	defer sp.mu.Unlock()
	keys := make([]string, 0, len(sp.max))
	for k := range sp.max {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("%s: %-45s %4d messages, largest %7d bytes", what, k, sp.count[k], sp.max[k])
	}
	l := sp.largest
	clear(sp.max)
	clear(sp.count)
	sp.largest = 0
	return l
}
