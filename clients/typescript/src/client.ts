// The NATS JetStream client: signed requests in, attested results out, with
// the Go client's subjects, durable consumers and attestation rules
// (client/*.go).

import type { NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { Consumer, ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from "@nats-io/jetstream";
import { Collector, Decision, Rules, signersOf } from "./attest.js";
import { equalBytes, fromHex, toHex } from "./bytes.js";
import { ClosedError, HwSignerError, ResultError, ValidationError, VerifyError } from "./errors.js";
import { derive, chainCode, walletKey } from "./hd.js";
import { keyId, PublicKeyInput, RequestSigner, keySigner } from "./keys.js";
import {
  buildRequest, DEFAULT_REQUEST_TTL_MS, isValidToken, KeygenParams, KeyType, MAX_REQUEST_TTL_MS, newRequestId, normalizePath,
  Op, ReshareParams, SignParams, signRequest,
} from "./request.js";
import { NodeKeys, nodeKeysFrom, Result, verifyResult, verifySignResult, verifySignature } from "./result.js";
import { REQUEST_STREAM, RESULT_STREAM, requestMsgId, requestSubject, resultConsumerName, resultFilterSubject } from "./routing.js";

export const DEFAULT_RESULT_ACK_WAIT_MS = 30_000;
const UNCLAIMED_DELAY_MS = 1000;
const MAX_UNCLAIMED_DELAY_MS = 30_000;
const MIN_DECIDED_FOR_MS = 10 * 60_000;
const MAX_DECIDED = 1 << 16;
/** How long after a request's expires_at the client still waits for results before deciding TIMEOUT (the Go client's DefaultExpiryGrace). */
export const DEFAULT_EXPIRY_GRACE_MS = 10_000;
/** At most this many requests may be sent and undecided at once (the Go client's MaxPendingRequests). */
export const MAX_PENDING_REQUESTS = 65_536;

export interface Logger {
  debug?(msg: string, fields?: Record<string, unknown>): void;
  info?(msg: string, fields?: Record<string, unknown>): void;
  warn?(msg: string, fields?: Record<string, unknown>): void;
  error?(msg: string, fields?: Record<string, unknown>): void;
}

export interface ClientOptions {
  /** A connected NATS connection (the client never closes it). */
  nc: NatsConnection;
  /** Request-signing key: a RequestSigner (keySigner, callbackSigner) or a PEM private key. */
  signer: RequestSigner | string;
  /** The client's own result subjects and consumers; omit for the legacy subjects. */
  clientId?: string;
  /** The cluster's peer list: node id -> identity public key (P-256; PEM, base64 DER or KeyObject). Required. */
  nodeKeys: Record<string, PublicKeyInput>;
  /** t+1 (signerd's threshold). Default: a majority of nodeKeys. */
  signers?: number;
  /**
   * expires_at - created_at. Default 5 minutes. A request this client sent
   * is decided TIMEOUT at its expires_at plus expiryGraceMs when nothing was
   * attested (also when no node answered); a request another process of the
   * client sent, this long after its first result.
   */
  requestTtlMs?: number;
  /** How long after expires_at results are still awaited (default 10 s, at most an hour). */
  expiryGraceMs?: number;
  /** AckWait of the result consumers (default 30 s). */
  resultAckWaitMs?: number;
  logger?: Logger;
}

export interface WaitOptions {
  /**
   * Deadline of the wait (default and at most: the request's expires_at plus
   * the grace). At the deadline an undecided request is TIMEOUT, and decided
   * for this client: later results are acked as stragglers, no callback sees it.
   */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface SignWaitOptions extends WaitOptions {
  /**
   * The wallet's public key of this key type (hex or bytes). The result's
   * pub_key must then equal the child key derived locally along the
   * request's derivation_path, and the signature must verify under it.
   * Default: the key from a keygen this client attested, if any.
   */
  walletPublicKey?: Uint8Array | string;
}

/** A callback's view of a decision: the attested result, the evidence, and an error unless a success. */
export type DecisionHandler = (d: Decision) => void | Promise<void>;

export interface Stats {
  delivered: number;
  dropped: number;
  misrouted: number;
  unclaimed: number;
  stragglers: number;
}

interface ReqKey {
  op: Op;
  requestId: string;
  keyId: string;
}
const keyOf = (k: ReqKey) => `${k.op}\u0000${k.requestId}\u0000${k.keyId}`;

interface Waiter {
  op: Op;
  resolve: (d: Decision) => void;
  p: Pending;
}

interface Pending {
  key: ReqKey;
  coll: Collector;
  msgs: Map<number, JsMsg>;
  w?: Waiter;
  since: number;
  real: boolean;
}

/**
 * Client submits signed requests over NATS JetStream and receives attested
 * results from its own durable consumers (mpc_<op>_result_<clientId>).
 */
export class Client {
  readonly clientId: string;
  readonly keyId: string;
  private readonly nc: NatsConnection;
  private readonly js: JetStreamClient;
  private jsm?: Promise<JetStreamManager>;
  private readonly signer: RequestSigner;
  private readonly nodeKeys: NodeKeys;
  private readonly rules: Required<Rules>;
  private readonly ttl: number;
  private readonly grace: number;
  /** Requests this client sent and has not seen decided: key -> when they are decided TIMEOUT. */
  private readonly submitted = new Map<string, { key: ReqKey; deadline: number }>();
  private readonly ackWait: number;
  private readonly log: Logger;
  private closed = false;
  private readonly handlers = new Map<Op, DecisionHandler>();
  private readonly waiters = new Map<string, Waiter>();
  private readonly pending = new Map<string, Pending>();
  private readonly decided = new Map<string, number>();
  private readonly running = new Map<Op, ConsumerMessages>();
  private readonly starting = new Map<Op, Promise<void>>();
  private readonly loops: Promise<void>[] = [];
  private readonly cbChain = new Map<Op, Promise<void>>();
  private keeper?: NodeJS.Timeout;
  private lastWorking = 0;
  private readonly wallets = new Map<string, Result>(); // wallet_id -> attested keygen success
  private readonly counters: Stats = { delivered: 0, dropped: 0, misrouted: 0, unclaimed: 0, stragglers: 0 };

  constructor(opts: ClientOptions) {
    if (!opts || !opts.nc) throw new HwSignerError("CONFIG", "client: no NATS connection");
    if (!opts.signer) throw new HwSignerError("CONFIG", "client: no signer");
    this.nc = opts.nc;
    this.signer = typeof opts.signer === "string" ? keySigner(opts.signer) : opts.signer;
    this.keyId = keyId(this.signer.publicKeySpki);
    this.clientId = opts.clientId ?? "";
    if (this.clientId !== "" && !isValidToken(this.clientId)) throw new ValidationError("client_id", "not 1-64 characters of [A-Za-z0-9_-]");
    if (!opts.nodeKeys || Object.keys(opts.nodeKeys).length === 0) throw new HwSignerError("CONFIG", "client: no node keys; results could not be told from forgeries");
    this.nodeKeys = nodeKeysFrom(opts.nodeKeys);
    const nodes = Object.keys(this.nodeKeys).sort();
    if (opts.signers !== undefined && (!Number.isInteger(opts.signers) || opts.signers < 1 || opts.signers > nodes.length)) {
      throw new HwSignerError("CONFIG", `client: signers ${opts.signers}, want 1..${nodes.length}`);
    }
    this.rules = { nodes, signers: opts.signers ?? signersOf({ nodes }) };
    this.ttl = opts.requestTtlMs ?? DEFAULT_REQUEST_TTL_MS;
    if (!(this.ttl > 0 && this.ttl <= MAX_REQUEST_TTL_MS)) throw new HwSignerError("CONFIG", `client: request TTL ${this.ttl} ms out of range`);
    this.grace = opts.expiryGraceMs ?? DEFAULT_EXPIRY_GRACE_MS;
    if (!(this.grace >= 0 && this.grace <= 3_600_000)) throw new HwSignerError("CONFIG", `client: expiry grace ${this.grace} ms out of range`);
    this.ackWait = opts.resultAckWaitMs ?? DEFAULT_RESULT_ACK_WAIT_MS;
    if (this.ackWait < 1000) throw new HwSignerError("CONFIG", "client: result ack wait below 1 s");
    this.log = opts.logger ?? {};
    this.js = jetstream(this.nc);
  }

  /** What the client requires the committee to attest. */
  get attestRules(): Rules {
    return { nodes: [...this.rules.nodes], signers: this.rules.signers };
  }

  stats(): Stats {
    return { ...this.counters };
  }

  // ---- requests -------------------------------------------------------

  /** Submits a keygen request; resolves with its request_id once JetStream stored it. */
  createWallet(walletId: string, opts: Omit<KeygenParams, "walletId"> = {}): Promise<string> {
    return this.send("keygen", { ...opts, walletId });
  }

  /** Submits a signing request; resolves with its request_id once JetStream stored it. */
  sign(p: SignParams): Promise<string> {
    return this.send("sign", p);
  }

  /** Submits a resharing request; resolves with its request_id once JetStream stored it. */
  reshare(p: ReshareParams): Promise<string> {
    return this.send("reshare", p);
  }

  /** Keygen and wait: the public keys every node reported identically. */
  async createWalletAndWait(walletId: string, opts: Omit<KeygenParams, "walletId"> & WaitOptions = {}): Promise<Result> {
    const res = await this.submitAndWait("keygen", { ...opts, walletId }, opts);
    this.wallets.set(walletId, res);
    return res;
  }

  /**
   * Sign and wait: t+1 identical successes whose signature verifies over
   * p.tx under pub_key; with a known wallet key also pub_key equal to the
   * locally derived child key of p.derivationPath.
   */
  signAndWait(p: SignParams, opts: SignWaitOptions = {}): Promise<Result> {
    return this.submitAndWait("sign", p, opts);
  }

  /** Reshare and wait: t+1 identical successes. */
  reshareAndWait(p: ReshareParams, opts: WaitOptions = {}): Promise<Result> {
    return this.submitAndWait("reshare", p, opts);
  }

  /** Remembers a wallet's attested keygen result (signAndWait then checks child keys against it). */
  rememberWallet(res: Result): void {
    if (res.op === "keygen" && res.result_type === "success" && res.wallet_id) this.wallets.set(res.wallet_id, res);
  }

  private prepare(op: Op, p: KeygenParams | SignParams | ReshareParams) {
    const now = Date.now();
    const requestId = p.requestId ?? newRequestId();
    const members = buildRequest(op, { clientId: this.clientId, keyId: this.keyId, requestId, createdAt: now, expiresAt: now + this.ttl }, p);
    return { requestId, members };
  }

  private async send(op: Op, p: KeygenParams | SignParams | ReshareParams): Promise<string> {
    const { requestId, members } = this.prepare(op, p); // throws ValidationError before anything is sent
    const k = this.track(op, requestId, members.expires_at as number);
    try {
      await this.publish(op, requestId, members);
    } catch (e) {
      this.submitted.delete(k); // not published: the caller has the error
      throw e;
    }
    return requestId;
  }

  /** Tracks a request this client sends: its callback gets a decision by expires_at plus the grace. */
  private track(op: Op, requestId: string, expiresAt: number): string {
    if (this.closed) throw new ClosedError();
    const key = { op, requestId, keyId: this.keyId };
    const k = keyOf(key);
    if (!this.submitted.has(k) && this.submitted.size >= MAX_PENDING_REQUESTS) {
      throw new HwSignerError("TOO_MANY_PENDING", `client: ${MAX_PENDING_REQUESTS} requests sent and undecided; nothing was sent`);
    }
    this.decided.delete(k);
    this.submitted.set(k, { key, deadline: expiresAt + this.grace });
    this.startKeeper();
    return k;
  }

  private async publish(op: Op, requestId: string, members: Record<string, unknown>): Promise<void> {
    if (this.closed) throw new ClosedError();
    const subject = requestSubject(op, members.wallet_id as string);
    const raw = await signRequest(this.signer, members);
    const ack = await this.js.publish(subject, raw, {
      msgID: requestMsgId(this.clientId, requestId, raw),
      expect: { streamName: REQUEST_STREAM },
    });
    if (ack.duplicate) this.log.warn?.("these request bytes were already published; the first copy stands", { op, request_id: requestId });
    else this.log.debug?.("request published", { op, request_id: requestId, subject, seq: ack.seq });
  }

  private async submitAndWait(op: Op, p: KeygenParams | SignParams | ReshareParams, opts: SignWaitOptions): Promise<Result> {
    const { requestId, members } = this.prepare(op, p);
    await this.ensureConsumer(op);
    const w = this.addWaiter(op, requestId);
    const untilExpiry = (members.expires_at as number) + this.grace - Date.now();
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      const decided = new Promise<Decision>((resolve) => (w.resolve = resolve));
      const deadline = new Promise<"deadline">((resolve) => {
        timer = setTimeout(() => resolve("deadline"), Math.max(0, Math.min(opts.timeoutMs ?? untilExpiry, untilExpiry)));
        if (opts.signal) {
          onAbort = () => resolve("deadline");
          if (opts.signal.aborted) onAbort();
          opts.signal.addEventListener("abort", onAbort, { once: true });
        }
      });
      await this.publish(op, requestId, members);
      const got = await Promise.race([decided, deadline]);
      let d: Decision;
      if (got === "deadline") {
        const owned = this.giveUp(requestId, w);
        d = owned ?? (await decided);
      } else {
        d = got;
      }
      return this.waited(op, requestId, p, d, opts);
    } finally {
      if (timer) clearTimeout(timer);
      if (onAbort && opts.signal) opts.signal.removeEventListener("abort", onAbort);
      this.dropWaiter(requestId, w);
    }
  }

  private waited(op: Op, requestId: string, p: KeygenParams | SignParams | ReshareParams, d: Decision, opts: SignWaitOptions): Result {
    if (d.error?.code === "CLOSED") throw new ClosedError();
    if (d.error) throw new ResultError(requestId, d.error.code, d.error.reason, d.error.nodes);
    const res = d.result;
    try {
      if (res.wallet_id !== p.walletId) throw new VerifyError(`wallet_id ${JSON.stringify(res.wallet_id)}, want ${JSON.stringify(p.walletId)}`);
      if (op === "sign") {
        const s = p as SignParams;
        if (res.tx_id !== s.txId || res.key_type !== s.keyType) throw new VerifyError("tx_id/key_type do not match the request");
        verifySignature(res, s.tx);
        const wallet = opts.walletPublicKey ?? this.knownWalletKey(s.walletId, s.keyType);
        if (wallet !== undefined) {
          const pub = typeof wallet === "string" ? fromHex(wallet) : wallet;
          const child = derive(s.keyType, pub, chainCode(s.keyType, pub), normalizePath(s.derivationPath)).pubKey;
          if (!equalBytes(child, fromHex(res.pub_key ?? ""))) {
            throw new VerifyError(`pub_key ${res.pub_key} is not the locally derived key ${toHex(child)} of the wallet at this path`);
          }
          verifySignResult(res, child, s.tx);
        }
      } else if (op === "reshare") {
        const r = p as ReshareParams;
        if (res.key_type !== r.keyType || res.session_id !== r.sessionId) throw new VerifyError("key_type/session_id do not match the request");
      }
    } catch (e) {
      const reason = `the attested success (${d.attestations.length} nodes) does not fit the request: ${(e as Error).message}`;
      this.log.error?.("refusing an attested result that does not fit the request", { op, request_id: requestId, err: (e as Error).message });
      throw new ResultError(requestId, "RESULT_MISMATCH", reason);
    }
    return res;
  }

  private knownWalletKey(walletId: string, kt: KeyType): Uint8Array | undefined {
    const w = this.wallets.get(walletId);
    if (!w) return undefined;
    try {
      return walletKey(w, kt);
    } catch {
      return undefined;
    }
  }

  // ---- callbacks ------------------------------------------------------

  /** Keygen decisions without a waiter (replaces any earlier handler); starts the keygen consumer. */
  onWalletCreationResult(f: DecisionHandler): Promise<void> {
    return this.on("keygen", f);
  }

  /** Signing decisions without a waiter; the signature is not checked over the tx (the client does not know it): use verifySignature. */
  onSignResult(f: DecisionHandler): Promise<void> {
    return this.on("sign", f);
  }

  /** Resharing decisions without a waiter. */
  onReshareResult(f: DecisionHandler): Promise<void> {
    return this.on("reshare", f);
  }

  private async on(op: Op, f: DecisionHandler): Promise<void> {
    if (this.closed) throw new ClosedError();
    this.handlers.set(op, f);
    await this.ensureConsumer(op);
  }

  // ---- consumers ------------------------------------------------------

  private manager(): Promise<JetStreamManager> {
    this.jsm ??= jetstreamManager(this.nc);
    return this.jsm;
  }

  private ensureConsumer(op: Op): Promise<void> {
    if (this.closed) return Promise.reject(new ClosedError());
    let s = this.starting.get(op);
    if (!s) {
      s = this.startConsumer(op);
      this.starting.set(op, s);
      s.catch(() => this.starting.delete(op));
    }
    return s;
  }

  private async startConsumer(op: Op): Promise<void> {
    const name = resultConsumerName(op, this.clientId);
    const cfg = {
      durable_name: name,
      description: `${op} results for ${this.clientId === "" ? "legacy clients" : "client " + this.clientId}`,
      filter_subject: resultFilterSubject(op, this.clientId),
      deliver_policy: DeliverPolicy.All,
      ack_policy: AckPolicy.Explicit,
      ack_wait: this.ackWait * 1_000_000,
      max_ack_pending: 256,
    };
    const jsm = await this.manager();
    try {
      await jsm.consumers.add(RESULT_STREAM, cfg);
    } catch {
      // It exists with another configuration (as CreateOrUpdateConsumer): update it.
      const { durable_name: _d, deliver_policy: _p, ...update } = cfg;
      await jsm.consumers.update(RESULT_STREAM, name, update);
    }
    const cons: Consumer = await this.js.consumers.get(RESULT_STREAM, name);
    const msgs = await cons.consume({ max_messages: 256 });
    if (this.closed) {
      await msgs.close();
      throw new ClosedError();
    }
    this.running.set(op, msgs);
    this.loops.push(
      (async () => {
        for await (const m of msgs) this.handle(op, m);
      })().catch((e) => this.log.warn?.("result consumer stopped", { op, err: String(e) })),
    );
    this.startKeeper();
  }

  /** Starts the keeper: every 250 ms it decides what is due; in-progress acks for held results every half ack wait. */
  private startKeeper(): void {
    if (!this.keeper) {
      this.keeper = setInterval(() => this.keep(), 250);
      this.keeper.unref();
    }
  }

  private addWaiter(op: Op, requestId: string): Waiter {
    if (this.closed) throw new ClosedError();
    if (this.waiters.has(requestId)) throw new HwSignerError("PENDING_REQUEST_ID", `a request with request_id ${requestId} is already being waited for`);
    const key = { op, requestId, keyId: this.keyId };
    let p = this.pending.get(keyOf(key));
    if (!p) {
      p = this.newPending(key);
      this.pending.set(keyOf(key), p);
    }
    this.decided.delete(keyOf(key));
    const w: Waiter = { op, resolve: () => {}, p };
    p.w = w;
    this.waiters.set(requestId, w);
    return w;
  }

  /**
   * Ends a waiter at its deadline: an undecided request is decided TIMEOUT
   * for this client (its held results acked, later ones stragglers, no
   * callback ever sees it); undefined when it was decided just now.
   */
  private giveUp(requestId: string, w: Waiter): Decision | undefined {
    if (this.waiters.get(requestId) === w) this.waiters.delete(requestId);
    const k = keyOf(w.p.key);
    if (this.pending.get(k) !== w.p) return undefined;
    this.take(w.p);
    this.counters.stragglers += w.p.msgs.size;
    for (const m of w.p.msgs.values()) m.ack();
    return w.p.coll.expire();
  }

  /** Removes a waiter; when its request is undecided returns Expire's TIMEOUT and returns its messages to the stream. */
  private dropWaiter(requestId: string, w: Waiter): Decision | undefined {
    if (this.waiters.get(requestId) === w) this.waiters.delete(requestId);
    const k = keyOf(w.p.key);
    if (this.pending.get(k) !== w.p) return undefined;
    this.pending.delete(k);
    for (const m of w.p.msgs.values()) m.nak(UNCLAIMED_DELAY_MS);
    return w.p.coll.expire();
  }

  private newPending(key: ReqKey): Pending {
    return { key, coll: new Collector(key.op, this.rules), msgs: new Map(), since: Date.now(), real: false };
  }

  private take(p: Pending): void {
    const k = keyOf(p.key);
    this.pending.delete(k);
    this.submitted.delete(k);
    if (p.w && this.waiters.get(p.key.requestId) === p.w) this.waiters.delete(p.key.requestId);
    this.decided.set(k, Date.now());
    if (this.decided.size > MAX_DECIDED) this.decided.delete(this.decided.keys().next().value!);
  }

  private handle(op: Op, m: JsMsg): void {
    if (this.closed) {
      m.nak();
      return;
    }
    let res: Result;
    try {
      res = verifyResult(m.data, this.nodeKeys);
    } catch (e) {
      this.counters.dropped++;
      this.log.warn?.("dropping a result that fails verification", { op, subject: m.subject, err: (e as Error).message });
      m.term("result verification failed");
      return;
    }
    if (res.client_id !== this.clientId || res.op !== op) {
      this.counters.misrouted++;
      this.log.error?.("dropping a result meant for another client or operation", { op, result_op: res.op, result_client_id: res.client_id, request_id: res.request_id });
      m.term("misrouted result");
      return;
    }
    if ((res.key_id ?? "") !== this.keyId) {
      this.counters.misrouted++;
      this.log.warn?.("dropping a result for another client key", { op, result_key_id: res.key_id, request_id: res.request_id, error_code: res.error_code });
      m.term("result for another client key");
      return;
    }
    const key = { op, requestId: res.request_id, keyId: this.keyId };
    const k = keyOf(key);
    if (this.decided.has(k)) {
      this.counters.stragglers++;
      m.ack();
      return;
    }
    let p = this.pending.get(k);
    if (!p) {
      if (!this.handlers.get(op)) {
        this.counters.unclaimed++;
        m.nak(Math.min(m.info.deliveryCount * UNCLAIMED_DELAY_MS, MAX_UNCLAIMED_DELAY_MS));
        return;
      }
      p = this.newPending(key);
      this.pending.set(k, p);
    }
    const seq = m.seq;
    if (p.msgs.has(seq)) {
      p.msgs.set(seq, m);
      return;
    }
    p.msgs.set(seq, m);
    p.real ||= res.error_code !== "REPLAYED";
    const d = p.coll.add(res, m.data);
    if (!d) return;
    this.take(p);
    this.finish(p, d);
  }

  private finish(p: Pending, d: Decision): void {
    if (!d.result.request_id) d.result.request_id = p.key.requestId;
    if (!p.w) {
      this.runCallback(p, d);
      return;
    }
    for (const m of p.msgs.values()) m.ack();
    this.counters.delivered++;
    p.w.resolve(d);
  }

  /** Runs op's handler (one at a time per op); acks after it returns, returns the messages to the stream if it throws. */
  private runCallback(p: Pending, d: Decision): void {
    const prev = this.cbChain.get(p.key.op) ?? Promise.resolve();
    const next = prev.then(async () => {
      const f = this.handlers.get(p.key.op);
      const tick = setInterval(() => p.msgs.forEach((m) => m.working()), this.ackWait / 2);
      try {
        if (!f) throw new Error("no handler");
        await f(d);
        this.counters.delivered++;
        for (const m of p.msgs.values()) m.ack();
      } catch (e) {
        this.log.error?.("result callback failed; the result will be redelivered", { op: p.key.op, request_id: p.key.requestId, err: String(e) });
        this.decided.delete(keyOf(p.key));
        for (const m of p.msgs.values()) m.nak(UNCLAIMED_DELAY_MS);
      } finally {
        clearInterval(tick);
      }
    });
    this.cbChain.set(p.key.op, next);
  }

  /**
   * TIMEOUT for callback requests undecided by their deadline (a request
   * this client sent: its expires_at plus the grace, also when no node
   * answered; another's: the TTL after its first result); in-progress acks
   * for held messages; forget old decisions.
   */
  private keep(): void {
    if (this.closed) return;
    const now = Date.now();
    const work = now - this.lastWorking >= Math.max(500, this.ackWait / 2);
    if (work) this.lastWorking = now;
    for (const p of [...this.pending.values()]) {
      const sub = this.submitted.get(keyOf(p.key));
      if (!p.w && (sub ? now >= sub.deadline : now - p.since >= this.ttl)) {
        this.take(p);
        if (!p.real) {
          this.counters.stragglers += p.msgs.size;
          for (const m of p.msgs.values()) m.ack();
          continue;
        }
        const d = p.coll.expire();
        this.log.warn?.("request undecided after the hold; delivering TIMEOUT", { op: p.key.op, request_id: p.key.requestId });
        this.finish(p, d);
        continue;
      }
      if (work) for (const m of p.msgs.values()) m.working();
    }
    // Requests this client sent that no node answered by their deadline.
    for (const [k, sub] of [...this.submitted]) {
      if (now < sub.deadline || this.pending.has(k) || this.waiters.has(sub.key.requestId)) continue;
      if (!this.handlers.get(sub.key.op)) {
        this.submitted.delete(k); // no callback to decide it for
        continue;
      }
      const p = this.newPending(sub.key);
      p.real = true;
      this.take(p);
      const d = p.coll.expire();
      this.log.warn?.("request undecided after the hold; delivering TIMEOUT", { op: sub.key.op, request_id: sub.key.requestId });
      this.finish(p, d);
    }
    const keepFor = Math.max(MIN_DECIDED_FOR_MS, 2 * this.ttl);
    for (const [k, at] of this.decided) {
      if (now - at < keepFor) break;
      this.decided.delete(k);
    }
  }

  /** Stops the consumers, waits for running callbacks; undecided results go back to the stream. The NATS connection stays open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.keeper) clearInterval(this.keeper);
    await Promise.allSettled([...this.starting.values()]);
    for (const msgs of this.running.values()) await msgs.close().catch(() => undefined);
    await Promise.allSettled(this.loops);
    await Promise.allSettled([...this.cbChain.values()]);
    for (const p of this.pending.values()) for (const m of p.msgs.values()) m.nak();
    this.pending.clear();
    this.submitted.clear();
    for (const w of this.waiters.values()) w.resolve({ result: w.p.coll.expire().result, attestations: [], error: { code: "CLOSED", reason: "client closed", nodes: {} } });
    this.waiters.clear();
  }
}


