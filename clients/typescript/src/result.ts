// Node results: parsing with the protocol's rules, node-signature
// verification (docs/canonical-encoding.md §6), and the independent check of
// a signature over the submitted tx (attest.VerifySignature).

import * as crypto from "node:crypto";
import { secp256k1 } from "@noble/curves/secp256k1";
import { fromBase64, fromHex, toHex } from "./bytes.js";
import { JsonInt, JsonObject, JsonValue, parseObject, RESULT_DOMAIN, signingInput, canonicalText, toPlain } from "./canonical.js";
import { InvalidSignatureError, MalformedError, UnknownNodeError, VerifyError } from "./errors.js";
import { publicKeyObject, PublicKeyInput, verifyWith } from "./keys.js";
import type { KeyType, Op } from "./request.js";

/** A node's result, or a decision's (protocol.Result). Hex for binary values. */
export interface Result {
  op: Op | string;
  result_type: "success" | "error" | string;
  error_code?: string;
  error_reason?: string;
  is_timeout: boolean;
  request_id: string;
  client_id: string;
  wallet_id?: string;
  tx_id?: string;
  session_id?: string;
  key_type?: KeyType | string;
  key_id?: string;
  /** Keygen: compressed secp256k1 key (33 bytes). */
  ecdsa_pub_key?: string;
  /** Keygen: ed25519 key (32 bytes). */
  eddsa_pub_key?: string;
  r?: string;
  s?: string;
  signature_recovery: number;
  signature?: string;
  /** Sign: the key the signature verifies under (wallet key or HD child); reshare: the wallet key. */
  pub_key?: string;
  new_threshold?: number;
  node_id?: string;
  node_signature?: string;
  /** Members this version does not know are kept. */
  [member: string]: unknown;
}

const STRING_FIELDS = [
  "op", "result_type", "error_code", "error_reason", "request_id", "client_id", "wallet_id", "tx_id", "session_id",
  "key_type", "key_id", "ecdsa_pub_key", "eddsa_pub_key", "r", "s", "signature", "pub_key", "node_id", "node_signature",
];
const INT_FIELDS = ["signature_recovery", "new_threshold"];
const KNOWN = [...STRING_FIELDS, ...INT_FIELDS, "is_timeout"];

/** Parses a result under §2 plus the typed checks Go's decoding makes (member types, case-folded names). */
export function decodeResult(raw: Uint8Array | string): { result: Result; obj: JsonObject } {
  const obj = parseObject(raw);
  for (const k of Object.keys(obj)) {
    for (const n of KNOWN) {
      if (k !== n && k.toLowerCase() === n.toLowerCase()) throw new MalformedError(`member ${JSON.stringify(k)} differs from ${JSON.stringify(n)} only in case`);
    }
  }
  const check = (k: string, ok: (v: JsonValue) => boolean) => {
    const v = obj[k];
    if (v !== undefined && v !== null && !ok(v)) throw new MalformedError(`member ${JSON.stringify(k)} has the wrong type`);
  };
  STRING_FIELDS.forEach((k) => check(k, (v) => typeof v === "string"));
  INT_FIELDS.forEach((k) => check(k, (v) => v instanceof JsonInt));
  check("is_timeout", (v) => typeof v === "boolean");
  const plain = toPlain(obj) as Record<string, unknown>;
  for (const k of Object.keys(plain)) if (plain[k] === null) delete plain[k]; // as Go decodes null: the zero value
  const result = { is_timeout: false, signature_recovery: 0, op: "", result_type: "", request_id: "", client_id: "", ...plain } as Result;
  return { result, obj };
}

/** Node id -> identity public key (P-256). */
export type NodeKeys = Record<string, crypto.KeyObject>;

export function nodeKeysFrom(keys: Record<string, PublicKeyInput>): NodeKeys {
  const out: NodeKeys = {};
  for (const [id, k] of Object.entries(keys)) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new MalformedError(`node id ${JSON.stringify(id)} is not a token`);
    out[id] = publicKeyObject(k);
  }
  return out;
}

/** Verifies one node's raw result against the peer list (protocol.VerifyResult). */
export function verifyResult(raw: Uint8Array | string, nodeKeys: NodeKeys): Result {
  const { result, obj } = decodeResult(raw);
  const id = result.node_id ?? "";
  const pub = id === "" ? undefined : Object.prototype.hasOwnProperty.call(nodeKeys, id) ? nodeKeys[id] : undefined;
  if (!pub) throw new UnknownNodeError(id);
  const s = obj.node_signature;
  if (typeof s !== "string" || s === "") throw new InvalidSignatureError(`node ${id}: "node_signature" missing or not a string`);
  let sig: Uint8Array;
  try {
    sig = fromBase64(s);
  } catch {
    throw new InvalidSignatureError(`node ${id}: "node_signature" is not standard base64`);
  }
  if (!verifyWith(pub, signingInput(RESULT_DOMAIN, obj, "node_signature"), sig)) throw new InvalidSignatureError(`node ${id}: verification failed`);
  return result;
}

/** The bytes a node signed (protocol.ResultSigningInput). */
export function resultSigningInput(raw: Uint8Array | string): Uint8Array {
  return signingInput(RESULT_DOMAIN, parseObject(raw), "node_signature");
}

/** Canonical text of a result's members without node_id and node_signature: what two successes must share. */
export function equalityKey(raw: Uint8Array | string): string {
  const obj = parseObject(raw);
  delete obj.node_id;
  delete obj.node_signature;
  return canonicalText(obj);
}

const ED_SPKI_PREFIX = fromHex("302a300506032b6570032100");

/** Ed25519 over the whole message. */
export function verifyEd25519(pub: Uint8Array, msg: Uint8Array, sig: Uint8Array): void {
  if (pub.length !== 32) throw new VerifyError(`ed25519 public key of ${pub.length} bytes, want 32`);
  if (sig.length !== 64) throw new VerifyError(`ed25519 signature of ${sig.length} bytes, want 64`);
  const key = crypto.createPublicKey({ key: Buffer.concat([ED_SPKI_PREFIX, pub]), format: "der", type: "spki" });
  if (!crypto.verify(null, msg, key, sig)) throw new VerifyError("ed25519 signature does not verify");
}

/** secp256k1 ECDSA over a 32-byte digest (high S allowed), and the recovery id recovers the same key (attest.VerifyECDSA). */
export function verifyECDSA(pub: Uint8Array, digest: Uint8Array, r: Uint8Array, s: Uint8Array, recovery: number): void {
  let point;
  try {
    point = secp256k1.ProjectivePoint.fromHex(pub);
  } catch (e) {
    throw new VerifyError(`public key: ${(e as Error).message}`);
  }
  if (digest.length !== 32) throw new VerifyError(`digest of ${digest.length} bytes, want 32`);
  const n = secp256k1.CURVE.n;
  const rn = BigInt("0x" + (toHex(r) || "0"));
  const sn = BigInt("0x" + (toHex(s) || "0"));
  if (rn === 0n || rn >= n || sn === 0n || sn >= n) throw new VerifyError("r or s out of range");
  const sig = new secp256k1.Signature(rn, sn);
  if (!secp256k1.verify(sig.toCompactRawBytes(), digest, point.toRawBytes(true), { lowS: false, prehash: false })) {
    throw new VerifyError("ECDSA signature does not verify");
  }
  if (!Number.isInteger(recovery) || recovery < 0 || recovery > 3) throw new VerifyError(`recovery id ${recovery}, want 0..3`);
  let rec;
  try {
    rec = sig.addRecoveryBit(recovery).recoverPublicKey(digest);
  } catch (e) {
    throw new VerifyError(`recovery id ${recovery}: ${(e as Error).message}`);
  }
  if (!rec.equals(point)) throw new VerifyError(`recovery id ${recovery} recovers another public key`);
}

/** Checks a sign success against the key that signed and the submitted tx (attest.VerifySignResult). */
export function verifySignResult(res: Result, pub: Uint8Array, tx: Uint8Array): void {
  if (!res || res.result_type !== "success") throw new VerifyError("not a successful result");
  if (res.key_type === "secp256k1") {
    let r: Uint8Array, s: Uint8Array;
    try {
      r = fromHex(res.r ?? "");
      s = fromHex(res.s ?? "");
    } catch {
      throw new VerifyError("r and s must be 32-byte hex");
    }
    if (r.length !== 32 || s.length !== 32) throw new VerifyError("r and s must be 32-byte hex");
    if (res.signature !== (res.r ?? "") + (res.s ?? "")) throw new VerifyError("signature is not r||s");
    verifyECDSA(pub, tx, r, s, res.signature_recovery);
    return;
  }
  if (res.key_type === "ed25519") {
    let sig: Uint8Array;
    try {
      sig = fromHex(res.signature ?? "");
    } catch {
      throw new VerifyError("signature is not hex");
    }
    verifyEd25519(pub, tx, sig);
    return;
  }
  throw new VerifyError(`key type ${JSON.stringify(res.key_type)}`);
}

/** Checks a sign success under its own pub_key over tx (attest.VerifySignature). */
export function verifySignature(res: Result, tx: Uint8Array): void {
  if (!res || res.result_type !== "success" || res.op !== "sign") throw new VerifyError("not a successful signing result");
  let pub: Uint8Array;
  try {
    pub = fromHex(res.pub_key ?? "");
  } catch {
    throw new VerifyError("pub_key missing or not hex");
  }
  if (pub.length === 0) throw new VerifyError("pub_key missing or not hex");
  verifySignResult(res, pub, tx);
}


