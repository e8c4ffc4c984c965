// HD child keys from public data (protocol/hd, docs/hd-derivation.md):
// chain code from the wallet key, BIP32 CKDpub for secp256k1, "hwsigner
// ed25519 ckd v1" for ed25519. Curve arithmetic is @noble/curves.

import { secp256k1 } from "@noble/curves/secp256k1";
import { ed25519 } from "@noble/curves/ed25519";
import { hmac } from "@noble/hashes/hmac";
import { sha512 } from "@noble/hashes/sha2";
import { concat, equalBytes, fromHex, toHex, utf8 } from "./bytes.js";
import { DeriveError } from "./errors.js";
import { HARDENED_OFFSET, MAX_DERIVATION_DEPTH, normalizePath } from "./request.js";
import type { KeyType } from "./request.js";
import type { Result } from "./result.js";

export const CHAIN_CODE_DOMAIN = "hwsigner chain code v1";
export const ED25519_CKD_DOMAIN = "hwsigner ed25519 ckd v1";

function ser32(i: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, i, false);
  return b;
}

function bytesToBigBE(b: Uint8Array): bigint {
  return b.length === 0 ? 0n : BigInt("0x" + toHex(b));
}

function bytesToBigLE(b: Uint8Array): bigint {
  return bytesToBigBE(Uint8Array.from(b).reverse());
}

function parseSecp(pub: Uint8Array) {
  if (pub.length !== 33 && pub.length !== 65) throw new DeriveError(`secp256k1 public key of ${pub.length} bytes`);
  try {
    return secp256k1.ProjectivePoint.fromHex(pub);
  } catch (e) {
    throw new DeriveError(`secp256k1 public key: ${(e as Error).message}`);
  }
}

function parseEd(pub: Uint8Array) {
  if (pub.length !== 32) throw new DeriveError(`ed25519 public key of ${pub.length} bytes, want 32`);
  let p;
  try {
    p = ed25519.ExtendedPoint.fromHex(pub, false);
  } catch (e) {
    throw new DeriveError(`ed25519 public key: ${(e as Error).message}`);
  }
  if (!equalBytes(p.toRawBytes(), pub)) throw new DeriveError("ed25519 public key is not canonically encoded");
  if (p.equals(ed25519.ExtendedPoint.ZERO)) throw new DeriveError("ed25519 public key is the identity");
  return p;
}

/** The chain code of a wallet key: HMAC-SHA512("hwsigner chain code v1", pub || key_type)[:32]. */
export function chainCode(keyType: KeyType, pub: Uint8Array): Uint8Array {
  if (keyType === "secp256k1") parseSecp(pub);
  else if (keyType === "ed25519") parseEd(pub);
  else throw new DeriveError(`unknown key type ${JSON.stringify(keyType)}`);
  return hmac(sha512, utf8(CHAIN_CODE_DOMAIN), concat(pub, utf8(keyType))).subarray(0, 32);
}

export interface Child {
  /** 33-byte compressed secp256k1 key or 32-byte ed25519 key. */
  pubKey: Uint8Array;
  chainCode: Uint8Array;
}

/** Derives the child of pub (with chain code cc) along a non-hardened path (hd.Derive). */
export function derive(keyType: KeyType, pub: Uint8Array, cc: Uint8Array, path: number[]): Child {
  if (cc.length !== 32) throw new DeriveError(`chain code of ${cc.length} bytes, want 32`);
  if (path.length > MAX_DERIVATION_DEPTH) throw new DeriveError(`path of ${path.length} levels, at most ${MAX_DERIVATION_DEPTH}`);
  path.forEach((idx, i) => {
    if (!Number.isInteger(idx) || idx < 0 || idx >= HARDENED_OFFSET) throw new DeriveError(`path[${i}] = ${idx} is hardened or not an index`);
  });
  if (keyType === "secp256k1") {
    const G = secp256k1.ProjectivePoint.BASE;
    const n = secp256k1.CURVE.n;
    let k = parseSecp(pub);
    let chain = cc;
    for (const idx of path) {
      const I = hmac(sha512, chain, concat(k.toRawBytes(true), ser32(idx)));
      const il = bytesToBigBE(I.subarray(0, 32));
      if (il >= n) throw new DeriveError(`secp256k1 index ${idx}: IL >= n (BIP32: use the next index)`);
      const child = il === 0n ? k : G.multiply(il).add(k);
      if (child.equals(secp256k1.ProjectivePoint.ZERO)) throw new DeriveError(`secp256k1 index ${idx}: child at infinity (BIP32: use the next index)`);
      k = child;
      chain = I.subarray(32);
    }
    return { pubKey: k.toRawBytes(true), chainCode: Uint8Array.from(chain) };
  }
  if (keyType === "ed25519") {
    const B = ed25519.ExtendedPoint.BASE;
    const L = ed25519.CURVE.n;
    let a = parseEd(pub);
    let chain = cc;
    for (const idx of path) {
      const A = a.toRawBytes();
      const mac = (tag: number) => hmac(sha512, chain, concat(utf8(ED25519_CKD_DOMAIN), Uint8Array.of(tag), A, ser32(idx)));
      const t = bytesToBigLE(mac(0)) % L;
      const next = mac(1).subarray(0, 32);
      const child = t === 0n ? a : a.add(B.multiply(t));
      if (child.equals(ed25519.ExtendedPoint.ZERO)) throw new DeriveError(`ed25519 index ${idx}: child is the identity`);
      a = child;
      chain = next;
    }
    return { pubKey: a.toRawBytes(), chainCode: Uint8Array.from(chain) };
  }
  throw new DeriveError(`unknown key type ${JSON.stringify(keyType)}`);
}

/** The public key a signing request with this derivation path is signed under (client.DeriveChildPublicKey). */
export function deriveChildPublicKey(keyType: KeyType, walletPub: Uint8Array | string, path: number[] | string = []): Uint8Array {
  const pub = typeof walletPub === "string" ? fromHex(walletPub) : walletPub;
  return derive(keyType, pub, chainCode(keyType, pub), normalizePath(path)).pubKey;
}

/** A keygen result's public key of keyType (bytes). */
export function walletKey(res: Result, keyType: KeyType): Uint8Array {
  if (!res || res.result_type !== "success") throw new DeriveError("not a successful keygen result");
  const h = keyType === "secp256k1" ? res.ecdsa_pub_key : keyType === "ed25519" ? res.eddsa_pub_key : undefined;
  if (!h) throw new DeriveError(`the keygen result has no ${keyType} key`);
  return fromHex(h);
}
