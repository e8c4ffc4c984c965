package node

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/hwsigner/signer/hsm"
	"github.com/hwsigner/signer/internal/secret"
	"github.com/hwsigner/signer/signer/ceremony"
	"github.com/hwsigner/signer/signer/preparams"
	"github.com/hwsigner/signer/signer/store"
)

var errNoPreParams = errors.New("node: pre-params pool is empty; retry when the pool has refilled (signerctl status shows its depth)")

func poolBinding(node string, id uint64) hsm.Binding {
	return hsm.Binding{NodeID: node, Purpose: "preparams", Epoch: id}
}

// takePreParams hands out one set, never twice: from the sealed pool, or from
// the test fixtures.
func (n *Node) takePreParams(ctx context.Context) (*ceremony.PreParams, error) {
	if fx := n.cfg.TestPreParams; fx != nil {
		// Fixtures are public and shared by design; index by node so that the
		// parties of one keygen use different sets.
		idx := max(slices.Index(n.cfg.Committee, n.cfg.NodeID), 0)
		return fx[idx%len(fx)], nil
	}
	id, sealed, err := n.st.PopPreParams()
	if errors.Is(err, store.ErrEmpty) {
		return nil, errNoPreParams
	}
	if err != nil {
		return nil, err
	}
	pt, err := n.sealer.Open(ctx, sealed, poolBinding(n.cfg.NodeID, id))
	if err != nil {
		return nil, err
	}
	defer secret.Zero(pt)
	return preparams.Unmarshal(pt)
}

// fillPool keeps PoolTarget sealed sets ready, generating one at a time.
func (n *Node) fillPool(ctx context.Context) {
	for ctx.Err() == nil {
		depth, err := n.st.PoolDepth()
		if err == nil && depth >= n.cfg.PoolTarget {
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
			continue
		}
		start := time.Now()
		n.log.Info("generating pre-params for the pool", "depth", depth, "target", n.cfg.PoolTarget)
		if err := n.addPreParams(ctx); err != nil {
			if ctx.Err() == nil {
				n.log.Error("pre-params generation failed", "err", err)
				time.Sleep(5 * time.Second)
			}
			continue
		}
		n.log.Info("pre-params set added to the pool", "took", time.Since(start).Round(time.Second).String())
	}
}

func (n *Node) addPreParams(ctx context.Context) error {
	pp, err := preparams.Generate(ctx, runtime.NumCPU())
	if err != nil {
		return err
	}
	return AddPreParams(ctx, n.sealer, n.st, n.cfg.NodeID, pp)
}

// AddPreParams seals one pre-params set for nodeID and adds it to the pool
// in st. Nodes call it from their background generator; it also lets sets
// generated elsewhere (an offline machine with more cores) be imported.
func AddPreParams(ctx context.Context, s *hsm.Sealer, st *store.Store, nodeID string, pp *ceremony.PreParams) error {
	pt, err := preparams.Marshal(pp)
	if err != nil {
		return err
	}
	defer secret.Zero(pt)
	id, err := st.NextPoolID()
	if err != nil {
		return err
	}
	sealed, err := s.Seal(ctx, pt, poolBinding(nodeID, id))
	if err != nil {
		return fmt.Errorf("seal pre-params: %w", err)
	}
	return st.PushPreParams(id, sealed)
}
