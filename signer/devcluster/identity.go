package devcluster

import (
	"context"
	"crypto"
)

// IdentitySigner returns the identity key of node id (in its key backend),
// nil when id is not a member or its hardware is detached. Tests use it to
// play a compromised node: what it signs verifies as that node's.
func (c *Cluster) IdentitySigner(id string) crypto.Signer {
	c.mu.Lock()
	m := c.members[id]
	c.mu.Unlock()
	if m == nil || m.backend == nil {
		return nil
	}
	s, err := m.backend.Identity(context.Background())
	if err != nil {
		return nil
	}
	return s
}
