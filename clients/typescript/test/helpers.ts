import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root: the first parent directory holding go.mod and testdata/vectors. */
export function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(d, "go.mod")) && existsSync(join(d, "testdata", "vectors"))) return d;
    const up = resolve(d, "..");
    if (up === d) throw new Error("repository root not found");
    d = up;
  }
}

export function vectors<T = any>(name: string): T {
  return JSON.parse(readFileSync(join(repoRoot(), "testdata", "vectors", name), "utf8")) as T;
}
