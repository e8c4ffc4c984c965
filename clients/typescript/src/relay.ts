// signer-relay client: submit signed requests over HTTP, receive the
// relay's decisions by Server-Sent Events (resume with Last-Event-ID) or
// long polling, each re-verified against the node keys (§7.3).

import { Decision, Rules, signersOf } from "./attest.js";
import { equalBytes, fromHex, toHex } from "./bytes.js";
import { HwSignerError, ResultError, VerifyError } from "./errors.js";
import { chainCode, derive } from "./hd.js";
import { keyId, keySigner, PublicKeyInput, RequestSigner } from "./keys.js";
import {
  buildRequest, DEFAULT_REQUEST_TTL_MS, KeygenParams, newRequestId, normalizePath, Op, ReshareParams, SignParams, signRequest,
} from "./request.js";
import { NodeKeys, nodeKeysFrom, Result, verifySignResult, verifySignature } from "./result.js";
import { verifyDelivery } from "./delivery.js";
import { parseObject, toPlain } from "./canonical.js";



/** An HTTP error answer of the relay ({"error_code","error_reason"}). */
export class RelayError extends HwSignerError {
  constructor(readonly status: number, code: string, readonly reason: string) {
    super(code, `signer-relay: ${status} ${code}: ${reason}`);
  }
}

export interface RelayClientOptions {
  /** e.g. "https://relay:8443" */
  baseUrl: string;
  /** The bearer token of clientId. */
  token: string;
  signer: RequestSigner | string;
  clientId: string;
  nodeKeys: Record<string, PublicKeyInput>;
  signers?: number;
  requestTtlMs?: number;
}

export interface RelayEvent {
  /** The history cursor (SSE id): resume after it. */
  cursor: string;
  decision: Decision;
}

const PATHS: Record<Op, string> = { keygen: "/v1/wallets", sign: "/v1/sign", reshare: "/v1/reshare" };

export class RelayClient {
  readonly clientId: string;
  readonly keyId: string;
  private readonly base: string;
  private readonly token: string;
  private readonly signer: RequestSigner;
  private readonly nodeKeys: NodeKeys;
  private readonly rules: Rules;
  private readonly ttl: number;
  /** Deliveries that failed verification (dropped). */
  rejected = 0;

  constructor(o: RelayClientOptions) {
    this.base = o.baseUrl.replace(/\/+$/, "");
    this.token = o.token;
    this.signer = typeof o.signer === "string" ? keySigner(o.signer) : o.signer;
    this.keyId = keyId(this.signer.publicKeySpki);
    this.clientId = o.clientId;
    this.nodeKeys = nodeKeysFrom(o.nodeKeys);
    const nodes = Object.keys(this.nodeKeys).sort();
    this.rules = { nodes, signers: o.signers ?? signersOf({ nodes }) };
    this.ttl = o.requestTtlMs ?? DEFAULT_REQUEST_TTL_MS;
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { authorization: `Bearer ${this.token}`, ...extra };
  }

  /** Signs and posts a request; resolves with its request_id after the relay's 202. */
  async submit(op: Op, p: KeygenParams | SignParams | ReshareParams): Promise<string> {
    const now = Date.now();
    const requestId = p.requestId ?? newRequestId();
    const members = buildRequest(op, { clientId: this.clientId, keyId: this.keyId, requestId, createdAt: now, expiresAt: now + this.ttl }, p);
    const raw = await signRequest(this.signer, members);
    const res = await fetch(this.base + PATHS[op], { method: "POST", headers: this.headers({ "content-type": "application/json" }), body: raw });
    const text = await res.text();
    if (res.status !== 202) {
      let code = "HTTP_" + res.status;
      let reason = text.slice(0, 300);
      try {
        const e = JSON.parse(text) as { error_code?: string; error_reason?: string };
        code = e.error_code ?? code;
        reason = e.error_reason ?? reason;
      } catch {
        /* not JSON */
      }
      throw new RelayError(res.status, code, reason);
    }
    return requestId;
  }

  createWallet(walletId: string, opts: Omit<KeygenParams, "walletId"> = {}): Promise<string> {
    return this.submit("keygen", { ...opts, walletId });
  }
  sign(p: SignParams): Promise<string> {
    return this.submit("sign", p);
  }
  reshare(p: ReshareParams): Promise<string> {
    return this.submit("reshare", p);
  }

  private verify(data: string): Decision | undefined {
    try {
      return verifyDelivery(data, { nodeKeys: this.nodeKeys, rules: this.rules, clientId: this.clientId });
    } catch {
      this.rejected++;
      return undefined;
    }
  }

  /**
   * Server-Sent Events from GET /v1/events: every verified decision after
   * lastEventId (a cursor; none: from the start of the history). Stop with
   * the signal or by breaking out of the loop.
   */
  async *events(opts: { lastEventId?: string; signal?: AbortSignal } = {}): AsyncGenerator<RelayEvent> {
    const ctl = new AbortController();
    const stop = () => ctl.abort();
    opts.signal?.addEventListener("abort", stop, { once: true });
    try {
      const h = this.headers({ accept: "text/event-stream" });
      if (opts.lastEventId) h["last-event-id"] = opts.lastEventId;
      const res = await fetch(this.base + "/v1/events", { headers: h, signal: ctl.signal });
      if (res.status !== 200 || !res.body) {
        const t = await res.text();
        throw new RelayError(res.status, "HTTP_" + res.status, t.slice(0, 300));
      }
      const dec = new TextDecoder();
      let buf = "";
      let id = "";
      let data: string[] = [];
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += dec.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
          if (line === "") {
            if (data.length > 0) {
              const d = this.verify(data.join("\n"));
              if (d) yield { cursor: id, decision: d };
            }
            data = [];
            continue;
          }
          if (line.startsWith(":")) continue;
          const c = line.indexOf(":");
          const field = c < 0 ? line : line.slice(0, c);
          let value = c < 0 ? "" : line.slice(c + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "id") id = value;
          else if (field === "data") data.push(value);
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
      throw e;
    } finally {
      opts.signal?.removeEventListener("abort", stop);
      ctl.abort();
    }
  }

  /** One long poll of GET /v1/results: verified decisions after `after`, and the cursor to poll after next. */
  async poll(opts: { after?: string; waitSec?: number; limit?: number; signal?: AbortSignal } = {}): Promise<{ events: RelayEvent[]; nextCursor: string }> {
    const q = new URLSearchParams();
    if (opts.after) q.set("after", opts.after);
    if (opts.waitSec !== undefined) q.set("wait", `${opts.waitSec}s`);
    if (opts.limit !== undefined) q.set("limit", String(opts.limit));
    const res = await fetch(`${this.base}/v1/results?${q}`, { headers: this.headers(), signal: opts.signal });
    const text = await res.text();
    if (res.status !== 200) throw new RelayError(res.status, "HTTP_" + res.status, text.slice(0, 300));
    const body = parseObject(text);
    const items = Array.isArray(body.results) ? body.results : [];
    const events: RelayEvent[] = [];
    for (const it of items) {
      if (it === null || typeof it !== "object" || Array.isArray(it)) continue;
      const item = toPlain(it) as Record<string, unknown>;
      const cursor = String(item.cursor);
      delete item.cursor; // a long-poll item is a delivery with its cursor added
      const d = this.verify(JSON.stringify(item));
      if (d) events.push({ cursor, decision: d });
    }
    const next = toPlain(body) as { next_cursor?: number };
    return { events, nextCursor: next.next_cursor !== undefined ? String(next.next_cursor) : opts.after ?? "0" };
  }

  /**
   * Waits for the decision of one request of ours, by SSE or long polling,
   * and checks it as the NATS client does (wallet, tx_id, signature over
   * tx, HD child key when walletPublicKey is given).
   */
  async waitFor(
    op: Op,
    requestId: string,
    p: KeygenParams | SignParams | ReshareParams,
    opts: { via?: "sse" | "poll"; after?: string; timeoutMs?: number; walletPublicKey?: Uint8Array | string } = {},
  ): Promise<Result> {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), opts.timeoutMs ?? this.ttl);
    const mine = (d: Decision) => d.result.op === op && d.result.request_id === requestId && (d.result.key_id ?? "") === this.keyId;
    let found: Decision | undefined;
    try {
      if ((opts.via ?? "sse") === "sse") {
        for await (const ev of this.events({ lastEventId: opts.after, signal: ctl.signal })) {
          if (mine(ev.decision)) {
            found = ev.decision;
            break;
          }
        }
      } else {
        let after = opts.after;
        while (!found && !ctl.signal.aborted) {
          const { events, nextCursor } = await this.poll({ after, waitSec: 20, signal: ctl.signal }).catch((e) => {
            if (ctl.signal.aborted) return { events: [], nextCursor: after ?? "0" };
            throw e;
          });
          found = events.find((e) => mine(e.decision))?.decision;
          after = nextCursor;
        }
      }
    } finally {
      clearTimeout(timer);
      ctl.abort();
    }
    if (!found) throw new ResultError(requestId, "TIMEOUT", "no attested decision from the relay before the deadline");
    if (found.error) throw new ResultError(requestId, found.error.code, found.error.reason, found.error.nodes);
    const res = found.result;
    try {
      if (res.wallet_id !== p.walletId) throw new VerifyError("wallet_id does not match the request");
      if (op === "sign") {
        const s = p as SignParams;
        if (res.tx_id !== s.txId || res.key_type !== s.keyType) throw new VerifyError("tx_id/key_type do not match the request");
        verifySignature(res, s.tx);
        if (opts.walletPublicKey !== undefined) {
          const pub = typeof opts.walletPublicKey === "string" ? fromHex(opts.walletPublicKey) : opts.walletPublicKey;
          const child = derive(s.keyType, pub, chainCode(s.keyType, pub), normalizePath(s.derivationPath)).pubKey;
          if (!equalBytes(child, fromHex(res.pub_key ?? ""))) throw new VerifyError(`pub_key is not the derived key ${toHex(child)}`);
          verifySignResult(res, child, s.tx);
        }
      }
    } catch (e) {
      throw new ResultError(requestId, "RESULT_MISMATCH", (e as Error).message);
    }
    return res;
  }
}

