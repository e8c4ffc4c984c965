package routing

import (
	"encoding/json"
	"testing"
	"time"
)

// TestNodeStatusJSON pins the heartbeat value: signerctl of one version
// reads the status of nodes of another.
func TestNodeStatusJSON(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name string
		s    NodeStatus
		want string
	}{
		{"sealed pool", NodeStatus{NodeID: "node0", StartedAt: at, PoolDepth: 2, Sessions: 1, Accepted: 5, Succeeded: 3, Failed: 2, Rejected: 4},
			`{"node_id":"node0","started_at":"2025-01-02T03:04:05Z","pool_depth":2,"sessions":1,"accepted":5,"succeeded":3,"failed":2,"rejected":4}`},
		{"test fixtures, depth unknown", NodeStatus{NodeID: "node1", StartedAt: at, PoolDepth: -1, PoolTest: true},
			`{"node_id":"node1","started_at":"2025-01-02T03:04:05Z","pool_depth":-1,"pool_test_fixtures":true,"sessions":0,"accepted":0,"succeeded":0,"failed":0,"rejected":0}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.s)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Fatalf("got  %s\nwant %s", b, tc.want)
			}
			var back NodeStatus
			if err := json.Unmarshal(b, &back); err != nil || back != tc.s {
				t.Fatalf("round trip: %+v, %v", back, err)
			}
		})
	}
}
