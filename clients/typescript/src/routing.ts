// Subjects, durable consumer names and message ids (package routing).

import { createHash } from "node:crypto";
import { ValidationError } from "./errors.js";
import { isValidToken, Op } from "./request.js";

export const REQUEST_STREAM = "MPC_REQUESTS";
export const RESULT_STREAM = "MPC_RESULTS";

const REQUEST_TOKEN: Record<Op, string> = { keygen: "keygen_request", sign: "signing_request", reshare: "reshare_request" };
const RESULT_TOKEN: Record<Op, string> = { keygen: "mpc_keygen_result", sign: "mpc_signing_result", reshare: "mpc_reshare_result" };

function scoped(clientId: string): string {
  if (clientId === "") return "";
  if (!isValidToken(clientId)) throw new ValidationError("client_id", "not 1-64 characters of [A-Za-z0-9_-]");
  return clientId + ".";
}

/** mpc.<keygen|signing|reshare>_request.<walletId> */
export function requestSubject(op: Op, walletId: string): string {
  if (!isValidToken(walletId)) throw new ValidationError("wallet_id", "not 1-64 characters of [A-Za-z0-9_-]");
  return `mpc.${REQUEST_TOKEN[op]}.${walletId}`;
}

/** The filter of a client's result consumer for op (routing.ResultFilterSubject). */
export function resultFilterSubject(op: Op, clientId: string): string {
  return `mpc.${RESULT_TOKEN[op]}.${scoped(clientId)}${op === "sign" ? "complete" : "*"}`;
}

/** The subject a node publishes a result on (routing.ResultSubject). */
export function resultSubject(op: Op, clientId: string, walletOrSession: string): string {
  if (op === "sign") return `mpc.mpc_signing_result.${scoped(clientId)}complete`;
  if (!isValidToken(walletOrSession)) throw new ValidationError(op === "keygen" ? "wallet_id" : "session_id", "not a token");
  return `mpc.${RESULT_TOKEN[op]}.${scoped(clientId)}${walletOrSession}`;
}

/** The durable name of a client's result consumer (routing.ResultConsumerName). */
export function resultConsumerName(op: Op, clientId: string): string {
  if (clientId === "") return RESULT_TOKEN[op];
  scoped(clientId);
  return `${RESULT_TOKEN[op]}_${clientId}`;
}

function digest(raw: Uint8Array): string {
  return createHash("sha256").update(raw).digest("hex").slice(0, 32);
}

/** Nats-Msg-Id of a signed request: req.<client_id>.<request_id>.<hex32>. */
export function requestMsgId(clientId: string, requestId: string, raw: Uint8Array): string {
  return `req.${clientId}.${requestId}.${digest(raw)}`;
}

/** Nats-Msg-Id of one node's result: result.<client_id>.<request_id>.<node_id>.<hex32>. */
export function resultMsgId(clientId: string, requestId: string, nodeId: string, raw: Uint8Array): string {
  return `result.${clientId}.${requestId}.${nodeId}.${digest(raw)}`;
}
