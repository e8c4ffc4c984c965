// Package client is the Go package backends use to create wallets, sign and
// reshare through a hwsigner cluster over NATS JetStream.
//
// A Client signs every request with the backend's key (a crypto.Signer:
// Ed25519 or ECDSA P-256, in memory, an HSM or a KMS), publishes it to
// MPC_REQUESTS with Nats-Msg-Id = routing.RequestMsgID (scoped by client and
// bound to the signed bytes, so that nothing published under a guessed id
// suppresses it) and waits for JetStream's acknowledgement, so a request is
// either stored or the call fails.
//
// Every node publishes its own signed result (Nats-Msg-Id =
// routing.ResultMsgID). Results arrive on the client's own durable consumers
// (see package routing); each node signature is checked against the
// cluster's peer list (WithNodeKeys), a result that fails is dropped and
// counted, a result for another client key (key_id: the refusal of a key
// that claimed this client ID) is dropped as misrouted, and the rest are
// collected per request (op, request_id) and decided with package attest:
// no single node, and no set of t nodes, decides what the client sees.
//
//   - keygen succeeds when every node reports the same public keys; one
//     member's error decides at once, and members reporting different
//     keys give RESULT_MISMATCH, naming each node and what it reported;
//   - sign and reshare succeed when t+1 nodes (WithSigners; default a
//     majority of the node keys) report identical successes; an error is
//     final when t+1 nodes report errors;
//   - a Wait helper also checks a signature over its own tx under the
//     result's pub_key (attest.VerifySignature) and refuses one that does
//     not verify (RESULT_MISMATCH).
//
// The attestation rules and message ids are in docs/canonical-encoding.md
// ("Verifying a committee's attestation").
//
// Two ways to receive results, usable together:
//
//   - callbacks: OnWalletCreationResult, OnSignResult, OnReshareResult (or
//     the On...Decision forms, which also get the attesting signed node
//     results). A callback runs once per request without a waiter, with
//     the attested result, one at a time per operation. The node results
//     stay un-acked until the request is decided and are acked after the
//     callback returns, so a crash or panic loses nothing: they are
//     redelivered and decided again (return only once the result is safely
//     handled; after a crash a result may be delivered again).
//   - blocking: CreateWalletAndWait, SignAndWait, ReshareAndWait wait for the
//     decision on their request_id; an error comes back as a *ResultError
//     (stable code, what each node reported; it unwraps to the
//     *attest.Error).
//
// Every request a Client sends (Keygen, Sign, Reshare or a Wait helper) is
// decided exactly once. The Client knows its request_id and expires_at;
// nodes take a request only until its expires_at. When nothing is attested
// by then plus a grace for results still in flight (WithExpiryGrace,
// default 10 s), the Client decides TIMEOUT with the results it has as
// evidence, possibly none ("no node answered"): the callback gets it, or
// the Wait helper returns it. A Wait helper also returns TIMEOUT when its
// context ends first, wrapped together with ctx.Err(); that TIMEOUT is a
// decision too, and ResultError.ExpiresAt says until when a node may still
// take the request. Results that arrive after a decision are acked and
// counted as stragglers (Stats), never delivered to a callback or a Wait
// helper: the request is remembered as decided for at least 10 minutes
// (twice the request TTL plus the grace, if longer; at most 65536
// requests). A success among them is logged at warn level: a ceremony that
// finished after the TIMEOUT. So a TIMEOUT says that nothing was attested
// in time, not that nothing was signed. A retry under the same request_id
// gets REPLAYED from every node that took the first request, and the first
// one's results only if they arrive after the retry was sent; a retry
// under a new request_id may sign again.
//
// Results of a request this Client did not send (another process of the
// same client sent it, or this one before a restart) are held for the
// request TTL (WithRequestTTL) from the first one, then decided TIMEOUT
// likewise. A request sent while no callback for its op is registered, and
// still undecided at its deadline, is forgotten: its results, if any, stay
// in the stream for the callback that takes them. A Client tracks at most
// MaxPendingRequests (65536) requests sent and undecided; beyond that,
// sending fails with ErrTooManyPending before anything is published.
//
// A result with neither a waiter nor a callback is not acked: it stays in
// the stream and is redelivered (with a growing delay), so a callback
// registered later, or another process of the same client, gets it.
//
// Several processes may share one clientID and its key (they share its
// consumers, and JetStream spreads the node results of one request over
// them). A process passes on results it has no waiter or callback for, so
// a Wait helper in one process still gets every result of its request once
// the others have passed them on. Processes that all register callbacks
// for one op each see only part of a request's results: run that op's
// callback in one process. Processes with different keys for one clientID
// drop each other's results: let in-flight requests finish before rotating
// the key. Undecided results count against the consumer's MaxAckPending
// (256): keep fewer undecided requests than that per op in flight. Connect
// with nats.CustomInboxPrefix when the server restricts inbox subjects per
// client (docs/nats-server.conf.example).
package client
