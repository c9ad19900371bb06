// A private redis-server: temp dir, no persistence, a free port, killed at
// the end, its log printed when asked. Never the shared 127.0.0.1:6379.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Redis from "ioredis";

async function freePort() {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export async function startRedis() {
  const dir = mkdtempSync(join(tmpdir(), "streamq-node-"));
  const port = await freePort();
  const log = join(dir, "redis.log");
  const child = spawn(process.env.STREAMQ_REDIS_SERVER ?? "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--logfile", log],
    { stdio: "ignore" });
  const url = `redis://127.0.0.1:${port}`;
  await eventually("redis-server to answer", async () => {
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    try {
      await client.connect();
      return (await client.ping()) === "PONG";
    } catch {
      return false;
    } finally {
      client.disconnect();
    }
  });
  return {
    url,
    port,
    log: () => { try { return readFileSync(log, "utf8"); } catch { return "(no log)"; } },
    stop: () => { child.kill("SIGKILL"); rmSync(dir, { recursive: true, force: true }); },
  };
}

/** Waits for `condition()` to hold, polling; fails naming `what`. */
export async function eventually(what, condition, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
