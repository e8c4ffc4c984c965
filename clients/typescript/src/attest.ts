// The committee attestation rules (package attest; docs/canonical-encoding.md
// §8): one Collector per request, fed verified node results.

import { createHash } from "node:crypto";
import { utf8 } from "./bytes.js";
import { Result, equalityKey } from "./result.js";

export interface Rules {
  /** The cluster's node ids. */
  nodes: string[];
  /** t+1: distinct nodes that must report the same sign/reshare outcome, or an error. < 1: a majority of nodes. */
  signers?: number;
}

export interface AttestError {
  code: string;
  reason: string;
  /** node -> what it reported. */
  nodes: Record<string, string>;
}

export interface Decision {
  /** The attested result (a copy of the lowest attester's), or for RESULT_MISMATCH/TIMEOUT one made here (no node_id). */
  result: Result;
  /** The raw signed node results that attest it, sorted by node id (evidence for RESULT_MISMATCH/TIMEOUT). */
  attestations: Uint8Array[];
  /** Undefined on an attested success. */
  error?: AttestError;
}

interface Entry {
  res: Result;
  raw: Uint8Array;
  key: string;
}

export function signersOf(r: Rules): number {
  return r.signers !== undefined && r.signers >= 1 ? r.signers : Math.floor(r.nodes.length / 2) + 1;
}

const MAX_REASON = 200;

/** Gathers the verified results of ONE request (same op, request_id, client_id, key_id). */
export class Collector {
  private readonly members: Set<string>;
  private bound = false;
  private requestId = "";
  private clientId = "";
  private keyId = "";
  private readonly seen = new Map<string, Entry>();
  private readonly replayed = new Map<string, Entry>();
  private decision?: Decision;

  constructor(readonly op: string, readonly rules: Rules) {
    this.members = new Set(rules.nodes);
  }

  get decided(): boolean {
    return this.decision !== undefined;
  }

  /** Takes one node's verified result and its raw bytes; returns the decision once the rules are met. */
  add(res: Result, raw: Uint8Array): Decision | undefined {
    if (this.decision || !res || res.op !== this.op || !this.members.has(res.node_id ?? "")) return undefined;
    const nodeId = res.node_id!;
    if (this.bound && (res.request_id !== this.requestId || res.client_id !== this.clientId || (res.key_id ?? "") !== this.keyId)) return undefined;
    if (this.seen.has(nodeId)) return undefined;
    if (!this.bound) {
      this.bound = true;
      this.requestId = res.request_id;
      this.clientId = res.client_id;
      this.keyId = res.key_id ?? "";
    }
    const e: Entry = { res: { ...res }, raw: raw.slice(), key: equalityKey(raw) };
    if (res.result_type !== "success" && res.error_code === "REPLAYED") {
      if (!this.replayed.has(nodeId)) this.replayed.set(nodeId, e);
      return undefined;
    }
    this.replayed.delete(nodeId);
    this.seen.set(nodeId, e);
    const d = this.decide();
    if (d) this.decision = d;
    return d;
  }

  /** Whether only REPLAYED answers came so far. */
  get onlyReplayed(): boolean {
    return this.seen.size === 0 && this.replayed.size > 0;
  }

  /** Decides at the deadline: TIMEOUT saying what was seen (or the decision made before). */
  expire(): Decision {
    if (this.decision) return this.decision;
    const need =
      this.op === "keygen" ? "identical successes from all of " + [...this.rules.nodes].sort().join(",") : `${signersOf(this.rules)} identical results`;
    const all = [...this.seen.keys(), ...this.replayed.keys()].sort();
    const reason =
      `no attested ${this.op} result before the deadline (need ${need}); ` + (all.length === 0 ? "no node answered" : "seen: " + this.describe(all));
    this.decision = this.fail("TIMEOUT", reason, all);
    return this.decision;
  }

  private nodes(): string[] {
    return [...this.seen.keys()].sort();
  }

  private decide(): Decision | undefined {
    const nodes = this.nodes();
    const errNodes: string[] = [];
    const groups = new Map<string, string[]>();
    for (const n of nodes) {
      const e = this.seen.get(n)!;
      if (e.res.result_type !== "success") {
        errNodes.push(n);
        continue;
      }
      const g = groups.get(e.key);
      if (g) g.push(n);
      else groups.set(e.key, [n]);
    }
    if (this.op === "keygen") {
      if (errNodes.length > 0) return this.attestedError(errNodes, nodes);
      if (groups.size > 1) {
        const parts = [...groups.values()].map((g) => g.join("+"));
        return this.fail("RESULT_MISMATCH", `committee members report different keygen results (${parts.join(" vs ")}): ${this.describe(nodes)}`, nodes);
      }
      const only = [...groups.values()][0];
      if (only && only.length === this.members.size) return this.success(only);
      return undefined;
    }
    const need = signersOf(this.rules);
    for (const g of groups.values()) if (g.length >= need) return this.success(g);
    if (errNodes.length >= need) return this.attestedError(errNodes, nodes);
    return undefined;
  }

  private success(attesters: string[]): Decision {
    return { result: { ...this.seen.get(attesters[0]!)!.res }, attestations: this.raws(attesters) };
  }

  private attestedError(errNodes: string[], named: string[]): Decision {
    const count = new Map<string, number>();
    for (const n of errNodes) {
      const c = this.seen.get(n)!.res.error_code ?? "";
      count.set(c, (count.get(c) ?? 0) + 1);
    }
    let code = "";
    let best = 0;
    for (const [c, k] of count) {
      // Map keeps insertion order: the first code is the lowest node's; ties keep it.
      if (k > best) {
        code = c;
        best = k;
      }
    }
    const by = errNodes.filter((n) => (this.seen.get(n)!.res.error_code ?? "") === code);
    const reason = `${code} reported by ${by.join(",")}: ${this.describe(named)}`;
    return { result: { ...this.seen.get(by[0]!)!.res }, attestations: this.raws(by), error: { code, reason, nodes: this.outcomes(named) } };
  }

  private fail(code: string, reason: string, nodes: string[]): Decision {
    const res: Result = {
      op: this.op,
      result_type: "error",
      error_code: code,
      error_reason: reason,
      is_timeout: code === "TIMEOUT",
      request_id: this.requestId,
      client_id: this.clientId,
      signature_recovery: 0,
    };
    if (this.keyId) res.key_id = this.keyId;
    if (nodes.length > 0) {
      const first = this.get(nodes[0]!)!.res;
      for (const k of ["wallet_id", "tx_id", "session_id", "key_type"] as const) if (first[k]) res[k] = first[k];
    }
    return { result: res, attestations: this.raws(nodes), error: { code, reason, nodes: this.outcomes(nodes) } };
  }

  private get(n: string): Entry | undefined {
    return this.seen.get(n) ?? this.replayed.get(n);
  }

  private raws(nodes: string[]): Uint8Array[] {
    return nodes.map((n) => this.get(n)!.raw.slice());
  }

  private outcomes(nodes: string[]): Record<string, string> {
    const out: Record<string, string> = {};
    for (const n of nodes) out[n] = summary(this.get(n)!);
    return out;
  }

  private describe(nodes: string[]): string {
    return nodes.map((n) => `${n}: ${summary(this.get(n)!)}`).join("; ");
  }
}

function summary(e: Entry): string {
  const r = e.res;
  if (r.result_type !== "success") {
    let reason = r.error_reason ?? "";
    if (reason.length > MAX_REASON) reason = reason.slice(0, MAX_REASON) + "...";
    return `error ${r.error_code ?? ""} (${JSON.stringify(reason)})`;
  }
  let s = "success";
  for (const k of ["ecdsa_pub_key", "eddsa_pub_key", "pub_key", "signature"] as const) if (r[k]) s += ` ${k}=${r[k]}`;
  if (r.new_threshold) s += ` new_threshold=${r.new_threshold}`;
  const sum = createHash("sha256").update(utf8(e.key)).digest("hex").slice(0, 12);
  return `${s} (result ${sum})`;
}
