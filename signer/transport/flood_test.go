package transport

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/routing"
	"github.com/hwsigner/signer/routing/natstest"
	"github.com/hwsigner/signer/signer/ceremony"
)

// floodDuration is how long the rogue publisher floods: SIGNER_FLOOD_DURATION
// (a Go duration; the figure is 30s), 4 s by default to keep make
// test fast.
func floodDuration(t testing.TB) time.Duration {
	v := os.Getenv("SIGNER_FLOOD_DURATION")
	if v == "" {
		return 4 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("SIGNER_FLOOD_DURATION=%q: want a positive Go duration", v)
	}
	return d
}

// floodRate is the rogue's rate in bytes a second: SIGNER_FLOOD_RATE in
// MiB/s, 64 by default; 0 is as fast as it can. The flood grew a
// node's heap by 120 MiB/s; the default stays below that because a node
// that cannot read its connection as fast as the flood comes is cut off by
// the NATS server itself (slow consumer: its unread messages passed the
// server's max_pending, 64 MiB), which no node-side limit prevents. On the
// shared 2-core test machine 128 MiB/s for 30 s passed when it was quiet
// (3.9 GiB of junk, heap peak 103 MiB) and, once, under a load of 6, got
// the nodes cut off during the ECDSA keygen.
func floodRate(t testing.TB) int64 {
	v := os.Getenv("SIGNER_FLOOD_RATE")
	if v == "" {
		return 64 << 20
	}
	mb, err := strconv.ParseInt(v, 10, 64)
	if err != nil || mb < 0 {
		t.Fatalf("SIGNER_FLOOD_RATE=%q: want MiB/s", v)
	}
	return mb << 20
}

// heapPeak samples the heap until stop is called and returns the largest
// HeapAlloc seen.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-finished
		return peak.Load()
	}
}

// rogue floods every round subject it has seen an honest message on in the
// last seconds with junk, from several connections at once: oversized
// forgeries for that session and node, claiming a peer, of about 512 KiB
// (the flood) and oversized random bytes, which the nodes must drop
// unread; and, one message in eight, a 64 KiB forgery under the size cap,
// which they decode and whose signature they check.
type rogue struct {
	watch    *nats.Conn // NoEcho: the junk does not come back to it
	pubs     []*nats.Conn
	mu       sync.Mutex
	subjects map[string]time.Time
	sent     atomic.Int64
	bytes    atomic.Int64
}

func startRogue(t testing.TB, srv *server.Server, publishers int) *rogue {
	t.Helper()
	r := &rogue{watch: natstest.Connect(t, srv, nats.NoEcho()), subjects: map[string]time.Time{}}
	for range publishers {
		r.pubs = append(r.pubs, natstest.Connect(t, srv))
	}
	if _, err := r.watch.Subscribe(routing.AllRoundsSubject(), func(m *nats.Msg) {
		r.mu.Lock()
		r.subjects[m.Subject] = time.Now()
		r.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.watch.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rogue) live() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for s, at := range r.subjects {
		if time.Since(at) < 3*time.Second {
			out = append(out, s)
		}
	}
	return out
}

// forgery is a round message for subject (mpc.round.<session>.<node>) that
// claims to come from a peer, with a payload of size bytes and a signature
// that does not verify.
func forgery(subject string, peers []string, size int, seq uint64) []byte {
	parts := strings.Split(subject, ".")
	from := peers[0]
	if from == parts[3] {
		from = peers[1]
	}
	b, _ := json.Marshal(&wireMsg{Session: parts[2], From: from, To: parts[3], Kind: "msg", Round: "r", Seq: seq, BC: true,
		Payload: make([]byte, size), Sig: make([]byte, 72)})
	return b
}

// flood publishes from every publisher connection for d, at most rate
// bytes a second in all (0: as fast as it can), then returns.
func (r *rogue) flood(d time.Duration, rate int64, peers []string) {
	random := make([]byte, 512<<10)
	_, _ = rand.Read(random)
	begin := time.Now()
	end := begin.Add(d)
	var wg sync.WaitGroup
	for _, nc := range r.pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			big, small := map[string][]byte{}, map[string][]byte{}
			for i := 0; time.Now().Before(end); i++ {
				subjects := r.live()
				if len(subjects) == 0 {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				for _, s := range subjects {
					if rate > 0 {
						if ahead := time.Duration(float64(r.bytes.Load())/float64(rate)*float64(time.Second)) - time.Since(begin); ahead > 0 {
							time.Sleep(ahead)
						}
					}
					var b []byte
					switch i % 8 {
					case 0:
						if small[s] == nil {
							small[s] = forgery(s, peers, 48<<10, uint64(1000+i))
						}
						b = small[s]
					case 1:
						b = random
					default:
						if big[s] == nil {
							big[s] = forgery(s, peers, 380<<10, uint64(1000+i)) // 507 KiB on the wire
						}
						b = big[s]
					}
					if nc.Publish(s, b) == nil {
						r.sent.Add(1)
						r.bytes.Add(int64(len(b)))
					}
				}
			}
			_ = nc.Flush()
		}()
	}
	wg.Wait()
}

// rogueEnv, in the environment of TestRoundFloodRogue's process, lists the
// node IDs its forgeries claim.
const rogueEnv = "SIGNER_FLOOD_ROGUE_PEERS"

// TestRoundFloodRogue is the NATS server and the rogue publisher of
// TestRoundFlood, which runs it in a process of its own so that the heap it
// samples is the nodes' only. It prints the server's URL, floods for
// SIGNER_FLOOD_DURATION once it has seen a session, prints what it sent, and
// keeps the server up until its standard input closes.
func TestRoundFloodRogue(t *testing.T) {
	peers := os.Getenv(rogueEnv)
	if peers == "" {
		t.Skip("the rogue side of TestRoundFlood, run in a process of its own")
	}
	d := floodDuration(t)
	srv := natstest.RunServer(t)
	r := startRogue(t, srv, 1)
	fmt.Fprintf(os.Stdout, "rogue-url %s\n", srv.ClientURL())
	deadline := time.Now().Add(time.Minute)
	for len(r.live()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no session seen")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.flood(d, floodRate(t), strings.Split(peers, ","))
	fmt.Fprintf(os.Stdout, "rogue-done %d %d\n", r.sent.Load(), r.bytes.Load())
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// startRogueProcess runs TestRoundFloodRogue in a child process and returns
// its server's URL and a channel that yields its "rogue-done" line.
func startRogueProcess(t *testing.T, d time.Duration, peers []string) (string, <-chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRoundFloodRogue$", "-test.count=1", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), rogueEnv+"="+strings.Join(peers, ","), "SIGNER_FLOOD_DURATION="+d.String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	urlc, donec := make(chan string, 1), make(chan string, 1)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "rogue-url "):
				urlc <- strings.TrimPrefix(line, "rogue-url ")
			case strings.HasPrefix(line, "rogue-done "):
				donec <- strings.TrimPrefix(line, "rogue-done ")
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case u := <-urlc:
		return u, donec
	case <-exited:
		t.Fatal("the rogue process exited before it started its server")
	case <-time.After(30 * time.Second):
		t.Fatal("the rogue process did not start its server")
	}
	return "", nil
}

// TestRoundFlood (docs/hostile-input.md): a rogue publisher with node NATS
// credentials (another process, TestRoundFloodRogue, with the NATS server)
// floods the round subjects of live sessions with junk, mostly 512 KiB, for
// SIGNER_FLOOD_DURATION (default 4 s) at SIGNER_FLOOD_RATE (default 64
// MiB/s), while three nodes run an ECDSA keygen (round messages up to 175
// KiB) and then 2-of-3 ECDSA signatures, two sessions at a time, until the
// flood is over. Every honest session finishes, the drops are counted, and
// the nodes' heap (sampled with runtime.ReadMemStats) stays bounded.
func TestRoundFlood(t *testing.T) {
	d := floodDuration(t)
	pre := fixtures.PreParams(t)
	ctx, cancel := context.WithTimeout(context.Background(), d+3*time.Minute)
	defer cancel()
	ids := []string{"node0", "node1", "node2"}
	url, rogueDone := startRogueProcess(t, d, ids)
	c := newTestClusterAt(t, 3, url)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	stopPeak := heapPeak()

	var sent string
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		select {
		case sent = <-rogueDone:
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	kg := c.openAll(t, ctx, "kg-flood", ids)
	keys := runEach(t, ids, func(i int, id string) (*ecdsakeygen.LocalPartySaveData, error) {
		return ceremony.KeygenECDSA(ctx, ceremony.Session{ID: "kg-flood", Self: id, Parties: ids, Threshold: 1}, pre[i], kg[id])
	})
	t.Logf("ECDSA keygen under flood: %s", time.Since(start).Round(time.Millisecond))
	signs := 0
	for round := 0; ; round++ {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for k := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// node0 or node1 with node2; key index = node index.
				errs[k] = c.signECDSA(ctx, fmt.Sprintf("sign-flood-%d-%d", round, k), keys, []int{k, 2})
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		signs += 2
		select {
		case <-flooded:
		default:
			continue
		}
		break
	}
	peak := stopPeak()
	drops := c.totalDrops()
	var sentMsgs, sentBytes int64
	if _, err := fmt.Sscanf(sent, "%d %d", &sentMsgs, &sentBytes); err != nil {
		t.Fatalf("rogue's report %q: %v", sent, err)
	}
	t.Logf("flood %s: rogue sent %d messages (%d MiB); honest: 1 ECDSA keygen, %d ECDSA signatures in %s; nodes' heap %d MiB before, peak %d MiB; drops %v",
		d, sentMsgs, sentBytes>>20, signs, time.Since(start).Round(time.Millisecond), base>>20, peak>>20, drops)
	if sentMsgs == 0 {
		t.Fatal("the rogue sent nothing")
	}
	if drops[DropTooLarge] == 0 {
		t.Fatalf("no oversized message counted: %v", drops)
	}
	if limit := uint64(256 << 20); peak > limit {
		t.Fatalf("the nodes' heap peaked at %d MiB under the flood, want at most %d MiB", peak>>20, limit>>20)
	}
}

// signECDSA runs one ECDSA signing session between the nodes at indexes
// signers (t = len-1) with their keys, and checks the signature's length.
func (c *testCluster) signECDSA(ctx context.Context, sid string, keys []*ecdsakeygen.LocalPartySaveData, signers []int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var ids []string
	for _, i := range signers {
		ids = append(ids, c.ids[i])
	}
	sess := map[string]*Session{}
	defer func() {
		for _, s := range sess {
			s.Close()
		}
	}()
	for _, id := range ids {
		s, err := Open(ctx, c.conns[id], Config{
			SessionID: sid, Self: Identity{NodeID: id, Signer: c.keys[id]},
			Participants: ids, Peers: c.peers, Counters: c.drops[id],
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			return err
		}
		sess[id] = s
	}
	digest := sha256.Sum256([]byte(sid))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for j, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sess[id].WaitReady(ctx); err != nil {
				errs[j] = err
				return
			}
			s := ceremony.Session{ID: sid, Self: id, Parties: ids, Threshold: len(ids) - 1}
			sig, err := ceremony.SignECDSA(ctx, s, *keys[signers[j]], digest[:], nil, sess[id])
			if err == nil && len(sig.Signature) != 64 {
				err = fmt.Errorf("signature of %d bytes", len(sig.Signature))
			}
			errs[j] = err
		}()
	}
	wg.Wait()
	for j, err := range errs {
		if err != nil {
			return fmt.Errorf("%s on %s: %w", sid, ids[j], err)
		}
	}
	return nil
}
