// Byte helpers: UTF-8, hex, base64 (RFC 4648 §4, padded, strict).

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

export function utf8(s: string): Uint8Array {
  return enc.encode(s);
}

/** Decodes UTF-8, throwing on invalid input. */
export function fromUtf8(b: Uint8Array): string {
  return dec.decode(b);
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

const HEX = /^(?:[0-9a-f]{2})*$/;

/** Decodes lowercase (or uppercase) hex; throws on anything else. */
export function fromHex(s: string): Uint8Array {
  if (typeof s !== "string" || !HEX.test(s.toLowerCase())) throw new TypeError("not hex");
  return new Uint8Array(Buffer.from(s, "hex"));
}

export function toBase64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64");
}

/** Decodes standard padded base64, refusing anything the encoder would not produce. */
export function fromBase64(s: string): Uint8Array {
  if (typeof s !== "string" || s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) {
    throw new TypeError("not standard padded base64");
  }
  const b = new Uint8Array(Buffer.from(s, "base64"));
  if (toBase64(b) !== s) throw new TypeError("not canonical base64");
  return b;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

export function asBytes(x: Uint8Array | string): Uint8Array {
  return typeof x === "string" ? utf8(x) : x;
}
