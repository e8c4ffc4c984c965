package ceremony_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/big"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	ecdsakeygen "github.com/bnb-chain/tss-lib/v3/ecdsa/keygen"
	eddsakeygen "github.com/bnb-chain/tss-lib/v3/eddsa/keygen"

	"github.com/hwsigner/signer/internal/fixtures"
	"github.com/hwsigner/signer/signer/ceremony"
)

// wireCount counts the messages (one per recipient) and payload bytes that
// the transports of one network send, and the CPU time the benchmark used
// from its start (a figure the other load of a shared machine moves less
// than ns/op).
type wireCount struct {
	msgs, bytes atomic.Int64
	cpu0        time.Duration
}

func (c *wireCount) start(b *testing.B) {
	b.ResetTimer()
	c.cpu0 = cpuTime()
}

type countingTransport struct {
	ceremony.Transport
	c     *wireCount
	peers int // recipients of a message with an empty To
}

func (t countingTransport) Send(ctx context.Context, m ceremony.Outbound) error {
	n := len(m.To)
	if n == 0 {
		n = t.peers
	}
	t.c.msgs.Add(int64(n))
	t.c.bytes.Add(int64(n * len(m.Wire)))
	return t.Transport.Send(ctx, m)
}

// countedNet is a MemNetwork whose transports count what they send.
func countedNet(ids []string, c *wireCount) func(id string) ceremony.Transport {
	net := ceremony.NewMemNetwork(ids)
	return func(id string) ceremony.Transport {
		return countingTransport{Transport: net.Transport(id), c: c, peers: len(ids) - 1}
	}
}

func report(b *testing.B, c *wireCount) {
	b.StopTimer()
	if cpu := cpuTime() - c.cpu0; c.cpu0 > 0 && cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
	}
	b.ReportMetric(float64(c.msgs.Load())/float64(b.N), "msgs/op")
	b.ReportMetric(float64(c.bytes.Load())/float64(b.N), "wireB/op")
}

func benchCtx(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// The ceremony benchmarks run 2-of-3 ceremonies over MemNetwork and report
// the messages each ceremony puts on the wire (msgs/op, one per recipient)
// and their payload bytes (wireB/op) beside the time per ceremony.

func BenchmarkKeygenEdDSA(b *testing.B) {
	ctx, ids := benchCtx(b), nodes(3)
	var c wireCount
	c.start(b)
	for i := 0; i < b.N; i++ {
		tr := countedNet(ids, &c)
		each(b, ids, func(_ int, id string) (*eddsakeygen.LocalPartySaveData, error) {
			return ceremony.KeygenEdDSA(ctx, ceremony.Session{ID: "bkg", Self: id, Parties: ids, Threshold: 1}, tr(id))
		})
	}
	report(b, &c)
}

func BenchmarkKeygenECDSA(b *testing.B) {
	ctx, ids, pre := benchCtx(b), nodes(3), fixtures.PreParams(b)
	var c wireCount
	c.start(b)
	for i := 0; i < b.N; i++ {
		tr := countedNet(ids, &c)
		each(b, ids, func(j int, id string) (*ecdsakeygen.LocalPartySaveData, error) {
			return ceremony.KeygenECDSA(ctx, ceremony.Session{ID: "bkg", Self: id, Parties: ids, Threshold: 1}, pre[j], tr(id))
		})
	}
	report(b, &c)
}

// The signing benchmarks sign with 2 of a 2-of-3 key (the default: no
// third party to compare broadcasts with, so no echoes) and with 3 of a
// 3-of-3 key (every broadcast reaches two peers: echoes on).

func BenchmarkSignEdDSA(b *testing.B) {
	for _, t := range []int{1, 2} {
		b.Run(fmt.Sprintf("signers=%d", t+1), func(b *testing.B) {
			ctx, ids := benchCtx(b), nodes(3)
			net := ceremony.NewMemNetwork(ids)
			keys := each(b, ids, func(_ int, id string) (*eddsakeygen.LocalPartySaveData, error) {
				return ceremony.KeygenEdDSA(ctx, ceremony.Session{ID: "bkg", Self: id, Parties: ids, Threshold: t}, net.Transport(id))
			})
			signers, msg := ids[:t+1], []byte("benchmark message")
			var c wireCount
			c.start(b)
			for i := 0; i < b.N; i++ {
				tr := countedNet(signers, &c)
				each(b, signers, func(j int, id string) ([]byte, error) {
					sig, err := ceremony.SignEdDSA(ctx, ceremony.Session{ID: "bs", Self: id, Parties: signers, Threshold: t}, *keys[j], msg, tr(id))
					if err != nil {
						return nil, err
					}
					return sig.Signature, nil
				})
			}
			report(b, &c)
		})
	}
}

func BenchmarkSignECDSA(b *testing.B) {
	for _, t := range []int{1, 2} {
		b.Run(fmt.Sprintf("signers=%d", t+1), func(b *testing.B) {
			ctx, ids, pre := benchCtx(b), nodes(3), fixtures.PreParams(b)
			net := ceremony.NewMemNetwork(ids)
			keys := each(b, ids, func(j int, id string) (*ecdsakeygen.LocalPartySaveData, error) {
				return ceremony.KeygenECDSA(ctx, ceremony.Session{ID: "bkg", Self: id, Parties: ids, Threshold: t}, pre[j], net.Transport(id))
			})
			signers, digest := ids[:t+1], sha256.Sum256([]byte("benchmark"))
			var c wireCount
			c.start(b)
			for i := 0; i < b.N; i++ {
				tr := countedNet(signers, &c)
				each(b, signers, func(j int, id string) ([]byte, error) {
					sig, err := ceremony.SignECDSA(ctx, ceremony.Session{ID: "bs", Self: id, Parties: signers, Threshold: t}, *keys[j], digest[:], nil, tr(id))
					if err != nil {
						return nil, err
					}
					return sig.Signature, nil
				})
			}
			report(b, &c)
		})
	}
}

// BenchmarkReshareEdDSA reshares 2-of-3 {0,1,2} to 2-of-3 {1,2,3}.
func BenchmarkReshareEdDSA(b *testing.B) {
	ctx, all := benchCtx(b), nodes(4)
	oldC, newC := all[:3], all[1:]
	net := ceremony.NewMemNetwork(oldC)
	kg := each(b, oldC, func(_ int, id string) (*eddsakeygen.LocalPartySaveData, error) {
		return ceremony.KeygenEdDSA(ctx, ceremony.Session{ID: "bkg", Self: id, Parties: oldC, Threshold: 1}, net.Transport(id))
	})
	share, keys := map[string]*eddsakeygen.LocalPartySaveData{}, map[string]*big.Int{}
	for i, id := range oldC {
		share[id], keys[id] = kg[i], kg[i].ShareID
	}
	var c wireCount
	c.start(b)
	for i := 0; i < b.N; i++ {
		tr := countedNet(all, &c)
		each(b, all, func(_ int, id string) (*eddsakeygen.LocalPartySaveData, error) {
			s := reshareSession("brs", id, oldC, keys, 1, newC, 1, nil)
			return ceremony.ReshareEdDSA(ctx, s, share[id], tr(id))
		})
	}
	report(b, &c)
}

// BenchmarkReshareECDSA reshares 2-of-3 {0,1,2} to 2-of-3 {1,2,3}.
func BenchmarkReshareECDSA(b *testing.B) {
	ctx, all, pre := benchCtx(b), nodes(4), fixtures.PreParams(b)
	oldC, newC := all[:3], all[1:]
	net := ceremony.NewMemNetwork(oldC)
	kg := each(b, oldC, func(j int, id string) (*ecdsakeygen.LocalPartySaveData, error) {
		return ceremony.KeygenECDSA(ctx, ceremony.Session{ID: "bkg", Self: id, Parties: oldC, Threshold: 1}, pre[j], net.Transport(id))
	})
	share, keys := map[string]*ecdsakeygen.LocalPartySaveData{}, map[string]*big.Int{}
	for i, id := range oldC {
		share[id], keys[id] = kg[i], kg[i].ShareID
	}
	var c wireCount
	c.start(b)
	for i := 0; i < b.N; i++ {
		tr := countedNet(all, &c)
		each(b, all, func(j int, id string) (*ecdsakeygen.LocalPartySaveData, error) {
			var p *ecdsakeygen.LocalPreParams
			if slices.Contains(newC, id) {
				p = pre[3+j]
			}
			s := reshareSession("brs", id, oldC, keys, 1, newC, 1, nil)
			return ceremony.ReshareECDSA(ctx, s, share[id], p, tr(id))
		})
	}
	report(b, &c)
}
