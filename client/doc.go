// Package client is the Go package backends use to create wallets, sign and
// reshare through a hwsigner cluster over NATS JetStream.
//
// A Client signs every request with the backend's key (a crypto.Signer:
// Ed25519 or ECDSA P-256, in memory, an HSM or a KMS), publishes it to
// MPC_REQUESTS with Nats-Msg-Id = request_id and waits for JetStream's
// acknowledgement, so a request is either stored or the call fails. Results
// arrive on the client's own durable consumers (see package routing); each
// result's node signature is checked against the cluster's peer list before
// it is delivered, and a result that fails is dropped and counted.
//
// Two ways to receive results, usable together:
//
//   - callbacks: OnWalletCreationResult, OnSignResult, OnReshareResult. A
//     callback runs for every result without a waiter, one at a time per
//     operation; the result is acked after it returns (return only once the
//     result is safely handled; results may be delivered more than once).
//   - blocking: CreateWalletAndWait, SignAndWait, ReshareAndWait wait for the
//     result with their request_id; an error result comes back with a
//     *ResultError.
//
// A result with neither a waiter nor a callback is not acked: it stays in
// the stream and is redelivered (with a growing delay), so a callback
// registered later, or another process of the same client, gets it.
//
// Several processes may share one clientID (they share its consumers); a Wait
// helper then still gets its result, after the other processes have passed
// it on. Connect with nats.CustomInboxPrefix when the server restricts inbox
// subjects per client (docs/nats-server.conf.example).
package client
