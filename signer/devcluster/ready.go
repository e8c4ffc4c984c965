package devcluster

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/routing"
)

func readyAll(ctx context.Context, nc *nats.Conn, ids []string) (bool, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return false, err
	}
	kv, err := js.KeyValue(ctx, routing.ReadyBucket)
	if err != nil {
		return false, err
	}
	ready, err := routing.ReadyNodes(ctx, kv)
	if err != nil {
		return false, err
	}
	have := map[string]bool{}
	for _, r := range ready {
		have[r] = true
	}
	for _, id := range ids {
		if !have[id] {
			return false, nil
		}
	}
	return true, nil
}
