package routing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of StreamOptions.
const (
	DefaultRequestMaxAge = 24 * time.Hour
	DefaultResultMaxAge  = 7 * 24 * time.Hour
	// DefaultDuplicates is the Nats-Msg-Id deduplication window of both
	// streams. It must be longer than the longest session deadline, so that
	// every participant's copy of a result (and a client's retried request)
	// falls inside it.
	DefaultDuplicates = 10 * time.Minute
	DefaultMaxMsgSize = 1 << 20
	// DefaultAttemptMaxAge bounds how long MPC_ATTEMPTS keeps a re-run plan:
	// a node that restarts reads the plans of the requests it may still
	// have to finish.
	DefaultAttemptMaxAge = time.Hour
	// AttemptMaxMsgsPerSubject bounds the plans kept per request: a request
	// is re-run a few times at most; a flood on one request's subject
	// cannot grow the stream.
	AttemptMaxMsgsPerSubject = 64
	// AttemptMaxMsgSize bounds one plan.
	AttemptMaxMsgSize = 16 << 10
)

// StreamOptions tunes the two streams. The zero value gives file storage, one
// replica and the defaults above.
type StreamOptions struct {
	// Replicas per stream (1, 3 or 5 in a NATS cluster). Default 1.
	Replicas int
	// Storage: jetstream.FileStorage (default) or jetstream.MemoryStorage
	// (tests only: a restart loses requests and results).
	Storage jetstream.StorageType
	// RequestMaxAge bounds how long a request waits for every node. It
	// should be at least protocol.MaxRequestTTL. Default 24 h.
	RequestMaxAge time.Duration
	// ResultMaxAge bounds how long a result waits for its client. Default
	// 7 days.
	ResultMaxAge time.Duration
	// AttemptMaxAge bounds how long a re-run plan is kept (MPC_ATTEMPTS).
	// Default 1 h.
	AttemptMaxAge time.Duration
	// Duplicates is the deduplication window. Default 10 min.
	Duplicates time.Duration
	// MaxMsgSize per message. Default 1 MiB.
	MaxMsgSize int32
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.RequestMaxAge <= 0 {
		o.RequestMaxAge = DefaultRequestMaxAge
	}
	if o.ResultMaxAge <= 0 {
		o.ResultMaxAge = DefaultResultMaxAge
	}
	if o.Duplicates <= 0 {
		o.Duplicates = DefaultDuplicates
	}
	if o.AttemptMaxAge <= 0 {
		o.AttemptMaxAge = DefaultAttemptMaxAge
	}
	if o.MaxMsgSize <= 0 {
		o.MaxMsgSize = DefaultMaxMsgSize
	}
	return o
}

func (o StreamOptions) check() error {
	if o.Duplicates > o.RequestMaxAge || o.Duplicates > o.ResultMaxAge || o.Duplicates > o.AttemptMaxAge {
		return fmt.Errorf("routing: duplicate window %s longer than a stream's max age", o.Duplicates)
	}
	return nil
}

// RequestStreamConfig returns the configuration of MPC_REQUESTS: interest
// retention (a request stays until every node's consumer has acked it, or
// RequestMaxAge), file storage, Nats-Msg-Id deduplication.
func RequestStreamConfig(o StreamOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:        RequestStream,
		Description: "signed requests from clients to signer nodes",
		Subjects:    RequestStreamSubjects(),
		Retention:   jetstream.InterestPolicy,
		Storage:     o.Storage,
		Replicas:    o.Replicas,
		MaxAge:      o.RequestMaxAge,
		Duplicates:  o.Duplicates,
		MaxMsgSize:  o.MaxMsgSize,
		Discard:     jetstream.DiscardOld,
	}
}

// ResultStreamConfig returns the configuration of MPC_RESULTS: work-queue
// retention (a result is removed once its client acks it), file storage,
// Nats-Msg-Id deduplication (every participant publishes the same result ID).
func ResultStreamConfig(o StreamOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:        ResultStream,
		Description: "signed results from signer nodes to clients",
		Subjects:    ResultStreamSubjects(),
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     o.Storage,
		Replicas:    o.Replicas,
		MaxAge:      o.ResultMaxAge,
		Duplicates:  o.Duplicates,
		MaxMsgSize:  o.MaxMsgSize,
		Discard:     jetstream.DiscardOld,
	}
}

// AttemptStreamConfig returns the configuration of MPC_ATTEMPTS: the signed
// re-run plans of the nodes (limits retention for AttemptMaxAge, at most
// AttemptMaxMsgsPerSubject per request, file storage, deduplication). Every
// node reads it in stream order, so that all of them follow the same first
// valid plan of each attempt.
func AttemptStreamConfig(o StreamOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:              AttemptStream,
		Description:       "signed re-run plans of signer nodes (which nodes sign a request's next attempt)",
		Subjects:          AttemptStreamSubjects(),
		Retention:         jetstream.LimitsPolicy,
		Storage:           o.Storage,
		Replicas:          o.Replicas,
		MaxAge:            o.AttemptMaxAge,
		MaxMsgsPerSubject: AttemptMaxMsgsPerSubject,
		Duplicates:        o.Duplicates,
		MaxMsgSize:        AttemptMaxMsgSize,
		Discard:           jetstream.DiscardOld,
	}
}

// EnsureStreams creates MPC_REQUESTS, MPC_RESULTS and MPC_ATTEMPTS, or updates them to the
// configuration above; calling it again with the same options is a no-op.
// Nodes call it at start; clients do not need to.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	o = o.withDefaults()
	if err := o.check(); err != nil {
		return err
	}
	for _, cfg := range []jetstream.StreamConfig{RequestStreamConfig(o), ResultStreamConfig(o), AttemptStreamConfig(o)} {
		if err := EnsureStream(ctx, js, cfg); err != nil {
			return fmt.Errorf("routing: stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// EnsureStream creates cfg's stream, or updates it when it exists with
// another configuration; an existing stream with the same configuration is
// left alone. Not js.CreateOrUpdateStream: against a NATS cluster (R3) an
// update of a stream that does not exist yet, or an update or create racing
// another node's create, got no answer until the context expired. So each
// step has its own short deadline and is retried until ctx ends.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	for {
		err := ensureStreamOnce(ctx, js, cfg)
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		// One step timed out (a cluster still settling): look again.
	}
}

func ensureStreamOnce(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	step := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 3*time.Second) }
	sctx, cancel := step()
	st, err := js.Stream(sctx, cfg.Name)
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		sctx, cancel := step()
		defer cancel()
		_, err = js.CreateStream(sctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return context.DeadlineExceeded // another node created it: look again
		}
		return err
	case err != nil:
		return err
	}
	if sameStreamConfig(st.CachedInfo().Config, cfg) {
		return nil
	}
	sctx, cancel = step()
	defer cancel()
	_, err = js.UpdateStream(sctx, cfg)
	return err
}

// sameStreamConfig compares the fields this package sets.
func sameStreamConfig(a, b jetstream.StreamConfig) bool {
	return a.Description == b.Description && slices.Equal(a.Subjects, b.Subjects) && a.Retention == b.Retention &&
		a.Storage == b.Storage && a.Replicas == b.Replicas && a.MaxAge == b.MaxAge && a.Duplicates == b.Duplicates &&
		a.MaxMsgSize == b.MaxMsgSize && a.Discard == b.Discard && a.MaxMsgsPerSubject == b.MaxMsgsPerSubject
}
