// Errors with the stable codes of docs/error-codes.md.

/** Every stable result error code, in documentation order (protocol.ErrorCodes). */
export const ErrorCodes = [
  "BAD_REQUEST",
  "INVALID_SIGNATURE",
  "EXPIRED",
  "REPLAYED",
  "UNAUTHORIZED_CLIENT",
  "UNKNOWN_WALLET",
  "WALLET_EXISTS",
  "NODES_NOT_READY",
  "TIMEOUT",
  "CEREMONY_FAILED",
  "HSM_FAILURE",
  "INTERNAL",
  "NO_PREPARAMS",
  "RESULT_MISMATCH",
  "PEER_EQUIVOCATED",
  "APPROVAL_REQUIRED",
  "APPROVAL_INVALID",
] as const;

export type ErrorCode = (typeof ErrorCodes)[number];

const RETRYABLE = new Set<string>(["NODES_NOT_READY", "TIMEOUT", "CEREMONY_FAILED", "HSM_FAILURE", "INTERNAL", "NO_PREPARAMS", "EXPIRED"]);

/** Whether sending the request again (new request_id, fresh times) may succeed (protocol.Retryable). Unknown codes: no. */
export function isRetryable(code: string): boolean {
  return RETRYABLE.has(code);
}

export function isKnownErrorCode(code: string): code is ErrorCode {
  return (ErrorCodes as readonly string[]).includes(code);
}

/** Base class of this package's errors. `code` is a stable code or one of the local kinds below. */
export class HwSignerError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Input refused before anything was sent (code BAD_REQUEST, as a node would answer). */
export class ValidationError extends HwSignerError {
  readonly field: string;
  constructor(field: string, reason: string) {
    super("BAD_REQUEST", `invalid request: ${field}: ${reason}`);
    this.field = field;
  }
}

/** JSON that the protocol does not accept (docs/canonical-encoding.md §2). */
export class MalformedError extends HwSignerError {
  constructor(reason: string, code = "MALFORMED") {
    super(code, `malformed message: ${reason}`);
  }
}

/** A signature that is missing, malformed, by another key, or wrong (INVALID_SIGNATURE). */
export class InvalidSignatureError extends HwSignerError {
  constructor(reason: string) {
    super("INVALID_SIGNATURE", `invalid signature: ${reason}`);
  }
}

/** A result naming a node that is not in the peer list. */
export class UnknownNodeError extends HwSignerError {
  constructor(nodeId: string) {
    super("UNKNOWN_NODE", `unknown node ${JSON.stringify(nodeId)}`);
  }
}

/** An independent signature check (over the tx, under pub_key or the derived child key) failed. */
export class VerifyError extends HwSignerError {
  constructor(reason: string) {
    super("VERIFY_FAILED", `signature verification failed: ${reason}`);
  }
}

/** HD derivation refused (bad key, hardened index, BIP32-invalid step). */
export class DeriveError extends HwSignerError {
  constructor(reason: string) {
    super("DERIVE_FAILED", `hd: derivation failed: ${reason}`);
  }
}

/** The client was closed. */
export class ClosedError extends HwSignerError {
  constructor() {
    super("CLOSED", "client: closed");
  }
}

/**
 * The committee's decision is not a success: an error attested by t+1 nodes
 * (any member for keygen), RESULT_MISMATCH, or TIMEOUT. `nodes` says what each
 * node whose result was taken reported.
 */
export class ResultError extends HwSignerError {
  readonly requestId: string;
  readonly reason: string;
  readonly nodes: Record<string, string>;
  constructor(requestId: string, code: string, reason: string, nodes: Record<string, string> = {}) {
    super(code, `request ${requestId} failed: ${code}: ${reason}`);
    this.requestId = requestId;
    this.reason = reason;
    this.nodes = nodes;
  }
  get retryable(): boolean {
    return isRetryable(this.code);
  }
  get isTimeout(): boolean {
    return this.code === "TIMEOUT";
  }
}
