package devcluster_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hwsigner/signer/client"
	"github.com/hwsigner/signer/routing"
)

// TestRogueRoundPublisher: a NATS client that replays every round message it
// sees and injects forged ones cannot disturb a ceremony; the nodes drop and
// count what it sends.
func TestRogueRoundPublisher(t *testing.T) {
	keys := newKeys(t)
	c := start(t, 3, 1, keys)
	cl := newClient(t, c, keys["svcA"])
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := cl.KeygenAndWait(ctx, client.KeygenParams{WalletID: "w-rogue", KeyTypes: []string{"ed25519"}})
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := nats.Connect(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	var replayed, forged atomic.Int64
	sub, err := rogue.Subscribe(routing.AllRoundsSubject(), func(m *nats.Msg) {
		if m.Header.Get("rogue") != "" {
			return
		}
		// Replay the genuine message as is.
		_ = rogue.PublishMsg(&nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{"rogue": []string{"1"}}})
		replayed.Add(1)
		// Forge: same message with a changed payload (signature no longer matches).
		var w map[string]any
		if json.Unmarshal(m.Data, &w) == nil {
			w["p"] = "AAAA"
			b, _ := json.Marshal(w)
			_ = rogue.PublishMsg(&nats.Msg{Subject: m.Subject, Data: b, Header: nats.Header{"rogue": []string{"1"}}})
			// And one from a sender that is not a peer.
			w["f"] = "node9"
			b, _ = json.Marshal(w)
			_ = rogue.PublishMsg(&nats.Msg{Subject: m.Subject, Data: b, Header: nats.Header{"rogue": []string{"1"}}})
			forged.Add(2)
		}
		_ = rogue.PublishMsg(&nats.Msg{Subject: m.Subject, Data: []byte("not json"), Header: nats.Header{"rogue": []string{"1"}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for i := 0; i < 3; i++ {
		msg := []byte{0, byte(i), 'x'}
		sres, err := cl.SignAndWait(ctx, client.SignParams{WalletID: "w-rogue", KeyType: "ed25519", TxID: "rogue", Tx: msg})
		if err != nil {
			t.Fatalf("sign under attack: %v", err)
		}
		if err := client.VerifyEd25519(mustHex(t, res.EdDSAPubKey), msg, mustHex(t, sres.Signature)); err != nil {
			t.Fatal(err)
		}
	}
	drops := map[string]int64{}
	for _, id := range c.NodeIDs {
		for k, v := range c.Node(id).Drops() {
			drops[k] += v
		}
	}
	t.Logf("rogue replayed %d and forged %d messages; nodes dropped %v", replayed.Load(), forged.Load(), drops)
	if replayed.Load() == 0 || drops["replay"] == 0 || drops["bad_signature"] == 0 || drops["unknown_peer"] == 0 || drops["malformed"] == 0 {
		t.Fatalf("expected replays, forgeries, unknown peers and garbage to be dropped: %v", drops)
	}
}
