// Requests: building, validation (as protocol.*Request.Validate), signing
// and verification (docs/canonical-encoding.md §1, §5).

import { fromBase64, toBase64, toHex } from "./bytes.js";
import { fromPlain, JsonObject, parseObject, requestDomain, signingInput, canonicalText } from "./canonical.js";
import { InvalidSignatureError, MalformedError, ValidationError } from "./errors.js";
import { keyId, publicKeyObject, PublicKeyInput, RequestSigner, signChecked, verifyWith } from "./keys.js";
import { utf8 } from "./bytes.js";
import * as crypto from "node:crypto";

export type Op = "keygen" | "sign" | "reshare";
export type KeyType = "secp256k1" | "ed25519";

export const MAX_TOKEN_LEN = 64;
export const MAX_TX_SIZE = 64 << 10;
export const DIGEST_SIZE = 32;
export const MAX_REQUEST_TTL_MS = 24 * 3600 * 1000;
export const MAX_DERIVATION_DEPTH = 255;
export const HARDENED_OFFSET = 0x80000000;
export const MAX_NODE_IDS = 64;
export const MAX_NETWORK_CODE_LEN = 64;
export const DEFAULT_REQUEST_TTL_MS = 5 * 60 * 1000;

const TOKEN = /^[A-Za-z0-9_-]{1,64}$/;

export function isValidToken(s: unknown): s is string {
  return typeof s === "string" && TOKEN.test(s);
}

export function isOp(s: unknown): s is Op {
  return s === "keygen" || s === "sign" || s === "reshare";
}

export function isKeyType(s: unknown): s is KeyType {
  return s === "secp256k1" || s === "ed25519";
}

function token(field: string, v: unknown): void {
  if (!isValidToken(v)) throw new ValidationError(field, "not 1-64 characters of [A-Za-z0-9_-]");
}

export interface KeygenParams {
  walletId: string;
  /** Default: both key types. */
  keyTypes?: KeyType[];
  requestId?: string;
}

export interface SignParams {
  walletId: string;
  keyType: KeyType;
  txId: string;
  /** The 32-byte digest (secp256k1) or the whole message (ed25519). */
  tx: Uint8Array;
  /** Non-hardened child indices (each < 2^31), or a path "m/44/60/0/0/7". */
  derivationPath?: number[] | string;
  networkInternalCode?: string;
  requestId?: string;
}

export interface ReshareParams {
  walletId: string;
  keyType: KeyType;
  sessionId: string;
  nodeIds: string[];
  newThreshold: number;
  requestId?: string;
}

/** Parses "m/44/60/0/0/7" (leading "m/" optional); hardened steps are refused. */
export function parseDerivationPath(s: string): number[] {
  s = s.trim();
  if (s === "" || s === "m") return [];
  if (s.startsWith("m/")) s = s.slice(2);
  const parts = s.split("/");
  if (parts.length > MAX_DERIVATION_DEPTH) throw new ValidationError("derivation_path", `${parts.length} levels, at most ${MAX_DERIVATION_DEPTH}`);
  return parts.map((p) => {
    if (/['hH]/.test(p)) throw new ValidationError("derivation_path", `step ${JSON.stringify(p)} is hardened; only non-hardened steps are supported`);
    if (!/^[0-9]{1,10}$/.test(p) || Number(p) >= HARDENED_OFFSET) {
      throw new ValidationError("derivation_path", `step ${JSON.stringify(p)} is not a decimal index below 2^31`);
    }
    return Number(p);
  });
}

export function formatDerivationPath(path: number[]): string {
  return ["m", ...path.map(String)].join("/");
}

export function normalizePath(p: number[] | string | undefined): number[] {
  if (p === undefined) return [];
  const path = typeof p === "string" ? parseDerivationPath(p) : p;
  if (!Array.isArray(path)) throw new ValidationError("derivation_path", "not an array");
  if (path.length > MAX_DERIVATION_DEPTH) throw new ValidationError("derivation_path", `${path.length} levels, at most ${MAX_DERIVATION_DEPTH}`);
  path.forEach((i, n) => {
    if (!Number.isInteger(i) || i < 0) throw new ValidationError(`derivation_path[${n}]`, "not a non-negative integer");
    if (i >= HARDENED_OFFSET) throw new ValidationError(`derivation_path[${n}]`, "hardened index not supported");
  });
  return [...path];
}

export interface Envelope {
  clientId: string;
  keyId: string;
  requestId: string;
  createdAt: number;
  expiresAt: number;
}

/** Builds the unsigned members of a request, validated as a node would (BAD_REQUEST rules). */
export function buildRequest(op: "keygen", env: Envelope, p: KeygenParams): Record<string, unknown>;
export function buildRequest(op: "sign", env: Envelope, p: SignParams): Record<string, unknown>;
export function buildRequest(op: "reshare", env: Envelope, p: ReshareParams): Record<string, unknown>;
export function buildRequest(op: Op, env: Envelope, p: KeygenParams | SignParams | ReshareParams): Record<string, unknown>;
export function buildRequest(op: Op, env: Envelope, p: KeygenParams | SignParams | ReshareParams): Record<string, unknown> {
  if (!isOp(op)) throw new ValidationError("op", `unknown operation ${JSON.stringify(op)}`);
  if (env.clientId !== "") token("client_id", env.clientId);
  if (!/^[0-9a-f]{32}$/.test(env.keyId)) throw new ValidationError("key_id", "not 32 lowercase hex digits");
  token("request_id", env.requestId);
  if (!Number.isSafeInteger(env.createdAt) || env.createdAt <= 0) throw new ValidationError("created_at", "missing");
  if (!Number.isSafeInteger(env.expiresAt) || env.expiresAt <= env.createdAt) throw new ValidationError("expires_at", "not after created_at");
  if (env.expiresAt - env.createdAt > MAX_REQUEST_TTL_MS) throw new ValidationError("expires_at", "more than 24h after created_at");
  const m: Record<string, unknown> = {
    op,
    client_id: env.clientId,
    key_id: env.keyId,
    request_id: env.requestId,
    created_at: env.createdAt,
    expires_at: env.expiresAt,
  };
  if (p === null || typeof p !== "object") throw new ValidationError("params", "missing");
  token("wallet_id", p.walletId);
  m.wallet_id = p.walletId;
  switch (op) {
    case "keygen": {
      const k = p as KeygenParams;
      if (k.keyTypes !== undefined && k.keyTypes.length > 0) {
        const seen = new Set<string>();
        k.keyTypes.forEach((kt, i) => {
          if (!isKeyType(kt)) throw new ValidationError(`key_types[${i}]`, `unknown key type ${JSON.stringify(kt)}`);
          if (seen.has(kt)) throw new ValidationError(`key_types[${i}]`, `duplicate key type ${JSON.stringify(kt)}`);
          seen.add(kt);
        });
        m.key_types = [...k.keyTypes];
      }
      break;
    }
    case "sign": {
      const s = p as SignParams;
      token("tx_id", s.txId);
      if (!(s.tx instanceof Uint8Array)) throw new ValidationError("tx", "not bytes (Uint8Array)");
      if (s.keyType === "secp256k1") {
        if (s.tx.length !== DIGEST_SIZE) throw new ValidationError("tx", `secp256k1 takes a 32-byte digest, got ${s.tx.length} bytes`);
      } else if (s.keyType === "ed25519") {
        if (s.tx.length === 0 || s.tx.length > MAX_TX_SIZE) throw new ValidationError("tx", `ed25519 message of ${s.tx.length} bytes, want 1..${MAX_TX_SIZE}`);
      } else {
        throw new ValidationError("key_type", `unknown key type ${JSON.stringify(s.keyType)}`);
      }
      m.key_type = s.keyType;
      m.tx_id = s.txId;
      m.tx = toBase64(s.tx);
      const path = normalizePath(s.derivationPath);
      if (path.length > 0) m.derivation_path = path;
      if (s.networkInternalCode !== undefined && s.networkInternalCode !== "") {
        if (typeof s.networkInternalCode !== "string" || utf8(s.networkInternalCode).length > MAX_NETWORK_CODE_LEN) {
          throw new ValidationError("network_internal_code", `longer than ${MAX_NETWORK_CODE_LEN} bytes`);
        }
        m.network_internal_code = s.networkInternalCode;
      }
      break;
    }
    case "reshare": {
      const r = p as ReshareParams;
      if (!isKeyType(r.keyType)) throw new ValidationError("key_type", `unknown key type ${JSON.stringify(r.keyType)}`);
      token("session_id", r.sessionId);
      if (!Array.isArray(r.nodeIds) || r.nodeIds.length === 0 || r.nodeIds.length > MAX_NODE_IDS) {
        throw new ValidationError("node_ids", `want 1..${MAX_NODE_IDS} nodes`);
      }
      const seen = new Set<string>();
      r.nodeIds.forEach((id, i) => {
        token(`node_ids[${i}]`, id);
        if (seen.has(id)) throw new ValidationError(`node_ids[${i}]`, `duplicate node ${JSON.stringify(id)}`);
        seen.add(id);
      });
      if (!Number.isInteger(r.newThreshold) || r.newThreshold < 1 || r.newThreshold >= r.nodeIds.length) {
        throw new ValidationError("new_threshold", `${r.newThreshold}, want 1..${r.nodeIds.length - 1} for ${r.nodeIds.length} nodes`);
      }
      m.key_type = r.keyType;
      m.session_id = r.sessionId;
      m.node_ids = [...r.nodeIds];
      m.new_threshold = r.newThreshold;
      break;
    }
  }
  return m;
}

/**
 * Signs request members (op and key_id included, as buildRequest returns
 * them, or any hand-built object) and returns the signed request in
 * canonical form, ready to publish (protocol.SignRequest).
 */
export async function signRequest(signer: RequestSigner, members: Record<string, unknown>): Promise<Uint8Array> {
  const op = members.op;
  if (!isOp(op)) throw new ValidationError("op", `unknown operation ${JSON.stringify(op)}`);
  const obj = fromPlain({ ...members, signature: undefined }) as JsonObject;
  obj.key_id = keyId(signer.publicKeySpki);
  const sig = await signChecked(signer, signingInput(requestDomain(op), obj, "signature"));
  obj.signature = toBase64(sig);
  return utf8(canonicalText(obj));
}

/** The bytes a request signature covers (protocol.RequestSigningInput). */
export function requestSigningInput(raw: Uint8Array | string): Uint8Array {
  const obj = parseObject(raw);
  const op = obj.op;
  if (typeof op !== "string" || !isOp(op)) throw new MalformedError(`unknown op ${JSON.stringify(op)}`, "UNKNOWN_OP");
  return signingInput(requestDomain(op), obj, "signature");
}

/** Verifies a raw request's signature against pub (protocol.VerifyRequest). */
export function verifyRequest(raw: Uint8Array | string, pub: PublicKeyInput): void {
  const key = publicKeyObject(pub);
  const obj = parseObject(raw);
  const op = obj.op;
  if (typeof op !== "string" || !isOp(op)) throw new MalformedError(`unknown op ${JSON.stringify(op)}`, "UNKNOWN_OP");
  const want = keyId(key);
  if (obj.key_id !== want) throw new InvalidSignatureError(`key_id does not name the verifying key ${want}`);
  const s = obj.signature;
  if (typeof s !== "string" || s === "") throw new InvalidSignatureError('"signature" missing or not a string');
  let sig: Uint8Array;
  try {
    sig = fromBase64(s);
  } catch {
    throw new InvalidSignatureError('"signature" is not standard base64');
  }
  if (!verifyWith(key, signingInput(requestDomain(op), obj, "signature"), sig)) throw new InvalidSignatureError("verification failed");
}

/** 128 random bits, hex: a fresh request_id. */
export function newRequestId(): string {
  return toHex(crypto.randomBytes(16));
}


