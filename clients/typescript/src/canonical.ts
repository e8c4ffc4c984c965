// Canonical encoding (docs/canonical-encoding.md §2-3): a strict JSON parser
// that enforces the accepted-input rules, and the RFC 8785 serialisation of
// what it accepts. Numbers are kept as their (integer) literals.

import { MalformedError } from "./errors.js";
import { concat, fromUtf8, utf8 } from "./bytes.js";

export const MAX_MESSAGE_SIZE = 1 << 20;
export const MAX_NESTING = 32;
const MAX_SAFE = 9007199254740991n;

/** An integer as written in the input. */
export class JsonInt {
  constructor(readonly literal: string) {}
  toNumber(): number {
    return Number(this.literal);
  }
}

export type JsonValue = null | boolean | string | JsonInt | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

class Parser {
  i = 0;
  constructor(readonly s: string) {}

  fail(msg: string): never {
    throw new MalformedError(`${msg} at offset ${this.i}`);
  }
  ws(): void {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.i++;
      else break;
    }
  }
  value(depth: number): JsonValue {
    if (depth > MAX_NESTING) this.fail(`nesting deeper than ${MAX_NESTING}`);
    this.ws();
    const c = this.s[this.i];
    switch (c) {
      case "{":
        return this.object(depth);
      case "[":
        return this.array(depth);
      case '"':
        return this.string();
      case "t":
        return this.literal("true", true);
      case "f":
        return this.literal("false", false);
      case "n":
        return this.literal("null", null);
      case undefined:
        return this.fail("unexpected end of input");
      default:
        if (c === "-" || (c >= "0" && c <= "9")) return this.number();
        return this.fail(`unexpected ${JSON.stringify(c)}`);
    }
  }
  literal<T>(word: string, v: T): T {
    if (this.s.startsWith(word, this.i)) {
      this.i += word.length;
      return v;
    }
    return this.fail("invalid literal");
  }
  object(depth: number): JsonObject {
    this.i++; // {
    const obj: JsonObject = Object.create(null);
    this.ws();
    if (this.s[this.i] === "}") {
      this.i++;
      return obj;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail("member name is not a string");
      const key = this.string();
      for (let k = 0; k < key.length; k++) {
        if (key.charCodeAt(k) >= 0x80) this.fail(`non-ASCII member name ${JSON.stringify(key)}`);
      }
      if (Object.prototype.hasOwnProperty.call(obj, key)) this.fail(`duplicate member ${JSON.stringify(key)}`);
      this.ws();
      if (this.s[this.i] !== ":") this.fail("expected ':'");
      this.i++;
      obj[key] = this.value(depth + 1);
      this.ws();
      const c = this.s[this.i];
      if (c === ",") {
        this.i++;
        continue;
      }
      if (c === "}") {
        this.i++;
        return obj;
      }
      this.fail("expected ',' or '}'");
    }
  }
  array(depth: number): JsonValue[] {
    this.i++; // [
    const arr: JsonValue[] = [];
    this.ws();
    if (this.s[this.i] === "]") {
      this.i++;
      return arr;
    }
    for (;;) {
      arr.push(this.value(depth + 1));
      this.ws();
      const c = this.s[this.i];
      if (c === ",") {
        this.i++;
        continue;
      }
      if (c === "]") {
        this.i++;
        return arr;
      }
      this.fail("expected ',' or ']'");
    }
  }
  number(): JsonInt {
    const m = /^-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(this.s.slice(this.i, this.i + 400));
    if (!m) this.fail("invalid number");
    const lit = m[0];
    if (m[1] !== undefined || m[2] !== undefined) this.fail(`number ${lit} is not an integer`);
    if (lit === "-0") this.fail("number -0 is not minimal");
    const next = this.s[this.i + lit.length];
    if (next !== undefined && next >= "0" && next <= "9") this.fail(`number ${lit}${next} is not minimal`);
    const n = BigInt(lit);
    if (n > MAX_SAFE || n < -MAX_SAFE) this.fail(`integer ${lit} out of range ±(2^53-1)`);
    this.i += lit.length;
    return new JsonInt(lit);
  }
  string(): string {
    const s = this.s;
    this.i++; // "
    let out = "";
    let start = this.i;
    for (;;) {
      if (this.i >= s.length) this.fail("unterminated string");
      const c = s.charCodeAt(this.i);
      if (c === 0x22) {
        out += s.slice(start, this.i);
        this.i++;
        return out;
      }
      if (c < 0x20) this.fail("control character in string");
      if (c !== 0x5c) {
        this.i++;
        continue;
      }
      out += s.slice(start, this.i);
      const e = s[this.i + 1];
      this.i += 2;
      switch (e) {
        case '"':
          out += '"';
          break;
        case "\\":
          out += "\\";
          break;
        case "/":
          out += "/";
          break;
        case "b":
          out += "\b";
          break;
        case "f":
          out += "\f";
          break;
        case "n":
          out += "\n";
          break;
        case "r":
          out += "\r";
          break;
        case "t":
          out += "\t";
          break;
        case "u": {
          const h = s.slice(this.i, this.i + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(h)) this.fail("invalid \\u escape");
          this.i += 4;
          let cu = parseInt(h, 16);
          if (cu >= 0xd800 && cu < 0xdc00 && s[this.i] === "\\" && s[this.i + 1] === "u") {
            const h2 = s.slice(this.i + 2, this.i + 6);
            const lo = /^[0-9a-fA-F]{4}$/.test(h2) ? parseInt(h2, 16) : -1;
            if (lo >= 0xdc00 && lo < 0xe000) {
              this.i += 6;
              out += String.fromCharCode(cu, lo);
              break;
            }
          }
          if (cu >= 0xd800 && cu < 0xe000) cu = 0xfffd; // a lone surrogate, as Go decodes it
          out += String.fromCharCode(cu);
          break;
        }
        default:
          this.fail("invalid escape");
      }
      start = this.i;
    }
  }
}

/** Parses raw bytes under the rules of §2; the top-level value must be an object. */
export function parseObject(raw: Uint8Array | string): JsonObject {
  let text: string;
  if (typeof raw === "string") {
    if (utf8(raw).length > MAX_MESSAGE_SIZE) throw new MalformedError("message too large", "TOO_LARGE");
    text = raw;
  } else {
    if (raw.length > MAX_MESSAGE_SIZE) throw new MalformedError(`${raw.length} bytes, at most ${MAX_MESSAGE_SIZE}`, "TOO_LARGE");
    try {
      text = fromUtf8(raw);
    } catch {
      throw new MalformedError("invalid UTF-8");
    }
  }
  if (text.charCodeAt(0) === 0xfeff) throw new MalformedError("byte order mark");
  const p = new Parser(text);
  const v = p.value(0);
  if (v === null || typeof v !== "object" || Array.isArray(v) || v instanceof JsonInt) {
    throw new MalformedError("top-level value is not an object");
  }
  p.ws();
  if (p.i !== text.length) throw new MalformedError("data after the top-level object");
  return v;
}

function encodeString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    switch (c) {
      case 0x22:
        out += '\\"';
        break;
      case 0x5c:
        out += "\\\\";
        break;
      case 0x08:
        out += "\\b";
        break;
      case 0x0c:
        out += "\\f";
        break;
      case 0x0a:
        out += "\\n";
        break;
      case 0x0d:
        out += "\\r";
        break;
      case 0x09:
        out += "\\t";
        break;
      default:
        out += c < 0x20 ? "\\u00" + c.toString(16).padStart(2, "0") : s[i];
    }
  }
  return out + '"';
}

function encode(v: JsonValue, omit?: string): string {
  if (v === null) return "null";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "string") return encodeString(v);
  if (v instanceof JsonInt) return v.literal;
  if (Array.isArray(v)) return "[" + v.map((e) => encode(e)).join(",") + "]";
  const keys = Object.keys(v)
    .filter((k) => k !== omit)
    .sort(); // member names are ASCII: code-unit order is byte order
  return "{" + keys.map((k) => encodeString(k) + ":" + encode(v[k]!)).join(",") + "}";
}

/** The canonical encoding of a parsed value, as text (UTF-8 when sent). */
export function canonicalText(v: JsonValue, omit?: string): string {
  return encode(v, omit);
}

/** The canonical encoding of raw JSON (protocol.Canonicalize). */
export function canonicalize(raw: Uint8Array | string): Uint8Array {
  return utf8(encode(parseObject(raw)));
}

export const RESULT_DOMAIN = "hwsigner/v1/result\n";
export const requestDomain = (op: string): string => `hwsigner/v1/request/${op}\n`;

/** The bytes a signature over obj covers: domain, then the canonical object without `omit`. */
export function signingInput(domain: string, obj: JsonObject, omit: string): Uint8Array {
  return concat(utf8(domain), utf8(encode(obj, omit)));
}

/** Converts a plain JS value (numbers must be safe integers) into the parsed form. */
export function fromPlain(v: unknown, path = "$"): JsonValue {
  if (v === null || typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v) || Object.is(v, -0)) throw new MalformedError(`${path}: ${v} is not a safe integer`);
    return new JsonInt(String(v));
  }
  if (v instanceof JsonInt) return v;
  if (Array.isArray(v)) return v.map((e, i) => fromPlain(e, `${path}[${i}]`));
  if (typeof v === "object") {
    const out: JsonObject = Object.create(null);
    for (const [k, e] of Object.entries(v as Record<string, unknown>)) {
      if (e === undefined) continue;
      if (/[^\x00-\x7f]/.test(k)) throw new MalformedError(`non-ASCII member name ${JSON.stringify(k)}`);
      out[k] = fromPlain(e, `${path}.${k}`);
    }
    return out;
  }
  throw new MalformedError(`${path}: cannot encode a ${typeof v}`);
}

/** Converts a parsed value to plain JS (integers become numbers: they are safe). */
export function toPlain(v: JsonValue): unknown {
  if (v instanceof JsonInt) return v.toNumber();
  if (Array.isArray(v)) return v.map(toPlain);
  if (v !== null && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v)) out[k] = toPlain(v[k]!);
    return out;
  }
  return v;
}
