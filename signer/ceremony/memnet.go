package ceremony

import (
	"context"
	"fmt"
)

// MemNetwork connects parties in one process over Go channels. It is the
// "raw tss-lib" path of the benchmarks and the transport of unit tests; nodes
// use the NATS transport.
type MemNetwork struct {
	inbox map[string]chan Inbound
}

// NewMemNetwork makes a network for the given node IDs.
func NewMemNetwork(nodes []string) *MemNetwork {
	n := &MemNetwork{inbox: map[string]chan Inbound{}}
	for _, id := range nodes {
		n.inbox[id] = make(chan Inbound, chanCap)
	}
	return n
}

// Transport returns node's end of the network.
func (n *MemNetwork) Transport(node string) Transport { return memTransport{n: n, self: node} }

type memTransport struct {
	n    *MemNetwork
	self string
}

func (t memTransport) Recv() <-chan Inbound { return t.n.inbox[t.self] }

func (t memTransport) Send(ctx context.Context, m Outbound) error {
	targets := m.To
	if len(targets) == 0 {
		for id := range t.n.inbox {
			targets = append(targets, id)
		}
	}
	for _, to := range targets {
		if to == t.self {
			continue
		}
		ch, ok := t.n.inbox[to]
		if !ok {
			return fmt.Errorf("memnet: unknown node %q", to)
		}
		select {
		case ch <- Inbound{From: t.self, Broadcast: m.Broadcast, Wire: m.Wire}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
