// Package routing names the NATS subjects, JetStream streams, consumers and
// the readiness KV bucket of the signer cluster, and creates them
// idempotently.
//
// Requests: stream MPC_REQUESTS (interest retention), subjects
// mpc.<op>_request.<walletID>; every node has its own durable consumer
// node_<nodeID>, so each node sees each request and none is lost while a node
// restarts. Create the node consumers before clients publish: with interest
// retention a message published while no consumer exists is not kept.
//
// Results: stream MPC_RESULTS (work-queue retention), subjects
//
//	keygen   mpc.mpc_keygen_result.<walletID>      mpc.mpc_keygen_result.<clientID>.<walletID>
//	signing  mpc.mpc_signing_result.complete       mpc.mpc_signing_result.<clientID>.complete
//	reshare  mpc.mpc_reshare_result.<sessionID>    mpc.mpc_reshare_result.<clientID>.<sessionID>
//
// (legacy, without clientID, on the left). Each client has one durable pull
// consumer per operation whose filter matches only its own subjects; legacy
// and scoped filters never overlap because '*' matches exactly one token, and
// a work-queue stream refuses overlapping filters.
//
// Rounds: a ceremony's round messages travel on core NATS, outside every
// stream, on mpc.round.<sessionID>.<nodeID> (the recipient's node ID).
//
// Every identifier is checked with protocol.ValidToken before it goes into a
// subject or a consumer name: a bad one is an error, never a subject.
package routing
