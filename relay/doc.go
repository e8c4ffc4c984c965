// Package relay is signer-relay: it serves backends that do not speak NATS.
//
// Requests in: POST /v1/wallets, /v1/sign and /v1/reshare take the exact
// signed JSON envelope the Go client publishes. The relay authenticates the
// caller's bearer token (each bound to one clientID, kept only as a SHA-256
// hash, compared in constant time), checks the size, the shape, that the
// envelope's client_id is the token's clientID and that the signature
// verifies against a public key configured for that clientID, and publishes
// the bytes unchanged to MPC_REQUESTS with Nats-Msg-Id = routing.RequestMsgID.
// It answers 202 {"request_id"} only after JetStream's publish ack, and 503
// NATS_UNAVAILABLE when there is none: a request is never dropped silently.
// The relay holds each client's NATS credentials, never a client signing key.
//
// Results out. Design choice: one history of attested decisions per client
// in JetStream.
//
//	MPC_RESULTS --(client's durable result consumers, routing.ResultConsumers)-->
//	  verify each node result (cluster.peers), collect per request (attest)
//	  RELAY_RESULTS  relay.results.<clientID>   (decisions; limits retention, history_max_age)
//	      |-- durable consumer relay_webhook_<clientID> --> Standard Webhooks POST
//	      |-- ordered consumers from a cursor          --> SSE, long polling
//	RELAY_DLQ        relay.dlq.<clientID>       (webhook deliveries failed > max_age)
//
// Every node publishes its own signed result. The relay verifies each one
// against the cluster's node keys and collects them per (op, request_id,
// key_id) with an attest.Collector under the cluster's rules, exactly like
// the Go client: nothing one node (or t nodes, or a NATS user) publishes
// reaches a backend on its own. Only the decision, a Delivery (the attested
// result and the node results that attest it, docs/canonical-encoding.md
// §7), goes to RELAY_RESULTS, under Nats-Msg-Id DecisionMsgID; the node
// results are acked only after the history stored it, so a crash between
// the two stores it once (within the history's dedup window, 24 h by
// default) and a crash before loses nothing (JetStream redelivers, the next
// run collects again). Node results are verified on every core, and the
// copy into the history is pipelined: each decision is published
// asynchronously as soon as it is made, at most 256 awaiting their PubAck,
// and its node results are acked once its PubAck has come (a burst costs
// about one round trip, not one per decision; a lost ack only redelivers a
// result that is then dropped as a straggler or deduplicated). A request undecided after cluster.hold is decided
// TIMEOUT; results after a decision are acked and dropped. MPC_RESULTS
// being a work queue, only one reader can own a client's results; the
// limits-retention history lets three channels read the decisions
// independently and lets readers come back later:
//
//   - Webhooks: a durable consumer per client posts each decision, signed
//     per Standard Webhooks ("v1," HMAC-SHA256 with the whsec_ secret;
//     during a rotation's overlap, until previous_secret_until, under the
//     previous secret too; and "v1a," Ed25519 with signing_key_source, its
//     public key served by GET /v1/webhook-key), and acks only after a
//     2xx; otherwise NakWithDelay with exponential backoff and jitter, no
//     sooner than a 429's or 503's Retry-After (at most 1 h). A 410 Gone
//     stops the client's deliveries until the relay restarts: that result
//     and every later one are dead-lettered at once, without a POST
//     (signer_relay_webhook_gone is 1). The first failed
//     attempt once max_age has passed since the decision was stored (a
//     time, not an attempt count) moves it to RELAY_DLQ (then acked), with
//     the webhook-id, the history sequence and the last error. webhook-id
//     is the decision's Nats-Msg-Id, identical on every retry, dead letter
//     and replay, so receivers deduplicate on it. `signer-relay dlq replay`
//     (ReplayDLQ) publishes dead letters, bytes unchanged, to
//     relay.replay.<clientID>, which only the webhook consumer reads, and
//     deletes them from RELAY_DLQ; a replay that fails again is
//     dead-lettered again max_age after the replay.
//   - SSE, WebSocket (GET /v1/ws) and long polling: the cursor is the
//     RELAY_RESULTS stream sequence;
//     an ordered consumer filtered to relay.results.<clientID> starts after
//     it. Sequences are totally ordered and never reused, so resuming from
//     the last id seen loses and repeats nothing, across relay restarts too
//     (the state is in JetStream, not in the relay). Decisions older than
//     history_max_age are gone from the history. A WebSocket connection
//     (github.com/coder/websocket) sends each decision as a long-poll item
//     with its cursor, pings every websocket.ping_interval and holds at
//     most websocket.send_queue decisions (plus 64 fetched ahead): a
//     reader that leaves the queue full for websocket.write_timeout is
//     disconnected with close code 1008 and resumes with ?after=.
//
// The HTTP API (Handler, Routes) is documented in OpenAPI 3.1 in
// docs/relay-openapi.yaml; TestOpenAPIMatchesHandlers checks every route,
// status code and response schema there against the real handlers.
//
// Everything the relay must not lose lives in JetStream, so a relay killed
// at any point restarts without loss: unacked messages are redelivered.
package relay
