// Standard Webhooks (https://www.standardwebhooks.com/) verification of
// signer-relay deliveries, and a tiny adapter for Express/Fastify-style
// handlers (no framework dependency).

import { createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Decision } from "./attest.js";
import { HwSignerError } from "./errors.js";
import { verifyDelivery, VerifyDeliveryOptions } from "./delivery.js";

export class WebhookError extends HwSignerError {
  constructor(reason: string) {
    super("WEBHOOK_INVALID", `webhook: ${reason}`);
  }
}

export interface WebhookOptions extends VerifyDeliveryOptions {
  /** "whsec_<base64>" (the relay's webhook secret_source). */
  secret: string;
  /** Allowed clock difference in seconds (default 300). */
  toleranceSec?: number;
  /** Now in Unix seconds (tests). */
  now?: () => number;
}

export interface VerifiedWebhook {
  /** webhook-id: decision.<clientID>.<op>.<request_id>.<key_id>, the same on every retry: deduplicate on it. */
  id: string;
  timestamp: number;
  decision: Decision;
}

type Headers = Record<string, string | string[] | undefined> | { get(name: string): string | null };

function header(h: Headers, name: string): string | undefined {
  if (typeof (h as { get?: unknown }).get === "function") return (h as { get(n: string): string | null }).get(name) ?? undefined;
  const rec = h as Record<string, string | string[] | undefined>;
  const v = rec[name] ?? rec[Object.keys(rec).find((k) => k.toLowerCase() === name) ?? ""];
  return Array.isArray(v) ? v[0] : v;
}

function secretKey(secret: string): Buffer {
  if (!secret.startsWith("whsec_")) throw new WebhookError("secret must be whsec_<base64>");
  const key = Buffer.from(secret.slice(6), "base64");
  if (key.length < 24 || key.length > 64) throw new WebhookError("secret must be whsec_ and 24 to 64 bytes in base64");
  return key;
}

/** The webhook-signature of a body (what the relay sends): "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>". */
export function signWebhook(secret: string, id: string, timestamp: number, body: Uint8Array | string): string {
  const mac = createHmac("sha256", secretKey(secret)).update(`${id}.${timestamp}.`).update(body).digest("base64");
  return `v1,${mac}`;
}

/** Checks the Standard Webhooks signature and timestamp only (no attestation check). */
export function verifyWebhookSignature(secret: string, headers: Headers, rawBody: Uint8Array | string, toleranceSec = 300, nowSec = Date.now() / 1000): { id: string; timestamp: number } {
  const id = header(headers, "webhook-id");
  const ts = header(headers, "webhook-timestamp");
  const sigs = header(headers, "webhook-signature");
  if (!id || !ts || !sigs) throw new WebhookError("missing webhook-id, webhook-timestamp or webhook-signature");
  if (!/^[0-9]{1,12}$/.test(ts)) throw new WebhookError("bad webhook-timestamp");
  const timestamp = Number(ts);
  if (Math.abs(nowSec - timestamp) > toleranceSec) throw new WebhookError("webhook-timestamp outside the tolerance");
  const want = Buffer.from(signWebhook(secret, id, timestamp, rawBody).slice(3), "base64");
  for (const part of sigs.split(" ")) {
    const [v, b64] = part.split(",", 2);
    if (v !== "v1" || !b64) continue;
    const got = Buffer.from(b64, "base64");
    if (got.length === want.length && timingSafeEqual(got, want)) return { id, timestamp };
  }
  throw new WebhookError("no valid webhook-signature");
}

/**
 * Verifies an incoming webhook: the HMAC and timestamp (proves the relay
 * sent it), then the attestations against the node keys (proves the
 * committee decided it). Pass the RAW body bytes, not re-serialised JSON.
 */
export function verifyWebhook(headers: Headers, rawBody: Uint8Array | string, o: WebhookOptions): VerifiedWebhook {
  const { id, timestamp } = verifyWebhookSignature(o.secret, headers, rawBody, o.toleranceSec ?? 300, o.now ? o.now() : Date.now() / 1000);
  return { id, timestamp, decision: verifyDelivery(rawBody, o) };
}

type Req = IncomingMessage & { body?: unknown; rawBody?: unknown };
type Res = ServerResponse | { statusCode: number; end(b?: string): void; setHeader?(k: string, v: string): void };

async function rawBodyOf(req: Req): Promise<Buffer> {
  for (const b of [req.rawBody, req.body]) {
    if (Buffer.isBuffer(b)) return b;
    if (typeof b === "string") return Buffer.from(b);
  }
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks);
}

/**
 * A handler for node:http, Express (mount with express.raw({type: "application/json"})
 * or none) or Fastify (with the raw body): verifies, calls onDecision, and
 * answers 204; 400 for anything that does not verify (the relay retries and
 * dead-letters it), 500 if onDecision throws (the relay retries).
 */
export function webhookHandler(o: WebhookOptions, onDecision: (w: VerifiedWebhook) => void | Promise<void>) {
  return async (req: Req, res: Res): Promise<void> => {
    let w: VerifiedWebhook;
    try {
      w = verifyWebhook(req.headers, await rawBodyOf(req), o);
    } catch (e) {
      res.statusCode = 400;
      res.end(JSON.stringify({ error: (e as Error).message }));
      return;
    }
    try {
      await onDecision(w);
    } catch {
      res.statusCode = 500;
      res.end();
      return;
    }
    res.statusCode = 204;
    res.end();
  };
}
