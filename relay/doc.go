// Package relay is signer-relay: it serves backends that do not speak NATS.
//
// Requests in: POST /v1/wallets, /v1/sign and /v1/reshare take the exact
// signed JSON envelope the Go client publishes. The relay authenticates the
// caller's bearer token (each bound to one clientID, kept only as a SHA-256
// hash, compared in constant time), checks the size, the shape, that the
// envelope's client_id is the token's clientID and that the signature
// verifies against a public key configured for that clientID, and publishes
// the bytes unchanged to MPC_REQUESTS with Nats-Msg-Id = request_id. It
// answers 202 {"request_id"} only after JetStream's publish ack, and 503
// NATS_UNAVAILABLE when there is none: a request is never dropped silently.
// The relay holds each client's NATS credentials, never a client signing key:
// requests and results stay signed end to end.
//
// Results out. Design choice: one history per client in JetStream.
//
//	MPC_RESULTS --(client's durable result consumers, routing.ResultConsumers)-->
//	  RELAY_RESULTS  relay.results.<clientID>   (limits retention, history_max_age)
//	      |-- durable consumer relay_webhook_<clientID> --> Standard Webhooks POST
//	      |-- ordered consumers from a cursor          --> SSE, long polling
//	RELAY_DLQ        relay.dlq.<clientID>       (webhook deliveries failed > max_age)
//
// The relay takes each result from the client's durable consumers on the
// work-queue stream MPC_RESULTS and copies it, bytes unchanged, into
// RELAY_RESULTS; the MPC_RESULTS message is acked only after the copy is
// stored. The copy keeps the result's Nats-Msg-Id (result-<request_id>), so a
// crash between the store and the ack stores it once (within the history's
// dedup window, 24 h by default). MPC_RESULTS being a work queue, only one
// reader can own a client's results; copying them into a limits-retention
// stream lets three channels read them independently and lets readers come
// back later:
//
//   - Webhooks: a durable consumer per client posts each result, signed per
//     Standard Webhooks, and acks only after a 2xx; otherwise NakWithDelay
//     with exponential backoff and jitter. After max_age of failures the
//     result moves to RELAY_DLQ (then acked). webhook-id is the result's
//     Nats-Msg-Id, identical on every retry, dead letter and replay, so
//     receivers deduplicate on it. `signer-relay dlq replay` publishes dead
//     letters to relay.replay.<clientID>, which only the webhook consumer
//     reads.
//   - SSE and long polling: the cursor is the RELAY_RESULTS stream sequence;
//     an ordered consumer filtered to relay.results.<clientID> starts after
//     it. Sequences are totally ordered and never reused, so resuming from
//     the last id seen loses and repeats nothing, across relay restarts too
//     (the state is in JetStream, not in the relay). Results older than
//     history_max_age are gone from the history.
//
// Everything the relay knows lives in JetStream, so a relay killed at any
// point restarts without loss: unacked messages are redelivered.
package relay
