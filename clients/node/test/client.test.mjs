// The Node client against a private redis-server: enqueue, work, retry,
// dead-letter, reclaim, stop, refusals, partitions, and the packaged Lua.
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, afterEach, before, test } from "node:test";
import Redis from "ioredis";
import * as streamq from "../dist/index.js";
import { fetchCall } from "../dist/protocol.js";
import { eventually, startRedis } from "./redis-server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
let server;
let failed = false;
before(async () => { server = await startRedis(); });
afterEach((t) => { if (t.error) failed = true; });
after(() => {
  if (failed) console.log(`--- redis-server log ---\n${server.log()}`);
  server.stop();
});

const fast = (o = {}) => ({ concurrency: 1, block: 0.2, promoteInterval: 0.02, reclaimInterval: 0.05,
  grace: 5, backoff: new streamq.Backoff(0.01, 0.05, false), ...o });
let n = 0;
const fresh = () => `q${n++}`;

test("jobs run once, most urgent first", async () => {
  const queue = await streamq.Queue.open(server.url, fresh());
  const jobs = Array.from({ length: 40 }, (_, i) => ({ payload: { n: i }, priority: ["low", "medium", "high", "critical"][i % 4] }));
  const ids = await queue.enqueueBatch(jobs);
  assert.equal(new Set(ids).size, 40);
  assert.equal((await queue.stats()).waiting, 40);
  const seen = [];
  const worker = new streamq.Worker(queue, async (job) => { seen.push([job.priority, job.payload.n]); }, fast());
  const run = worker.run();
  await eventually("40 jobs", () => seen.length === 40);
  worker.stop();
  await run;
  assert.deepEqual(seen.map(([, x]) => x).sort((a, b) => a - b), [...Array(40).keys()]);
  const ranks = seen.map(([p]) => streamq.PRIORITIES.indexOf(p));
  assert.deepEqual(ranks, [...ranks].sort((a, b) => a - b));
  const stats = await queue.stats();
  assert.deepEqual([stats.total("completed"), stats.waiting, stats.inFlight], [40, 0, 0]);
  await queue.close();
});

test("a failing job is retried, then dead-lettered with its error", async () => {
  const queue = await streamq.Queue.open(server.url, fresh());
  const id = await queue.enqueue({ x: 1 }, { name: "flaky", attempts: 3 });
  const attempts = [];
  const worker = new streamq.Worker(queue, async (job) => { attempts.push(job.attempt); throw new Error("disk on fire"); }, fast());
  const run = worker.run();
  await eventually("the dead letter", async () => (await queue.stats()).deadLetters === 1);
  worker.stop();
  await run;
  assert.deepEqual(attempts, [1, 2, 3]);
  const [letter] = await queue.deadLetters();
  assert.equal(letter.job, id);
  assert.equal(letter.error, "failed 3 of 3 attempts, last: disk on fire");
  await queue.close();
});

test("a stalled job is reclaimed by another worker", async () => {
  const queue = await streamq.Queue.open(server.url, fresh());
  const id = await queue.enqueue("stalled");
  const [keys, args] = fetchCall(queue.partitions[0], "dead-worker", 1);
  const claimed = await queue.client.call("EVAL", readFileSync(join(here, "..", "lua", "fetch.lua"), "utf8"), keys.length, ...keys, ...args);
  assert.equal(claimed[1].length, 3);
  const seen = [];
  const worker = new streamq.Worker(queue, async (job) => { seen.push(job.id); }, fast({ lease: 0.3 }));
  const run = worker.run();
  await eventually("the reclaimed job", () => seen.length === 1);
  worker.stop();
  await run;
  assert.deepEqual(seen, [id]);
  assert.equal((await queue.stats()).total("reclaimed"), 1);
  await queue.close();
});

test("compressed payloads and idempotency keys", async () => {
  const queue = await streamq.Queue.open(server.url, fresh(), { compressAbove: 256 });
  const big = { text: "x".repeat(4096) };
  const first = await queue.enqueue(big, { idempotencyKey: "alert-1" });
  assert.equal(await queue.enqueue({ other: 1 }, { idempotencyKey: "alert-1" }), first);
  const entries = await queue.client.xrangeBuffer(queue.partitions[0].streams[2], "-", "+");
  assert.equal(entries.length, 1);
  assert.ok(entries[0][1][1].length < 1024, "compressed");
  const seen = [];
  const worker = new streamq.Worker(queue, async (job) => { seen.push(job.payload); }, fast());
  const run = worker.run();
  await eventually("the job", () => seen.length === 1);
  worker.stop();
  await run;
  assert.deepEqual(seen[0], big);
  await queue.close();
});

test("refusals are typed", async () => {
  await assert.rejects(streamq.Queue.open(server.url, "bad name"), streamq.InvalidName);
  const queue = await streamq.Queue.open(server.url, fresh(), { maxPayloadBytes: 100 });
  await assert.rejects(queue.enqueue(1, { priority: "urgent" }), streamq.UnknownPriority);
  await assert.rejects(queue.enqueue("x".repeat(200)), streamq.PayloadTooLarge);
  const raw = new Redis(server.url);
  await raw.set("streamq:{taken}:high", "a string");
  const taken = await streamq.Queue.open(server.url, "taken");
  await assert.rejects(taken.enqueue(1), streamq.WrongKeyType);
  await raw.hset("streamq:{future}:layout", "partitions", 2, "version", 2);
  await assert.rejects(streamq.Queue.open(server.url, "future"), streamq.UnknownLayout);
  const small = await streamq.Queue.open(server.url, fresh(), { maxBacklog: 2 });
  await small.enqueueBatch([{ payload: 1 }, { payload: 2 }]);
  await assert.rejects(small.enqueue(3), streamq.QueueFull);
  assert.equal((await small.stats()).waiting, 2, "nothing half-written");
  for (const q of [queue, taken, small]) await q.close();
  raw.disconnect();
});

test("partitioned queues route by key", async () => {
  const name = fresh();
  const raw = new Redis(server.url);
  await raw.hset(`streamq:{${name}}:layout`, "partitions", 4, "version", 1);
  const queue = await streamq.Queue.open(server.url, name);
  assert.equal(queue.partitions.length, 4);
  await queue.enqueueBatch(Array.from({ length: 5 }, (_, i) => ({ payload: i, partitionKey: "acme" })));
  const where = streamq.partitionOf("acme", 4);
  const lengths = await Promise.all(queue.partitions.map((k) => raw.xlen(k.streams[2])));
  assert.equal(lengths[where], 5);
  const seen = [];
  const worker = new streamq.Worker(queue, async (job) => { seen.push(job.payload); }, fast());
  const run = worker.run();
  await eventually("5 jobs", () => seen.length === 5);
  worker.stop();
  await run;
  assert.deepEqual(seen.sort(), [0, 1, 2, 3, 4]);
  await queue.close();
  raw.disconnect();
});

test("held jobs with the same entry id in two priorities keep their leases", async () => {
  // Each priority's stream numbers its entries itself: one batch gives
  // critical and high entries of the same ids. Finishing a critical job must
  // not stop the lease of its high twin, nor may any lease lapse.
  const queue = await streamq.Queue.open(server.url, fresh());
  const jobs = [];
  for (let i = 0; i < 20; i++) jobs.push({ payload: i, priority: "critical" }, { payload: i, priority: "high" });
  await queue.enqueueBatch(jobs);
  const [critical, high] = queue.partitions[0].streams;
  const ids = async (key) => new Set((await queue.client.xrange(key, "-", "+")).map(([id]) => id));
  const highIds = await ids(high);
  assert.ok([...(await ids(critical))].some((id) => highIds.has(id)), "the batch should give both streams the same ids");
  let release;
  const gate = new Promise((r) => { release = r; });
  const seen = [];
  const worker = new streamq.Worker(queue, async (job) => {
    seen.push(job.id);
    if (job.priority === "high") await gate;
  }, fast({ concurrency: 40, lease: 0.9 }));
  const run = worker.run();
  try {
    await eventually("the critical jobs done", async () => (await queue.stats()).total("completed") === 20);
    const acked = Date.now();
    await eventually("every high job renewed since the acks", async () => {
      const pending = await queue.client.xpending(high, "streamq", "-", "+", 100);
      const since = Date.now() - acked;
      return pending.length === 20 && pending.every(([, , idle, deliveries]) => idle < since && deliveries === 1);
    });
    release();
    await eventually("all done", async () => (await queue.stats()).total("completed") === 40);
  } finally {
    release();
    worker.stop();
    await run;
  }
  assert.equal(new Set(seen).size, seen.length, "no job ran twice");
  await queue.close();
});

// Producers that track jobs (the Rust crate's `track_jobs`) write a record per
// job into the `live` hash; only the worker that ends a job removes it, so a
// worker that finds the hash at start removes the records of the jobs it ends
// (docs/protocol.md, section 6). A retried job has not ended: its record stays.
const OTHER_JOB = ["0190b2a0-0000-7000-8000-000000000001", "3 1-0 elsewhere"];

test("a worker removes the live records of the jobs it ends", async (t) => {
  const warn = t.mock.method(console, "warn", () => {});
  const queue = await streamq.Queue.open(server.url, fresh());
  const keys = queue.partitions[0];
  const jobs = [{ payload: 0, name: "done" }, { payload: 1, name: "dead", attempts: 1 }, { payload: 2, name: "later", attempts: 2 }];
  const ids = await queue.enqueueBatch(jobs);
  // The records a tracking producer would have written (medium jobs, waiting
  // in their stream), and one of a job this worker never sees.
  const entries = (await queue.client.xrange(keys.streams[2], "-", "+")).map(([entry]) => entry);
  const records = Object.fromEntries(ids.map((id, i) => [id, `3 ${entries[i]} ${jobs[i].name}`]));
  await queue.client.hset(keys.live, { ...records, [OTHER_JOB[0]]: OTHER_JOB[1] });
  const worker = new streamq.Worker(queue, async (job) => {
    if (job.name !== "done") throw new Error("no");
  }, fast({ backoff: new streamq.Backoff(60, 60, false) }));
  const run = worker.run();
  try {
    await eventually("one job completed, one dead-lettered, one retried",
      () => [worker.outcomes.completed, worker.outcomes.deadLettered, worker.outcomes.retried].join() === "1,1,1");
    worker.stop();
    await run;
    assert.deepEqual(await queue.client.hgetall(keys.live), { [ids[2]]: records[ids[2]], [OTHER_JOB[0]]: OTHER_JOB[1] },
      "the ended jobs' records are gone, no other");
    assert.ok(warn.mock.calls.some((call) => String(call.arguments[0]).includes("removes the records of the jobs it ends")));
  } finally {
    worker.stop();
    await run;
    await queue.close();
  }
});

test("a failed live record removal is logged and the job stays completed", async (t) => {
  const error = t.mock.method(console, "error", () => {});
  t.mock.method(console, "warn", () => {});
  const queue = await streamq.Queue.open(server.url, fresh());
  const keys = queue.partitions[0];
  const id = await queue.enqueue("ok");
  await queue.client.hset(keys.live, id, "3 1-0 ");
  const runs = [];
  const worker = new streamq.Worker(queue, async (job) => {
    runs.push(job.id);
    await queue.client.set(keys.live, "not a hash"); // HDEL now fails
  }, fast());
  const run = worker.run();
  try {
    await eventually("the job completed", async () => (await queue.stats()).total("completed") === 1);
    await eventually("the failure logged",
      () => error.mock.calls.some((call) => String(call.arguments[0]).includes("could not remove the live record")));
    worker.stop();
    await run;
    assert.deepEqual(runs, [id]);
    assert.deepEqual([worker.outcomes.completed, worker.outcomes.lost], [1, 0]);
    assert.equal((await queue.stats()).inFlight, 0);
  } finally {
    worker.stop();
    await run;
    await queue.close();
  }
});

test("the packaged Lua is the repository's", () => {
  const mine = join(here, "..", "lua");
  const repo = join(here, "..", "..", "..", "lua");
  const names = (dir) => readdirSync(dir).filter((f) => f.endsWith(".lua")).sort();
  assert.deepEqual(names(mine), names(repo));
  for (const f of names(repo)) assert.ok(readFileSync(join(mine, f)).equals(readFileSync(join(repo, f))), `${f} differs: run clients/sync-lua.sh`);
});
