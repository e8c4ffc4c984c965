// Client signing keys (Ed25519, ECDSA P-256; in-process or a callback such as
// a KMS), key ids, and signature verification with Node's crypto.

import * as crypto from "node:crypto";
import { p256 } from "@noble/curves/p256";
import { sha256 } from "@noble/hashes/sha2";
import { equalBytes, toHex } from "./bytes.js";
import { HwSignerError, InvalidSignatureError } from "./errors.js";

export type ClientKeyType = "ed25519" | "p256";

/** Something that signs requests. `sign` gets the exact signed bytes. */
export interface RequestSigner {
  readonly keyType: ClientKeyType;
  /** The public key as PKIX SubjectPublicKeyInfo DER. */
  readonly publicKeySpki: Uint8Array;
  /** Ed25519: the 64-byte signature of data. P-256: ASN.1 DER ECDSA over SHA-256(data). */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

/** A public key as PEM, base64 PKIX DER, DER bytes or a KeyObject. */
export type PublicKeyInput = string | Uint8Array | crypto.KeyObject;

export function publicKeyObject(k: PublicKeyInput): crypto.KeyObject {
  if (k instanceof crypto.KeyObject) return k.type === "private" ? crypto.createPublicKey(k) : k;
  if (typeof k === "string") {
    const s = k.trim();
    if (s.startsWith("-----BEGIN")) return crypto.createPublicKey(s);
    return crypto.createPublicKey({ key: Buffer.from(s, "base64"), format: "der", type: "spki" });
  }
  return crypto.createPublicKey({ key: Buffer.from(k), format: "der", type: "spki" });
}

export function keyTypeOf(k: crypto.KeyObject): ClientKeyType {
  if (k.asymmetricKeyType === "ed25519") return "ed25519";
  if (k.asymmetricKeyType === "ec" && k.asymmetricKeyDetails?.namedCurve === "prime256v1") return "p256";
  throw new HwSignerError("UNSUPPORTED_KEY", `unsupported key: ${k.asymmetricKeyType} ${k.asymmetricKeyDetails?.namedCurve ?? ""}`.trim());
}

export function spkiOf(k: PublicKeyInput): Uint8Array {
  return new Uint8Array(publicKeyObject(k).export({ type: "spki", format: "der" }));
}

/** key_id: lowercase hex of the first 16 bytes of SHA-256 over the PKIX DER (protocol.KeyID). */
export function keyId(k: PublicKeyInput): string {
  const obj = publicKeyObject(k);
  keyTypeOf(obj);
  return toHex(sha256(spkiOf(obj)).subarray(0, 16));
}

/** Verifies sig over data: Ed25519 directly, P-256 as DER over SHA-256(data). */
export function verifyWith(pub: crypto.KeyObject, data: Uint8Array, sig: Uint8Array): boolean {
  try {
    if (keyTypeOf(pub) === "ed25519") return crypto.verify(null, data, pub, sig);
    return crypto.verify("sha256", data, { key: pub, dsaEncoding: "der" }, sig);
  } catch {
    return false;
  }
}

/** A signer holding the private key in this process (PEM PKCS#8/SEC1, or a KeyObject). */
export function keySigner(privateKey: string | crypto.KeyObject): RequestSigner {
  const priv = typeof privateKey === "string" ? crypto.createPrivateKey(privateKey) : privateKey;
  if (priv.type !== "private") throw new HwSignerError("UNSUPPORTED_KEY", "not a private key");
  const pub = crypto.createPublicKey(priv);
  const keyType = keyTypeOf(pub);
  return {
    keyType,
    publicKeySpki: spkiOf(pub),
    async sign(data: Uint8Array): Promise<Uint8Array> {
      const sig = keyType === "ed25519" ? crypto.sign(null, data, priv) : crypto.sign("sha256", data, { key: priv, dsaEncoding: "der" });
      return new Uint8Array(sig);
    },
  };
}

/** What a callback signer's function gets: the signed bytes and, for P-256, their SHA-256 digest. */
export interface SignCallbackInput {
  data: Uint8Array;
  /** SHA-256(data): what a KMS signs for ECDSA_SHA_256 with MessageType DIGEST. */
  digest: Uint8Array;
}

/**
 * A signer whose private key lives elsewhere (KMS, HSM, another process).
 * The callback returns an Ed25519 signature of data, or an ECDSA P-256
 * signature of digest: ASN.1 DER, or raw r||s (64 bytes), which is converted.
 * Every signature is verified against publicKey before use.
 */
export function callbackSigner(publicKey: PublicKeyInput, sign: (input: SignCallbackInput) => Promise<Uint8Array>): RequestSigner {
  const pub = publicKeyObject(publicKey);
  const keyType = keyTypeOf(pub);
  return {
    keyType,
    publicKeySpki: spkiOf(pub),
    async sign(data: Uint8Array): Promise<Uint8Array> {
      let sig = await sign({ data, digest: sha256(data) });
      if (keyType === "p256" && sig.length === 64) {
        sig = p256.Signature.fromCompact(sig).toDERRawBytes();
      }
      return sig;
    },
  };
}

/** Signs and checks that the signature verifies (a faulty KMS or a wrong key is caught here). */
export async function signChecked(signer: RequestSigner, data: Uint8Array): Promise<Uint8Array> {
  const sig = await signer.sign(data);
  const pub = publicKeyObject(signer.publicKeySpki);
  if (!(sig instanceof Uint8Array) || !verifyWith(pub, data, sig)) {
    throw new InvalidSignatureError("the signer produced a signature that does not verify under its public key");
  }
  return sig;
}

export function samePublicKey(a: PublicKeyInput, b: PublicKeyInput): boolean {
  return equalBytes(spkiOf(a), spkiOf(b));
}
