// What signer-relay delivers (docs/canonical-encoding.md §7.2) and its
// re-verification against the node keys (§7.3; relay.VerifyDelivery).

import { Collector, Decision, Rules } from "./attest.js";
import { fromBase64, fromUtf8 } from "./bytes.js";
import { canonicalText, parseObject, JsonObject, toPlain } from "./canonical.js";
import { HwSignerError } from "./errors.js";
import { decodeResult, equalityKey, NodeKeys, Result, verifyResult } from "./result.js";

/** A delivery that the attestations do not support. */
export class NotAttestedError extends HwSignerError {
  constructor(reason: string) {
    super("NOT_ATTESTED", `delivery not attested: ${reason}`);
  }
}

export interface VerifyDeliveryOptions {
  nodeKeys: NodeKeys;
  rules: Rules;
  /** When set, the result's client_id must be this. */
  clientId?: string;
  /** When set, the result's key_id must be one of these. */
  keyIds?: string[];
}

/**
 * Verifies a delivery body (webhook body, SSE data, a long-poll item) and
 * returns the decision it carries: every attestation verifies under the
 * node keys and is for the same request, and they meet the rules for
 * exactly this result. TIMEOUT is returned as is (the relay stopped waiting).
 */
export function verifyDelivery(body: Uint8Array | string | JsonObject, o: VerifyDeliveryOptions): Decision {
  const obj = typeof body === "string" || body instanceof Uint8Array ? parseObject(body) : body;
  const r = obj.result;
  if (r === null || typeof r !== "object" || Array.isArray(r) || !("op" in r)) throw new NotAttestedError("no result object");
  const resultText = canonicalText(r as JsonObject);
  const { result } = decodeResult(resultText);
  if (result.node_id || result.node_signature) throw new NotAttestedError("the result carries one node's signature");
  if (o.clientId !== undefined && result.client_id !== o.clientId) throw new NotAttestedError(`client_id ${JSON.stringify(result.client_id)} is not ours`);
  if (o.keyIds && !o.keyIds.includes(result.key_id ?? "")) throw new NotAttestedError(`key_id ${JSON.stringify(result.key_id)} is not ours`);
  const atts = obj.attestations;
  if (!Array.isArray(atts)) throw new NotAttestedError("no attestations");
  const col = new Collector(result.op, o.rules);
  let dec: Decision | undefined;
  const raws: Uint8Array[] = [];
  atts.forEach((a, i) => {
    if (typeof a !== "string") throw new NotAttestedError(`attestation ${i} is not a string`);
    let raw: Uint8Array;
    try {
      raw = fromBase64(a);
    } catch {
      throw new NotAttestedError(`attestation ${i} is not base64`);
    }
    let res: Result;
    try {
      res = verifyResult(raw, o.nodeKeys);
    } catch (e) {
      throw new NotAttestedError(`attestation ${i}: ${(e as Error).message}`);
    }
    if (res.op !== result.op || res.request_id !== result.request_id || res.client_id !== result.client_id || (res.key_id ?? "") !== (result.key_id ?? "")) {
      throw new NotAttestedError(`attestation ${i} (node ${res.node_id}) is for another request`);
    }
    raws.push(raw);
    dec ??= col.add(res, raw);
  });
  const nodes = obj.nodes && typeof obj.nodes === "object" && !Array.isArray(obj.nodes) ? (toPlain(obj.nodes) as Record<string, string>) : {};
  const timeout = result.result_type !== "success" && result.error_code === "TIMEOUT";
  if (timeout && !dec) {
    return { result, attestations: raws, error: { code: "TIMEOUT", reason: result.error_reason ?? "", nodes } };
  }
  if (!dec) throw new NotAttestedError(`${atts.length} attestations do not meet the rules`);
  const got = dec.result;
  if (result.result_type === "success" && !dec.error && dec.attestations.every((a) => equalityKey(a) === resultText)) {
    return { result, attestations: dec.attestations };
  }
  if (result.result_type !== "success" && !timeout && dec.error && got.error_code === result.error_code) {
    return { result, attestations: dec.attestations, error: { code: result.error_code ?? "", reason: result.error_reason ?? "", nodes } };
  }
  throw new NotAttestedError("the attestations decide another result");
}

export function deliveryText(b: Uint8Array | string): string {
  return typeof b === "string" ? b : fromUtf8(b);
}
