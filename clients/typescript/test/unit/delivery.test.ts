// Relay deliveries (§7.2-7.3 of docs/canonical-encoding.md: its worked
// example, made by the Go relay tests' keys), Standard Webhooks signatures,
// callback signers and input validation.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as http from "node:http";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "../helpers.js";
import {
  verifyDelivery, nodeKeysFrom, verifySignature, fromBase64, verifyWebhook, verifyWebhookSignature, signWebhook, webhookHandler,
  callbackSigner, keySigner, signRequest, verifyRequest, buildRequest, keyId, ValidationError, parseDerivationPath,
} from "../../src/index.js";

function example(name: string): string {
  const md = readFileSync(join(repoRoot(), "docs", "canonical-encoding.md"), "utf8");
  const m = new RegExp(`<!-- example:${name} -->\\s*\`\`\`[a-z]*\\n([\\s\\S]*?)\`\`\``).exec(md);
  if (!m) throw new Error(`example ${name} not found`);
  return m[1]!;
}

function docNodeKeys() {
  const y = example("node-keys");
  const out: Record<string, string> = {};
  for (const m of y.matchAll(/(node\d): \|\n((?:\s+.*\n?)+?)(?=\s+node\d:|$)/g)) {
    out[m[1]!] = m[2]!.split("\n").map((l) => l.trim()).filter(Boolean).join("\n");
  }
  return nodeKeysFrom(out);
}

const rules = { nodes: ["node0", "node1", "node2"], signers: 2 };

test("the docs' delivery verifies, and its signature over the docs' tx", () => {
  const nodeKeys = docNodeKeys();
  assert.equal(Object.keys(nodeKeys).length, 3);
  const body = example("delivery");
  const d = verifyDelivery(body, { nodeKeys, rules, clientId: "svcA" });
  assert.equal(d.error, undefined);
  assert.equal(d.attestations.length, 2);
  assert.equal(d.result.wallet_id, "wallet-42");
  verifySignature(d.result, fromBase64("AAABAgME"));

  const obj = JSON.parse(body);
  const changed = structuredClone(obj);
  changed.result.wallet_id = "wallet-43";
  assert.throws(() => verifyDelivery(JSON.stringify(changed), { nodeKeys, rules }), /NOT_ATTESTED|not attested/);
  const fewer = structuredClone(obj);
  fewer.attestations.pop();
  assert.throws(() => verifyDelivery(JSON.stringify(fewer), { nodeKeys, rules }), /do not meet the rules/);
  const swapped = nodeKeysFrom({ node0: nodeKeys.node1!, node1: nodeKeys.node0!, node2: nodeKeys.node2! });
  assert.throws(() => verifyDelivery(body, { nodeKeys: swapped, rules }), /verification failed/);
  assert.throws(() => verifyDelivery(body, { nodeKeys, rules, clientId: "svcB" }), /not ours/);
});

test("Standard Webhooks signatures", () => {
  // The example of the Standard Webhooks specification's reference libraries.
  const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const body = '{"test": 2432232314}';
  const h = { "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330", "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" };
  assert.equal(signWebhook(secret, h["webhook-id"], 1614265330, body), h["webhook-signature"]);
  verifyWebhookSignature(secret, h, body, 300, 1614265330 + 10);
  assert.throws(() => verifyWebhookSignature(secret, h, body + " ", 300, 1614265330), /no valid webhook-signature/);
  assert.throws(() => verifyWebhookSignature(secret, h, body, 300, 1614265330 + 301), /tolerance/);
  assert.throws(() => verifyWebhookSignature(secret, { ...h, "webhook-signature": "v1,AAAA v2,x" }, body, 300, 1614265330), /no valid/);
});

test("webhook handler: verified decisions only", async () => {
  const nodeKeys = docNodeKeys();
  const secret = "whsec_" + crypto.randomBytes(32).toString("base64");
  const body = example("delivery");
  const got: string[] = [];
  const server = http.createServer(webhookHandler({ secret, nodeKeys, rules }, (w) => void got.push(w.id)));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  try {
    const post = async (b: string, sigBody = b) => {
      const ts = Math.floor(Date.now() / 1000);
      const id = "decision.svcA.sign.7f3c2a9e1b0d4c8f9a6e5d4c3b2a1908.06e3fd8fda29bb60ab59557de61edb0a";
      const res = await fetch(`http://127.0.0.1:${port}/hook`, {
        method: "POST",
        headers: { "content-type": "application/json", "webhook-id": id, "webhook-timestamp": String(ts), "webhook-signature": signWebhook(secret, id, ts, sigBody) },
        body: b,
      });
      return res.status;
    };
    assert.equal(await post(body), 204);
    assert.equal(await post(body.replace("wallet-42", "wallet-43")), 400); // HMAC over other bytes
    const forged = body.replace("wallet-42", "wallet-43");
    assert.equal(await post(forged, forged), 400); // HMAC fine, attestations do not match
    assert.equal(got.length, 1);
  } finally {
    server.close();
  }
  const ts = Math.floor(Date.now() / 1000);
  const w = verifyWebhook({ "webhook-id": "x", "webhook-timestamp": String(ts), "webhook-signature": signWebhook(secret, "x", ts, body) }, body, { secret, nodeKeys, rules });
  assert.equal(w.decision.result.request_id, "7f3c2a9e1b0d4c8f9a6e5d4c3b2a1908");
});

test("callback signers (a KMS): P-256 raw r||s and DER, Ed25519", async () => {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  const pem = publicKey.export({ type: "spki", format: "pem" }).toString();
  const members = buildRequest("keygen", { clientId: "svcA", keyId: keyId(pem), requestId: "r1", createdAt: 1, expiresAt: 2 }, { walletId: "w1" });
  for (const enc of ["ieee-p1363", "der"] as const) {
    const s = callbackSigner(pem, async ({ digest, data }) => {
      assert.deepEqual(digest, new Uint8Array(crypto.createHash("sha256").update(data).digest()));
      return new Uint8Array(crypto.sign("sha256", data, { key: privateKey, dsaEncoding: enc }));
    });
    verifyRequest(await signRequest(s, members), pem);
  }
  const ed = crypto.generateKeyPairSync("ed25519");
  const s = callbackSigner(ed.publicKey, async ({ data }) => new Uint8Array(crypto.sign(null, data, ed.privateKey)));
  const m2 = { ...members, key_id: keyId(ed.publicKey) };
  verifyRequest(await signRequest(s, m2), ed.publicKey);
  const wrong = callbackSigner(ed.publicKey, async ({ data }) => new Uint8Array(crypto.sign(null, data, crypto.generateKeyPairSync("ed25519").privateKey)));
  await assert.rejects(signRequest(wrong, m2), /does not verify/);
  assert.ok(keySigner(ed.privateKey.export({ type: "pkcs8", format: "pem" }).toString()).keyType === "ed25519");
});

test("bad input is refused with BAD_REQUEST before anything is built", () => {
  const env = { clientId: "svcA", keyId: "0".repeat(32), requestId: "r1", createdAt: 1, expiresAt: 2 };
  const bad = (f: () => unknown, field: string) =>
    assert.throws(f, (e: unknown) => e instanceof ValidationError && e.code === "BAD_REQUEST" && e.field.startsWith(field), field);
  bad(() => buildRequest("sign", env, { walletId: "bad wallet", keyType: "ed25519", txId: "t", tx: new Uint8Array(1) }), "wallet_id");
  bad(() => buildRequest("sign", env, { walletId: "w".repeat(65), keyType: "ed25519", txId: "t", tx: new Uint8Array(1) }), "wallet_id");
  bad(() => buildRequest("sign", env, { walletId: "w", keyType: "secp256k1", txId: "t", tx: new Uint8Array(31) }), "tx");
  bad(() => buildRequest("sign", env, { walletId: "w", keyType: "ed25519", txId: "t", tx: new Uint8Array(0) }), "tx");
  bad(() => buildRequest("sign", env, { walletId: "w", keyType: "ed25519", txId: "t", tx: new Uint8Array(1), derivationPath: [2 ** 31] }), "derivation_path");
  bad(() => buildRequest("sign", env, { walletId: "w", keyType: "ed25519", txId: "t", tx: new Uint8Array(1), derivationPath: "m/44'/0" }), "derivation_path");
  bad(() => buildRequest("sign", env, { walletId: "w", keyType: "rsa" as never, txId: "t", tx: new Uint8Array(1) }), "key_type");
  bad(() => buildRequest("keygen", env, { walletId: "w", keyTypes: ["ed25519", "ed25519"] }), "key_types");
  bad(() => buildRequest("reshare", env, { walletId: "w", keyType: "ed25519", sessionId: "s", nodeIds: ["a", "b"], newThreshold: 2 }), "new_threshold");
  bad(() => buildRequest("keygen", { ...env, requestId: "a.b" }, { walletId: "w" }), "request_id");
  bad(() => buildRequest("keygen", { ...env, expiresAt: 1 + 24 * 3600 * 1000 + 1 }, { walletId: "w" }), "expires_at");
  assert.deepEqual(parseDerivationPath("m/44/60/0/0/7"), [44, 60, 0, 0, 7]);
});
