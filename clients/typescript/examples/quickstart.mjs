// Quick start against `signerd dev` (see README.md): create a wallet, sign a
// secp256k1 digest at an HD path and an ed25519 message, verify both locally.
//
//   go run ./cmd/signerd dev --nodes 3 --threshold 2 --dir .signerd-dev --test-preparams testdata/preparams.json
//   SIGNERD_DIR=../../.signerd-dev node examples/quickstart.mjs
import { readFileSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import { Client, ResultError, deriveChildPublicKey, verifySignResult, toHex } from "@hwsigner/client";

const dir = process.env.SIGNERD_DIR ?? ".signerd-dev";
const cluster = JSON.parse(readFileSync(`${dir}/cluster.json`, "utf8")); // written by signerd dev
const nc = await connect({ servers: cluster.nats_url });
const client = new Client({
  nc,
  signer: readFileSync(cluster.client_key, "utf8"), // PEM (Ed25519 or P-256), or keySigner()/callbackSigner()
  clientId: "demo", // omit for the legacy subjects
  nodeKeys: cluster.peers, // node id -> identity public key (PEM)
  signers: cluster.threshold, // t+1
});

try {
  const walletId = "quickstart-" + randomBytes(4).toString("hex");
  const wallet = await client.createWalletAndWait(walletId, { timeoutMs: 120_000 });
  console.log("wallet", walletId, "secp256k1", wallet.ecdsa_pub_key, "ed25519", wallet.eddsa_pub_key);

  // secp256k1: a 32-byte digest, signed by the child key at m/44/60/0/0/7.
  const digest = createHash("sha256").update("send 0.1 BTC to bc1qdemo").digest();
  const path = "m/44/60/0/0/7";
  const sig = await client.signAndWait({ walletId, keyType: "secp256k1", txId: "tx-1", tx: digest, derivationPath: path });
  const child = deriveChildPublicKey("secp256k1", wallet.ecdsa_pub_key, path); // computed here, not trusted from the nodes
  verifySignResult(sig, child, digest); // signAndWait checked this already; shown for completeness
  console.log("secp256k1", path, "child", toHex(child), "r", sig.r, "s", sig.s, "recovery", sig.signature_recovery);

  // ed25519: the whole message (leading zero bytes kept).
  const msg = Buffer.concat([Buffer.from([0, 0]), Buffer.from("hello from the threshold signer")]);
  const ed = await client.signAndWait({ walletId, keyType: "ed25519", txId: "tx-2", tx: msg });
  verifySignResult(ed, Buffer.from(wallet.eddsa_pub_key, "hex"), msg);
  console.log("ed25519 signature", ed.signature);

  // Fire and forget: the request id now, the attested result on the callback.
  await client.onSignResult((d) => console.log("callback:", d.result.request_id, d.error ? d.error.code : "success"));
  console.log("submitted", await client.sign({ walletId, keyType: "ed25519", txId: "tx-3", tx: msg }));
  await new Promise((r) => setTimeout(r, 3000));

  // Errors carry the stable codes of docs/error-codes.md.
  await client.signAndWait({ walletId: "no-such-wallet", keyType: "ed25519", txId: "tx-4", tx: msg }).catch((e) => {
    if (e instanceof ResultError) console.log("error", e.code, "retryable:", e.retryable);
    else throw e;
  });
  console.log("quickstart: OK");
} finally {
  await client.close();
  await nc.close();
}
