package routing

import (
	"context"
	"fmt"
	"time"

	"github.com/hwsigner/signer/protocol"
	"github.com/nats-io/nats.go/jetstream"
)

// Consumer defaults.
const (
	DefaultNodeAckWait         = 2 * time.Minute
	DefaultNodeMaxAckPending   = 1024
	DefaultResultAckWait       = 30 * time.Second
	DefaultResultMaxAckPending = 256
)

// ConsumerOption tunes a consumer.
type ConsumerOption func(*consumerOptions)

type consumerOptions struct {
	ackWait       time.Duration
	maxAckPending int
	maxDeliver    int
	replicas      int
	memory        bool
}

// WithAckWait sets how long the server waits for an ack before redelivering.
func WithAckWait(d time.Duration) ConsumerOption {
	return func(o *consumerOptions) { o.ackWait = d }
}

// WithMaxAckPending bounds the messages delivered but not yet acked.
func WithMaxAckPending(n int) ConsumerOption {
	return func(o *consumerOptions) { o.maxAckPending = n }
}

// WithMaxDeliver bounds deliveries per message (default: unlimited).
func WithMaxDeliver(n int) ConsumerOption {
	return func(o *consumerOptions) { o.maxDeliver = n }
}

// WithConsumerReplicas sets the consumer's replicas (default: the stream's).
func WithConsumerReplicas(n int) ConsumerOption {
	return func(o *consumerOptions) { o.replicas = n }
}

// WithMemoryState keeps the consumer's state in memory (tests).
func WithMemoryState() ConsumerOption {
	return func(o *consumerOptions) { o.memory = true }
}

func buildOptions(ackWait time.Duration, maxAckPending int, opts []ConsumerOption) consumerOptions {
	o := consumerOptions{ackWait: ackWait, maxAckPending: maxAckPending}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// NodeConsumerName returns node_<nodeID>.
func NodeConsumerName(nodeID string) (string, error) {
	if err := protocol.ValidToken(nodeID); err != nil {
		return "", tokenErr("nodeID", nodeID, err)
	}
	return "node_" + nodeID, nil
}

// NodeConsumerConfig returns the configuration of a node's durable consumer
// on MPC_REQUESTS: all request subjects, deliver all, explicit acks, AckWait
// 2 min and MaxAckPending 1024 unless overridden.
func NodeConsumerConfig(nodeID string, opts ...ConsumerOption) (jetstream.ConsumerConfig, error) {
	name, err := NodeConsumerName(nodeID)
	if err != nil {
		return jetstream.ConsumerConfig{}, err
	}
	o := buildOptions(DefaultNodeAckWait, DefaultNodeMaxAckPending, opts)
	return jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "requests for signer node " + nodeID,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.ackWait,
		MaxAckPending: o.maxAckPending,
		MaxDeliver:    o.maxDeliver,
		Replicas:      o.replicas,
		MemoryStorage: o.memory,
	}, nil
}

// NodeConsumer creates (or updates) the node's durable consumer node_<nodeID>
// on MPC_REQUESTS and returns it. Nodes fetch with Consume or Messages, ack
// after handling a request (or Term it when it can never be handled).
func NodeConsumer(ctx context.Context, js jetstream.JetStream, nodeID string, opts ...ConsumerOption) (jetstream.Consumer, error) {
	cfg, err := NodeConsumerConfig(nodeID, opts...)
	if err != nil {
		return nil, err
	}
	c, err := js.CreateOrUpdateConsumer(ctx, RequestStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("routing: consumer %s on %s: %w", cfg.Durable, RequestStream, err)
	}
	return c, nil
}

// ResultConsumerName returns the durable name of a client's result consumer
// for op: mpc_keygen_result_<clientID>, mpc_signing_result_<clientID>,
// mpc_reshare_result_<clientID>, or without the suffix for a legacy client.
// The clientID is kept verbatim, so "a-b" and "a_b" get distinct names.
func ResultConsumerName(op, clientID string) (string, error) {
	tok, err := resultToken(op)
	if err != nil {
		return "", err
	}
	if clientID == "" {
		return tok, nil
	}
	if err := protocol.ValidToken(clientID); err != nil {
		return "", tokenErr("clientID", clientID, err)
	}
	return tok + "_" + clientID, nil
}

// ResultConsumerConfig returns the configuration of a client's durable pull
// consumer for op on MPC_RESULTS, filtered to the client's own subjects.
func ResultConsumerConfig(op, clientID string, opts ...ConsumerOption) (jetstream.ConsumerConfig, error) {
	name, err := ResultConsumerName(op, clientID)
	if err != nil {
		return jetstream.ConsumerConfig{}, err
	}
	filter, err := ResultFilterSubject(op, clientID)
	if err != nil {
		return jetstream.ConsumerConfig{}, err
	}
	o := buildOptions(DefaultResultAckWait, DefaultResultMaxAckPending, opts)
	who := "legacy clients"
	if clientID != "" {
		who = "client " + clientID
	}
	return jetstream.ConsumerConfig{
		Durable:       name,
		Description:   op + " results for " + who,
		FilterSubject: filter,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.ackWait,
		MaxAckPending: o.maxAckPending,
		MaxDeliver:    o.maxDeliver,
		Replicas:      o.replicas,
		MemoryStorage: o.memory,
	}, nil
}

// ResultConsumer creates (or updates) a client's durable result consumer for
// op and returns it.
func ResultConsumer(ctx context.Context, js jetstream.JetStream, op, clientID string, opts ...ConsumerOption) (jetstream.Consumer, error) {
	cfg, err := ResultConsumerConfig(op, clientID, opts...)
	if err != nil {
		return nil, err
	}
	c, err := js.CreateOrUpdateConsumer(ctx, ResultStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("routing: consumer %s on %s: %w", cfg.Durable, ResultStream, err)
	}
	return c, nil
}

// ResultConsumers creates a client's three result consumers and returns them
// by op.
func ResultConsumers(ctx context.Context, js jetstream.JetStream, clientID string, opts ...ConsumerOption) (map[string]jetstream.Consumer, error) {
	out := make(map[string]jetstream.Consumer, 3)
	for _, op := range []string{protocol.OpKeygen, protocol.OpSign, protocol.OpReshare} {
		c, err := ResultConsumer(ctx, js, op, clientID, opts...)
		if err != nil {
			return nil, err
		}
		out[op] = c
	}
	return out, nil
}
