package client

import (
	"context"
	"fmt"
	"time"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/routing"
	"github.com/nats-io/nats.go/jetstream"
)

// Redelivery of a result nobody claimed: NumDelivered * unclaimedDelay, at
// most maxUnclaimedDelay.
const (
	unclaimedDelay    = time.Second
	maxUnclaimedDelay = 30 * time.Second
)

// OnWalletCreationResult registers the callback for keygen results without a
// waiter (replacing any earlier one) and starts the keygen result consumer.
// It returns an error when the consumer cannot be created (within the
// JetStream API timeout).
func (c *Client) OnWalletCreationResult(f func(protocol.Result)) error {
	return c.on(protocol.OpKeygen, f)
}

// OnSignResult registers the callback for signing results; see
// OnWalletCreationResult.
func (c *Client) OnSignResult(f func(protocol.Result)) error {
	return c.on(protocol.OpSign, f)
}

// OnReshareResult registers the callback for resharing results; see
// OnWalletCreationResult.
func (c *Client) OnReshareResult(f func(protocol.Result)) error {
	return c.on(protocol.OpReshare, f)
}

func (c *Client) on(op string, f func(protocol.Result)) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.handlers[op] = f
	c.mu.Unlock()
	// No deadline: the JetStream API's default timeout bounds the call.
	return c.ensureConsumer(context.Background(), op)
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// ensureConsumer creates the client's durable consumer for op and starts
// consuming, once.
func (c *Client) ensureConsumer(ctx context.Context, op string) error {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	c.mu.Lock()
	_, ok := c.running[op]
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if ok {
		return nil
	}
	cons, err := routing.ResultConsumer(ctx, c.js, op, c.clientID, routing.WithAckWait(c.cfg.resultAckWait))
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { c.handle(op, m) },
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			c.log.Warn("result consumer", "op", op, "err", err)
		}))
	if err != nil {
		return fmt.Errorf("client: consuming %s results: %w", op, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		cc.Stop()
		return ErrClosed
	}
	c.running[op] = cc
	return nil
}

func (c *Client) addWaiter(op, requestID string) (*waiter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if _, dup := c.waiters[requestID]; dup {
		return nil, fmt.Errorf("%w: %s", ErrPendingRequestID, requestID)
	}
	w := &waiter{op: op, ch: make(chan *protocol.Result, 1)}
	c.waiters[requestID] = w
	return w, nil
}

func (c *Client) removeWaiter(requestID string, w *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waiters[requestID] == w {
		delete(c.waiters, requestID)
	}
}

// claim returns the waiter for the result (removing it) or else the
// callback for op.
func (c *Client) claim(op, requestID string) (*waiter, func(protocol.Result)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, ok := c.waiters[requestID]; ok && w.op == op {
		delete(c.waiters, requestID)
		return w, nil
	}
	return nil, c.handlers[op]
}

// handle verifies one result message and delivers it.
func (c *Client) handle(op string, m jetstream.Msg) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = m.Nak() // for the next Client
		return
	}
	c.inflight.Add(1) // under mu: never concurrent with Close's Wait
	c.mu.Unlock()
	defer c.inflight.Done()

	res, err := protocol.VerifyResult(m.Data(), c.nodeKeys)
	if err != nil {
		c.dropped.Add(1)
		c.log.Warn("dropping a result that fails verification", "op", op, "subject", m.Subject(), "err", err)
		_ = m.TermWithReason("result verification failed")
		return
	}
	if res.ClientID != c.clientID || res.Op != op {
		c.misrouted.Add(1)
		c.log.Error("dropping a result meant for another client or operation", "op", op,
			"result_op", res.Op, "result_client_id", res.ClientID, "request_id", res.RequestID, "node", res.NodeID)
		_ = m.TermWithReason("misrouted result")
		return
	}
	w, callback := c.claim(op, res.RequestID)
	switch {
	case w != nil:
		c.delivered.Add(1)
		w.ch <- res
		_ = m.Ack()
	case callback != nil:
		if c.runCallback(callback, res, m) {
			c.delivered.Add(1)
			_ = m.Ack()
		} else {
			_ = m.NakWithDelay(unclaimedDelay)
		}
	default:
		c.unclaimed.Add(1)
		delay := unclaimedDelay
		if md, err := m.Metadata(); err == nil {
			delay = min(time.Duration(md.NumDelivered)*unclaimedDelay, maxUnclaimedDelay)
		}
		c.log.Debug("result without waiter or callback returned to the stream", "op", op, "request_id", res.RequestID, "retry_in", delay)
		_ = m.NakWithDelay(delay)
	}
}

// runCallback runs f, keeping the message alive with in-progress acks while
// it runs. It reports false when f panicked.
func (c *Client) runCallback(f func(protocol.Result), res *protocol.Result, m jetstream.Msg) (ok bool) {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(c.cfg.resultAckWait / 2)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("result callback panicked; the result will be redelivered", "op", res.Op, "request_id", res.RequestID, "panic", p)
			ok = false
		}
	}()
	f(*res)
	return true
}
