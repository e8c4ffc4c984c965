// A real signer cluster for the end-to-end tests: `signerd dev` (embedded
// NATS, 3 nodes on SoftHSM2) and optionally `signer-relay run`, built from
// this repository with `go build -o` into a temp dir. Every wait polls with a
// deadline; every process is killed at the end.

import { spawn, ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { repoRoot } from "../helpers.js";

export async function until<T>(what: string, deadlineMs: number, f: () => Promise<T | undefined> | T | undefined, everyMs = 200): Promise<T> {
  const end = Date.now() + deadlineMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined && v !== false) return v as T;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

function run(cmd: string, args: string[], cwd: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd, stdio: ["ignore", "inherit", "inherit"] });
    const t = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("error", reject);
    p.on("exit", (code) => {
      clearTimeout(t);
      code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(" ")}: exit ${code}`));
    });
  });
}

const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

export interface ClusterInfo {
  nats_url: string;
  client_key: string;
  client_ids: string[];
  peers: Record<string, string>;
  threshold: number;
  nodes: number;
}

export class Proc {
  constructor(readonly p: ChildProcess, readonly log: string) {}
  tail(n = 40): string {
    try {
      return readFileSync(this.log, "utf8").split("\n").slice(-n).join("\n");
    } catch {
      return "";
    }
  }
  async stop(): Promise<void> {
    if (this.p.exitCode !== null || this.p.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.p.once("exit", () => r()));
    this.p.kill("SIGTERM");
    const t = setTimeout(() => this.p.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(t);
    children.delete(this.p);
  }
}

function start(bin: string, args: string[], log: string, cwd: string): Proc {
  const fd = openSync(log, "a");
  const p = spawn(bin, args, { cwd, stdio: ["ignore", fd, fd] });
  closeSync(fd);
  children.add(p);
  return new Proc(p, log);
}

export class Cluster {
  readonly root = repoRoot();
  readonly dir = mkdtempSync(join(tmpdir(), "hwsigner-ts-e2e-"));
  signerd?: Proc;
  relay?: Proc;
  info?: ClusterInfo;

  bin(name: string): string {
    return join(this.dir, "bin", name);
  }

  /** go build -o DIR/bin/ ./cmd/signerd ./cmd/signer-relay (the Makefile may have built them already: HWSIGNER_BIN). */
  async build(): Promise<void> {
    const pre = process.env.HWSIGNER_BIN;
    if (pre && existsSync(join(pre, "signerd")) && existsSync(join(pre, "signer-relay"))) {
      this.bin = (name: string) => join(pre, name);
      return;
    }
    await run(process.env.GO ?? "go", ["build", "-o", join(this.dir, "bin") + "/", "./cmd/signerd", "./cmd/signer-relay"], this.root, 600_000);
  }

  async startSignerd(): Promise<ClusterInfo> {
    const dev = join(this.dir, "dev");
    this.signerd = start(
      this.bin("signerd"),
      ["dev", "--nodes", "3", "--threshold", "2", "--dir", dev, "--client-ids", "demo,svcA,svcB,relay,", "--test-preparams", join(this.root, "testdata", "preparams.json")],
      join(this.dir, "signerd.log"),
      this.dir,
    );
    const p = this.signerd;
    const file = join(dev, "cluster.json");
    this.info = await until("signerd dev's cluster.json", 120_000, () => {
      if (p.p.exitCode !== null) throw new Error("signerd dev exited:\n" + p.tail());
      return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as ClusterInfo) : undefined;
    });
    return this.info;
  }

  /** Starts a process in the cluster's temp dir, output to log; killed by stop() or at exit. */
  startProc(bin: string, args: string[], log: string): Proc {
    return start(bin, args, log, this.dir);
  }

  async stop(): Promise<void> {
    await this.relay?.stop();
    await this.signerd?.stop();
    if (!process.env.HWSIGNER_KEEP_E2E) rmSync(this.dir, { recursive: true, force: true });
  }
}

