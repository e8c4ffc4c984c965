package routing

import "time"

// NodeStatus is the value a node puts with each readiness heartbeat into
// the ready bucket, as JSON, for `signerctl status`: nothing secret.
type NodeStatus struct {
	NodeID    string    `json:"node_id"`
	StartedAt time.Time `json:"started_at"`
	PoolDepth int       `json:"pool_depth"` // -1 when unknown
	PoolTest  bool      `json:"pool_test_fixtures,omitempty"`
	Sessions  int64     `json:"sessions"` // requests being handled
	Accepted  int64     `json:"accepted"`
	Succeeded int64     `json:"succeeded"`
	Failed    int64     `json:"failed"`
	Rejected  int64     `json:"rejected"`
}
