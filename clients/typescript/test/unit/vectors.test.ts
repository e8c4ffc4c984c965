// The shared vectors of testdata/vectors (made by cmd/gentestvectors from the
// Go code) checked against this package.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as crypto from "node:crypto";
import { vectors } from "../helpers.js";
import {
  canonicalize, keyId, keySigner, signRequest, verifyRequest, requestSigningInput, verifyResult, resultSigningInput, nodeKeysFrom,
  Collector, decodeResult, chainCode, derive, verifySignature, verifySignResult, fromBase64, fromHex, toHex, utf8,
  requestSubject, resultFilterSubject, resultConsumerName, requestMsgId, resultMsgId, resultSubject, ErrorCodes, isRetryable,
  canonicalText, parseObject, RequestSigner,
} from "../../src/index.js";

const keys = vectors("keys.json");

function edSigner(): RequestSigner {
  const seed = Buffer.from(keys.client_ed25519.private, "hex");
  const pkcs8 = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]);
  return keySigner(crypto.createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" }));
}

function p256Signer(): RequestSigner {
  const d = Buffer.from(keys.client_p256.private, "hex");
  const pub = Buffer.from(keys.client_p256.public, "hex");
  const jwk = { kty: "EC", crv: "P-256", d: d.toString("base64url"), x: pub.subarray(1, 33).toString("base64url"), y: pub.subarray(33).toString("base64url") };
  return keySigner(crypto.createPrivateKey({ key: jwk, format: "jwk" }));
}

const nodeKeys = nodeKeysFrom(Object.fromEntries(Object.entries(keys.nodes).map(([id, k]: [string, any]) => [id, k.public_pem])));
const clientKeys: Record<string, string> = { client_ed25519: keys.client_ed25519.public_pem, client_p256: keys.client_p256.public_pem };

test("key ids", () => {
  assert.equal(keyId(keys.client_ed25519.public_pem), keys.client_ed25519.key_id);
  assert.equal(keyId(keys.client_p256.public_pem), keys.client_p256.key_id);
  assert.equal(keyId(edSigner().publicKeySpki), keys.client_ed25519.key_id);
  assert.equal(keyId(p256Signer().publicKeySpki), keys.client_p256.key_id);
  for (const [, k] of Object.entries<any>(keys.nodes)) assert.equal(keyId(k.public_pem), k.key_id);
});

test("canonical encodings", () => {
  const f = vectors("canonical.json");
  assert.ok(f.vectors.length >= 20);
  for (const v of f.vectors) {
    const input = fromBase64(v.input_b64);
    if (v.error) {
      assert.throws(() => canonicalize(input), Error, v.name);
    } else {
      assert.equal(Buffer.from(canonicalize(input)).toString("utf8"), v.canonical, v.name);
    }
  }
});

test("request signatures", async () => {
  const f = vectors("requests.json");
  const signers: Record<string, RequestSigner> = { client_ed25519: edSigner(), client_p256: p256Signer() };
  for (const v of [...f.vectors, ...f.reformatted]) {
    verifyRequest(v.request, clientKeys[v.key]!);
    assert.equal(Buffer.from(requestSigningInput(v.request)).toString("utf8"), v.signing_input, v.name);
  }
  for (const v of f.vectors) {
    const raw = await signRequest(signers[v.key]!, v.unsigned);
    if (v.deterministic) {
      assert.equal(Buffer.from(raw).toString("utf8"), v.request, v.name);
    } else {
      // ECDSA is randomized: ours verifies, and everything but the signature is the same.
      verifyRequest(raw, clientKeys[v.key]!);
      const a = parseObject(raw), b = parseObject(v.request);
      assert.equal(canonicalText(a, "signature"), canonicalText(b, "signature"), v.name);
    }
  }
  for (const v of f.bad_requests) {
    assert.throws(
      () => verifyRequest(v.request, clientKeys[v.key]!),
      (e: any) => ({ invalid_signature: "INVALID_SIGNATURE", malformed: "MALFORMED", unknown_op: "UNKNOWN_OP" } as any)[v.error] === e.code,
      v.name,
    );
  }
});

test("result signatures", () => {
  const f = vectors("results.json");
  for (const v of f.vectors) {
    if (v.valid) {
      verifyResult(v.raw, nodeKeys);
      assert.equal(Buffer.from(resultSigningInput(v.raw)).toString("utf8"), v.signing_input, v.name);
      continue;
    }
    const want = ({ invalid_signature: "INVALID_SIGNATURE", malformed: "MALFORMED", unknown_node: "UNKNOWN_NODE" } as any)[v.error];
    assert.throws(() => verifyResult(v.raw, nodeKeys), (e: any) => e.code === want, v.name);
  }
});

test("signature checks over the tx", () => {
  const f = vectors("results.json");
  for (const c of f.signature_checks) {
    const tx = fromBase64(c.tx);
    const run = () => (c.pub_key ? verifySignResult(c.result, fromHex(c.pub_key), tx) : verifySignature(c.result, tx));
    if (c.valid) run();
    else assert.throws(run, (e: any) => e.code === "VERIFY_FAILED", c.name);
  }
});

test("committee decisions", () => {
  const f = vectors("attest.json");
  assert.ok(f.cases.length >= 20);
  for (const c of f.cases) {
    const col = new Collector(c.op, { nodes: c.nodes, signers: c.signers });
    let decidedAt = -1;
    let d: any;
    c.results.forEach((raw: string, i: number) => {
      const res = verifyResult(raw, nodeKeys);
      const got = col.add(res, utf8(raw));
      if (got && decidedAt < 0) {
        d = got;
        decidedAt = i;
      }
    });
    d ??= col.expire();
    assert.equal(decidedAt, c.decided_at, c.name);
    assert.equal(d.error?.code ?? "", c.code, c.name);
    assert.deepEqual(d.attestations.map((a: Uint8Array) => decodeResult(a).result.node_id), c.attesters, c.name);
    const res = { ...d.result };
    delete res.node_id;
    delete res.node_signature;
    if (c.code === "TIMEOUT" || c.code === "RESULT_MISMATCH") delete res.error_reason;
    // Go encodes the typed protocol.Result: compare the members it carries.
    const want = decodeResult(c.result).result;
    for (const k of Object.keys(want)) {
      if (want[k] === "" || want[k] === undefined) continue;
      assert.deepEqual(res[k], want[k], `${c.name}: ${k}`);
    }
  }
});

test("HD derivations", () => {
  const f = vectors("hd.json");
  assert.ok(f.vectors.length >= 20);
  for (const v of f.vectors) {
    const run = () => {
      const pub = fromHex(v.pub);
      const cc = chainCode(v.key_type, pub);
      assert.equal(toHex(cc), v.chain_code, v.name);
      return derive(v.key_type, pub, cc, v.path);
    };
    if (v.error) {
      assert.throws(run, (e: any) => e.code === "DERIVE_FAILED", v.name);
      continue;
    }
    assert.equal(toHex(run().pubKey), v.child, v.name);
  }
});

test("subjects, consumers, message ids, error codes", () => {
  const f = vectors("routing.json");
  for (const v of f.vectors) {
    for (const op of ["keygen", "sign", "reshare"] as const) {
      assert.equal(requestSubject(op, "w1"), v.request_subjects[op]);
      assert.equal(resultFilterSubject(op, v.client_id), v.result_filters[op]);
      assert.equal(resultConsumerName(op, v.client_id), v.result_consumers[op]);
    }
    assert.equal(requestMsgId(v.client_id, "r1", utf8(v.raw)), v.request_msg_id);
    assert.equal(resultMsgId(v.client_id, "r1", "node0", utf8(v.raw)), v.result_msg_id);
    assert.equal(resultSubject("sign", v.client_id, ""), v.signing_result);
    assert.equal(resultSubject("keygen", v.client_id, "w1"), v.keygen_result);
    assert.equal(resultSubject("reshare", v.client_id, "sess1"), v.reshare_result);
  }
  assert.deepEqual([...ErrorCodes], f.error_codes);
  for (const c of f.error_codes) assert.equal(isRetryable(c), f.retryable[c], c);
});
