// End to end against a real cluster: `signerd dev` (embedded NATS, 3 nodes on
// SoftHSM2, 2-of-3) driven from TypeScript over NATS, then through
// `signer-relay` (HTTP submit, SSE, long poll, Standard Webhooks).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as http from "node:http";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect, NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Cluster, until } from "./cluster.js";
import {
  Client, Decision, RelayClient, ResultError, ValidationError, deriveChildPublicKey, fromHex, toBase64, utf8, verifySignResult,
  webhookHandler, VerifiedWebhook, nodeKeysFrom, canonicalText, fromPlain, JsonObject, Result,
} from "../../src/index.js";

const WAIT = { timeoutMs: 120_000 };
const rid = (p: string) => `${p}-${crypto.randomBytes(6).toString("hex")}`;

describe("signerd dev end to end", { timeout: 900_000 }, () => {
  const cluster = new Cluster();
  let nc: NatsConnection;
  let a: Client;
  let b: Client;
  let clientKeyPem: string;
  const bSaw: Decision[] = [];
  const aCallback: Decision[] = [];
  const wallet = rid("tsw");
  let walletRes: Result;

  before(async () => {
    await cluster.build();
    const info = await cluster.startSignerd();
    nc = await connect({ servers: info.nats_url });
    clientKeyPem = readFileSync(info.client_key, "utf8");
    const opts = { nc, signer: clientKeyPem, nodeKeys: info.peers, signers: info.threshold };
    a = new Client({ ...opts, clientId: "svcA" });
    b = new Client({ ...opts, clientId: "svcB" });
    // The second client (another clientId, the same key) listens on all of its subjects.
    await b.onWalletCreationResult((d) => void bSaw.push(d));
    await b.onSignResult((d) => void bSaw.push(d));
    await b.onReshareResult((d) => void bSaw.push(d));
  });

  after(async () => {
    await a?.close();
    await b?.close();
    await nc?.close();
    if (process.exitCode) console.error(cluster.signerd?.tail());
    await cluster.stop();
  });

  test("create a wallet (every node attests the same keys)", async () => {
    walletRes = await a.createWalletAndWait(wallet, WAIT);
    assert.equal(walletRes.result_type, "success");
    assert.match(walletRes.ecdsa_pub_key!, /^0[23][0-9a-f]{64}$/);
    assert.match(walletRes.eddsa_pub_key!, /^[0-9a-f]{64}$/);
    assert.equal(walletRes.client_id, "svcA");
  });

  test("sign secp256k1 and ed25519, with and without an HD path; verified locally", async () => {
    const digest = crypto.createHash("sha256").update("send 0.1 BTC to bc1qts").digest();
    const msg = Buffer.concat([Buffer.from([0, 0]), Buffer.from("hello from typescript")]);
    const cases: ["secp256k1" | "ed25519", Buffer, string | number[] | undefined][] = [
      ["secp256k1", digest, undefined],
      ["secp256k1", digest, "m/44/60/0/0/7"],
      ["ed25519", msg, undefined],
      ["ed25519", msg, [44, 501, 0]],
    ];
    for (const [keyType, tx, path] of cases) {
      const res = await a.signAndWait({ walletId: wallet, keyType, txId: rid("tx"), tx: new Uint8Array(tx), derivationPath: path }, WAIT);
      const walletPub = keyType === "secp256k1" ? walletRes.ecdsa_pub_key! : walletRes.eddsa_pub_key!;
      const child = deriveChildPublicKey(keyType, walletPub, path ?? []);
      assert.equal(res.pub_key, Buffer.from(child).toString("hex"), `${keyType} ${path}`);
      verifySignResult(res, child, new Uint8Array(tx));
      if (path) assert.notEqual(res.pub_key, walletPub);
    }
  });

  test("fire and forget: the result arrives on the callback, attested", async () => {
    await a.onSignResult((d) => void aCallback.push(d));
    const tx = new Uint8Array(crypto.createHash("sha256").update("callback").digest());
    const id = await a.sign({ walletId: wallet, keyType: "secp256k1", txId: "cb1", tx });
    const d = await until("the callback's decision", 120_000, () => aCallback.find((x) => x.result.request_id === id));
    assert.equal(d.error, undefined);
    assert.equal(d.attestations.length, 2);
    verifySignResult(d.result, fromHex(d.result.pub_key!), tx);
  });

  test("an unknown wallet is an attested error with its stable code", async () => {
    await assert.rejects(
      a.signAndWait({ walletId: rid("nowallet"), keyType: "ed25519", txId: "t1", tx: utf8("x") }, WAIT),
      (e: unknown) => e instanceof ResultError && e.code === "UNKNOWN_WALLET" && !e.retryable && Object.keys(e.nodes).length >= 2,
    );
  });

  test("a wait that ends before the committee decides is TIMEOUT, decided for this client: the late results are stragglers, no callback sees them", async () => {
    const tx = new Uint8Array(crypto.createHash("sha256").update("late").digest());
    const requestId = rid("late");
    const before = a.stats().stragglers;
    await assert.rejects(
      a.signAndWait({ walletId: wallet, keyType: "secp256k1", txId: "late1", tx, requestId }, { timeoutMs: 1 }),
      (e: unknown) => e instanceof ResultError && e.code === "TIMEOUT" && e.isTimeout && e.retryable,
    );
    // The nodes still sign it; their results are acked as stragglers.
    await until("the late results acked as stragglers", 120_000, () => (a.stats().stragglers >= before + 2 ? true : undefined));
    assert.equal(aCallback.find((x) => x.result.request_id === requestId), undefined);
  });

  test("a request no node answers is decided TIMEOUT on the callback, once, at its expiry plus the grace", async () => {
    // A key no node's policy knows: every node drops its requests unanswered.
    const { privateKey } = crypto.generateKeyPairSync("ed25519");
    const stranger = new Client({
      nc, signer: privateKey.export({ type: "pkcs8", format: "pem" }).toString(), clientId: "svcZ",
      nodeKeys: cluster.info!.peers, signers: cluster.info!.threshold, requestTtlMs: 3000, expiryGraceMs: 1000,
    });
    try {
      const got: Decision[] = [];
      await stranger.onSignResult((d) => void got.push(d));
      const sent = Date.now();
      const id = await stranger.sign({ walletId: wallet, keyType: "ed25519", txId: "nobody", tx: utf8("nobody answers") });
      const d = await until("the TIMEOUT of an unanswered request", 60_000, () => got.find((x) => x.result.request_id === id));
      const at = Date.now() - sent;
      assert.equal(d.error?.code, "TIMEOUT");
      assert.match(d.error!.reason, /no node answered/);
      assert.ok(at >= 3000 + 1000 - 300, `decided ${at} ms after it was sent, before its expiry plus the grace`);
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(got.filter((x) => x.result.request_id === id).length, 1);
    } finally {
      await stranger.close();
    }
  });

  test("a legacy client (no clientId) gets its attested results on the legacy subjects", async () => {
    const legacy = new Client({ nc, signer: clientKeyPem, nodeKeys: cluster.info!.peers, signers: cluster.info!.threshold });
    try {
      await assert.rejects(
        legacy.signAndWait({ walletId: rid("nowallet"), keyType: "secp256k1", txId: "t1", tx: new Uint8Array(32) }, WAIT),
        (e: unknown) => e instanceof ResultError && e.code === "UNKNOWN_WALLET",
      );
      const jsm = await jetstreamManager(nc);
      assert.equal((await jsm.consumers.info("MPC_RESULTS", "mpc_signing_result")).config.filter_subject, "mpc.mpc_signing_result.complete");
    } finally {
      await legacy.close();
    }
  });

  test("forged results are refused; the genuine ones decide", async () => {
    const js = jetstream(nc);
    const forger = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const requestId = rid("forged");
    const tx = new Uint8Array(crypto.createHash("sha256").update("forged").digest());
    const forge = async (nodeId: string, req: string) => {
      const m = fromPlain({
        op: "sign", result_type: "success", is_timeout: false, request_id: req, client_id: "svcA", wallet_id: wallet, tx_id: "f1",
        key_type: "secp256k1", key_id: a.keyId, pub_key: walletRes.ecdsa_pub_key, r: "11".repeat(32), s: "22".repeat(32),
        signature: "11".repeat(32) + "22".repeat(32), signature_recovery: 0, node_id: nodeId,
      }) as JsonObject;
      const input = Buffer.concat([Buffer.from("hwsigner/v1/result\n"), Buffer.from(canonicalText(m, "node_signature"))]);
      m.node_signature = toBase64(new Uint8Array(crypto.sign("sha256", input, { key: forger.privateKey, dsaEncoding: "der" })));
      await js.publish("mpc.mpc_signing_result.svcA.complete", utf8(canonicalText(m)));
    };
    const before = a.stats().dropped;
    // Two forged "successes" (t+1 if they counted) for a request nobody sent: the callback never sees them.
    const ghost = rid("ghost");
    await forge("node0", ghost);
    await forge("node1", ghost);
    await until("forgeries dropped", 60_000, () => a.stats().dropped >= before + 2);
    // And two for a request the client is about to send and wait for.
    await forge("node0", requestId);
    await forge("node1", requestId);
    const res = await a.signAndWait({ walletId: wallet, keyType: "secp256k1", txId: "f1", tx, requestId }, WAIT);
    verifySignResult(res, fromHex(walletRes.ecdsa_pub_key!), tx);
    assert.notEqual(res.r, "11".repeat(32));
    assert.ok(a.stats().dropped >= before + 4);
    assert.equal(aCallback.find((d) => d.result.request_id === ghost), undefined);
  });

  test("bad input is refused before anything is sent", async () => {
    const jsm = await jetstreamManager(nc);
    const n0 = (await jsm.streams.info("MPC_REQUESTS")).state.messages;
    await assert.rejects(a.sign({ walletId: "bad wallet", keyType: "ed25519", txId: "t", tx: utf8("x") }), ValidationError);
    await assert.rejects(a.sign({ walletId: wallet, keyType: "secp256k1", txId: "t", tx: new Uint8Array(31) }), ValidationError);
    await assert.rejects(a.signAndWait({ walletId: wallet, keyType: "secp256k1", txId: "t", tx: new Uint8Array(33) }), ValidationError);
    await assert.rejects(a.createWallet("w/1"), ValidationError);
    assert.equal((await jsm.streams.info("MPC_REQUESTS")).state.messages, n0);
  });

  test("the second client (another clientId) saw none of the first one's results", async () => {
    const jsm = await jetstreamManager(nc);
    for (const name of ["mpc_keygen_result_svcB", "mpc_signing_result_svcB", "mpc_reshare_result_svcB"]) {
      const ci = await jsm.consumers.info("MPC_RESULTS", name);
      assert.equal(ci.num_pending, 0, name);
      assert.equal(ci.delivered.consumer_seq, 0, name);
    }
    const ca = await jsm.consumers.info("MPC_RESULTS", "mpc_signing_result_svcA");
    assert.ok(ca.delivered.consumer_seq >= 10);
    assert.equal(bSaw.length, 0);
    assert.equal(b.stats().delivered + b.stats().dropped + b.stats().misrouted, 0);
  });

  test("the README's quick start runs against this cluster", async () => {
    const { spawn } = await import("node:child_process");
    const out: Buffer[] = [];
    const p = spawn(process.execPath, [join(cluster.root, "clients", "typescript", "examples", "quickstart.mjs")], {
      env: { ...process.env, SIGNERD_DIR: join(cluster.dir, "dev") },
      stdio: ["ignore", "pipe", "pipe"],
    });
    p.stdout.on("data", (c: Buffer) => out.push(c));
    p.stderr.on("data", (c: Buffer) => out.push(c));
    const t = setTimeout(() => p.kill("SIGKILL"), 180_000);
    const code = await new Promise<number | null>((r) => p.on("exit", r));
    clearTimeout(t);
    const text = Buffer.concat(out).toString();
    assert.equal(code, 0, text);
    assert.match(text, /quickstart: OK/);
    assert.match(text, /error UNKNOWN_WALLET retryable: false/);
  });

  describe("through signer-relay", () => {
    const token = crypto.randomBytes(24).toString("hex");
    const secret = "whsec_" + crypto.randomBytes(32).toString("base64");
    const hooks: VerifiedWebhook[] = [];
    let hookServer: http.Server;
    let relay: RelayClient;
    let relayWallet: Result;
    const rwallet = rid("tsr");
    const p256Key = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const p256Pem = p256Key.privateKey.export({ type: "pkcs8", format: "pem" }).toString();

    before(async () => {
      const info = cluster.info!;
      const nodeKeys = nodeKeysFrom(info.peers);
      hookServer = http.createServer(webhookHandler({ secret, nodeKeys, rules: { nodes: Object.keys(info.peers), signers: info.threshold } }, (w) => void hooks.push(w)));
      await new Promise<void>((r) => hookServer.listen(0, "127.0.0.1", r));
      const hookPort = (hookServer.address() as { port: number }).port;
      const port = await freePort();
      writeFileSync(join(cluster.dir, "relay.token"), token + "\n", { mode: 0o600 });
      writeFileSync(join(cluster.dir, "relay.whsec"), secret + "\n", { mode: 0o600 });
      const pub = crypto.createPublicKey(clientKeyPem).export({ type: "spki", format: "pem" }).toString();
      // YAML is a superset of JSON.
      const cfg = {
        listen: `127.0.0.1:${port}`,
        nats: { url: info.nats_url },
        streams: { storage: "memory", history_max_age: "1h", history_duplicates: "30m" },
        cluster: { peers: info.peers, signers: info.threshold, hold: "3m" },
        clients: {
          relay: {
            token_source: "file:" + join(cluster.dir, "relay.token"),
            public_keys: [pub, p256Key.publicKey.export({ type: "spki", format: "pem" }).toString()],
            nats: { url: info.nats_url },
            webhook: { url: `http://127.0.0.1:${hookPort}/hook`, secret_source: "file:" + join(cluster.dir, "relay.whsec"), initial_backoff: "200ms", max_backoff: "2s" },
          },
        },
      };
      writeFileSync(join(cluster.dir, "relay.yaml"), JSON.stringify(cfg, null, 2));
      cluster.relay = cluster.startProc(cluster.bin("signer-relay"), ["run", "--config", join(cluster.dir, "relay.yaml")], join(cluster.dir, "relay.log"));
      const base = `http://127.0.0.1:${port}`;
      await until("the relay's /readyz", 60_000, async () => {
        if (cluster.relay!.p.exitCode !== null) throw new Error("signer-relay exited:\n" + cluster.relay!.tail());
        return (await fetch(base + "/readyz")).status === 200 || undefined;
      });
      relay = new RelayClient({ baseUrl: base, token, signer: clientKeyPem, clientId: "relay", nodeKeys: info.peers, signers: info.threshold });
    });

    after(async () => {
      await cluster.relay?.stop();
      hookServer?.close();
    });

    let keygenCursor = "";
    test("keygen over HTTP, decision by SSE", async () => {
      const id = await relay.createWallet(rwallet);
      for await (const ev of relay.events({ signal: AbortSignal.timeout(120_000) })) {
        if (ev.decision.result.request_id === id) {
          keygenCursor = ev.cursor;
          relayWallet = ev.decision.result;
          break;
        }
      }
      assert.ok(keygenCursor !== "");
      assert.equal(relayWallet.result_type, "success");
      assert.match(relayWallet.eddsa_pub_key!, /^[0-9a-f]{64}$/);
    });

    test("sign with an HD path, decision by long polling; SSE resumes after Last-Event-ID; webhook verified", async () => {
      const digest = new Uint8Array(crypto.createHash("sha256").update("relay").digest());
      const p = { walletId: rwallet, keyType: "secp256k1" as const, txId: "r1", tx: digest, derivationPath: "m/1/2/3" };
      const id = await relay.sign(p);
      const res = await relay.waitFor("sign", id, p, { via: "poll", after: keygenCursor, timeoutMs: 120_000, walletPublicKey: relayWallet.ecdsa_pub_key });
      assert.equal(res.pub_key, Buffer.from(deriveChildPublicKey("secp256k1", relayWallet.ecdsa_pub_key!, "m/1/2/3")).toString("hex"));
      // Resuming after the keygen's cursor: the first event is not the keygen any more.
      for await (const ev of relay.events({ lastEventId: keygenCursor, signal: AbortSignal.timeout(60_000) })) {
        assert.ok(BigInt(ev.cursor) > BigInt(keygenCursor));
        assert.notEqual(ev.decision.result.op, "keygen");
        break;
      }
      const hook = await until("the webhook of the sign decision", 120_000, () => hooks.find((h) => h.decision.result.request_id === id));
      assert.equal(hook.id, `decision.relay.sign.${id}.${relay.keyId}`);
      assert.equal(hook.decision.attestations.length, 2);
      assert.equal(relay.rejected, 0);
    });

    test("a P-256 client key's request verifies at the relay (the Go verifier); another key's is INVALID_SIGNATURE", async () => {
      // signerd dev's policy knows only its Ed25519 client key, so the nodes drop this request unanswered;
      // the relay (Go, protocol.VerifyRequest) checks the TypeScript P-256 signature and stores it (202).
      const base = (relay as unknown as { base: string }).base;
      const p256 = new RelayClient({ baseUrl: base, token, signer: p256Pem, clientId: "relay", nodeKeys: cluster.info!.peers });
      const id = await p256.createWallet(rid("p256"));
      assert.match(id, /^[0-9a-f]{32}$/);
      const other = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
      const stranger = new RelayClient({ baseUrl: base, token, signer: other, clientId: "relay", nodeKeys: cluster.info!.peers });
      await assert.rejects(stranger.createWallet(rid("p256")), (e: unknown) => (e as { status: number }).status === 403 && (e as { code: string }).code === "INVALID_SIGNATURE");
    });

    test("a request the relay refuses: typed error", async () => {
      const bad = new RelayClient({ baseUrl: (relay as unknown as { base: string }).base, token: "wrong", signer: clientKeyPem, clientId: "relay", nodeKeys: cluster.info!.peers });
      await assert.rejects(bad.createWallet(rid("x")), (e: unknown) => (e as { status: number }).status === 401 && (e as { code: string }).code === "UNAUTHENTICATED");
    });
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = http.createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

