// Loss accounting (docs/protocol.md, "Loss accounting"): the ledger on its
// own, as the Rust unit tests of src/producer/ledger.rs; then against a
// private redis-server whose sequence is rewritten the way a failover leaves it.
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";
import Redis from "ioredis";
import * as streamq from "../dist/index.js";
import { Ledger, RECENT_JOBS, reportCommands } from "../dist/ledger.js";
import { startRedis } from "./redis-server.mjs";

const HIGH = 2;
const LOW = 4;
const ids = (n) => Array.from({ length: n }, (_, i) => `job-${i}`);
const reply = (epoch, first, kept) => ({ epoch, first, kept });
const add = (ledger, numbered, jobs) => ledger.record(ledger.epoch(), numbered, jobs.map((id) => [HIGH, id]));

// The ledger on its own (the Rust crate's unit tests, one for one).

test("a new epoch names the jobs numbered after what it kept", () => {
  const ledger = new Ledger();
  const jobs = ids(5);
  assert.equal(add(ledger, reply("a/1", 1, -1), jobs.slice(0, 3)), null);
  assert.equal(add(ledger, reply("a/1", 4, -1), jobs.slice(3)), null);
  // The new server had numbers up to 3: jobs 4 and 5 are gone.
  const lost = add(ledger, reply("b/2", 4, 3), []);
  assert.deepEqual(lost, { jobs: [[HIGH, jobs[3]], [HIGH, jobs[4]]], unnamed: 0 });
  assert.equal(ledger.epoch(), "b/2");
});

test("a new epoch that kept everything reports nothing", () => {
  const ledger = new Ledger();
  add(ledger, reply("a/1", 1, -1), ids(3));
  assert.equal(add(ledger, reply("b/2", 4, 3), ["job-3"]), null);
  // Still judged later: a next epoch that kept 3 loses job 4 alone.
  assert.deepEqual(add(ledger, reply("c/3", 5, 3), []), { jobs: [[HIGH, "job-3"]], unnamed: 0 });
});

test("a deleted sequence is not a loss", () => {
  const ledger = new Ledger();
  add(ledger, reply("a/1", 1, -1), ids(3));
  assert.equal(add(ledger, reply("a/9", 1, -2), ids(1)), null);
  // Nothing from before the deletion is judged later.
  assert.equal(add(ledger, reply("b/10", 2, 1), []), null);
  assert.deepEqual(add(ledger, reply("c/11", 2, 0), []), { jobs: [[HIGH, "job-0"]], unnamed: 0 },
    "only the job added after the deletion");
});

test("a late reply from the old epoch is judged by what it kept", () => {
  const ledger = new Ledger();
  add(ledger, reply("a/1", 1, -1), ids(2));
  const named = ledger.epoch();
  assert.notEqual(add(ledger, reply("b/2", 3, 1), []), null);
  const lost = ledger.record(named, reply("a/1", 3, -1), ids(2).map((id) => [LOW, id]));
  assert.equal(lost?.jobs.length, 2);
  assert.equal(ledger.epoch(), "b/2", "a late reply does not move the ledger back");
});

test("forgotten jobs are counted when rolled back", () => {
  const ledger = new Ledger();
  add(ledger, reply("a/1", 1, -1), ids(RECENT_JOBS + 10));
  // Kept up to 5: 10 forgotten numbers (1..=10) of which 5 lost.
  const lost = add(ledger, reply("b/2", 6, 5), []);
  assert.equal(lost.unnamed, 5);
  assert.equal(lost.jobs.length, RECENT_JOBS);
});

test("no epochs, no accounting", () => {
  const ledger = new Ledger();
  assert.equal(add(ledger, reply("", 1, -1), ids(2)), null);
  assert.equal(ledger.epoch(), "");
  // Jobs added without epochs are never judged; later ones are.
  assert.equal(add(ledger, reply("a/1", 3, -1), ["later"]), null);
  assert.deepEqual(add(ledger, reply("b/2", 4, 0), []), { jobs: [[HIGH, "later"]], unnamed: 0 });
});

test("the report counts per priority, and unnamed jobs as low", () => {
  const keys = new streamq.QueueKeys("streamq", "jobs");
  const lost = [{ jobs: [[1, "a"], [HIGH, "b"], [HIGH, "c"]], unnamed: 0 }, { jobs: [], unnamed: 3 }];
  assert.deepEqual(reportCommands(keys, lost, 0, 7), [
    ["HINCRBY", keys.stats, "rolled_back:critical", 1],
    ["HINCRBY", keys.stats, "rolled_back:high", 2],
    ["HINCRBY", keys.stats, "rolled_back:low", 3],
  ]);
  assert.deepEqual(reportCommands(keys, lost, 500, 7).filter(([c]) => c === "XADD"),
    [["a", "critical"], ["b", "high"], ["c", "high"]].map(([id, p]) =>
      ["XADD", keys.events, "MAXLEN", "~", 500, "*", "ev", "rolled_back", "job", id, "p", p, "at", 7]));
});

// Against a redis-server. A failover's trace in the sequence: the promoted
// replica (another replication id) had the numbers up to `kept`, opened its
// epoch at kept + 1 and wrote nothing of ours; the real server then finds an
// epoch it did not write and opens its own, so the reply tells the producer
// that its epoch kept only up to `kept`.

let server;
let raw;
let failed = false;
const opened = [];
before(async () => {
  server = await startRedis();
  raw = new Redis(server.url);
});
afterEach((t) => { if (t.error) failed = true; });
after(() => {
  if (failed) console.log(`--- redis-server log ---\n${server.log()}`);
  for (const queue of opened) queue.client.disconnect();
  raw.disconnect();
  server.stop();
});

/** Opens a queue, disconnected at the end even when its test failed. */
async function open(name) {
  const queue = await streamq.Queue.open(server.url, name);
  opened.push(queue);
  return queue;
}

/** Rewrites the partition's sequence as a failover to a server that had
 * numbers up to `kept` would; resolves to the epoch that was current. */
async function failOver(keys, kept) {
  const seq = await raw.hgetall(keys.seq);
  const replid = (await raw.info("replication")).match(/master_replid:(\w+)/)[1];
  assert.ok(seq.epoch.startsWith(`${replid}/`), "the server opened the epoch the producer knows");
  const promoted = `${(replid[0] === "0" ? "1" : "0").repeat(40)}/${Number(seq.epoch.split("/")[1]) + 1}`;
  await raw.hset(keys.seq, "n", kept, "epoch", promoted, "epochs", `${seq.epochs}${promoted} ${kept + 1};`);
  // The epoch the real server opens next is `<its replid>/<now ms>`: a later
  // millisecond than the one it opened before.
  await new Promise((r) => setTimeout(r, 5));
  return seq.epoch;
}

/** Runs `f` with console.error captured; resolves to the lines logged. */
async function errorsOf(f) {
  const logged = [];
  const original = console.error;
  console.error = (...args) => { logged.push(args.map(String).join(" ")); };
  try {
    await f();
  } finally {
    console.error = original;
  }
  return logged;
}

const rolledBack = (counters) => Object.fromEntries(Object.entries(counters).filter(([k, v]) => k.startsWith("rolled_back:") && v));
const events = async (keys, ev) => (await raw.xrange(keys.events, "-", "+"))
  .map(([, f]) => Object.fromEntries(f.flatMap((x, i) => (i % 2 ? [] : [[x, f[i + 1]]]))))
  .filter((e) => e.ev === ev).map((e) => [e.job, e.p]);

test("jobs a new epoch never had are reported", async () => {
  const queue = await open("failover");
  queue.eventsCap = 1000;
  const keys = queue.partitions[0];
  const priorities = ["critical", "high", "medium", "low", "high"];
  const jobs = await queue.enqueueBatch(priorities.map((priority, i) => ({ payload: i, priority })));
  assert.equal(await raw.hget(keys.seq, "n"), "5", "numbers 1..5");
  const old = await failOver(keys, 2);

  let later;
  const [message, ...more] = await errorsOf(async () => { later = await queue.enqueue("after", { priority: "critical" }); });

  const epoch = await raw.hget(keys.seq, "epoch");
  assert.ok(epoch !== old && epoch !== "" && queue.ledgers[0].epoch() === epoch);
  assert.equal(await raw.hget(keys.seq, "n"), "3", "the new epoch numbered the job 3");
  const stats = await queue.stats();
  assert.deepEqual(rolledBack(stats.counters), { "rolled_back:medium": 1, "rolled_back:low": 1, "rolled_back:high": 1 });
  assert.equal(stats.total("rolled_back"), 3);
  assert.deepEqual(await events(keys, "rolled_back"), jobs.slice(2).map((id, i) => [id, priorities[2 + i]]));
  assert.deepEqual(more, []);
  assert.match(message, /3 acknowledged jobs lost/);
  for (const id of jobs.slice(2)) assert.ok(message.includes(id), `${id} named`);
  for (const id of [...jobs.slice(0, 2), later]) assert.ok(!message.includes(id), `${id} not named`);

  // Judged once: later enqueues in the new epoch report nothing more.
  assert.deepEqual(await errorsOf(() => queue.enqueueBatch([1, 2, 3].map((payload) => ({ payload })))), []);
  assert.equal((await queue.stats()).total("rolled_back"), 3);
  assert.equal((await events(keys, "rolled_back")).length, 3);
  await queue.close();
});

test("a failover that kept everything and a deleted sequence report nothing", async () => {
  const queue = await open("kept");
  const keys = queue.partitions[0];
  await queue.enqueueBatch([0, 1, 2, 3].map((payload) => ({ payload })));
  let kept;
  let lost;
  const logged = await errorsOf(async () => {
    await failOver(keys, 4);
    await queue.enqueue("after a failover that lost nothing");
    // Obliterate deletes the sequence with the jobs: not a loss.
    await raw.del(keys.seq);
    await new Promise((r) => setTimeout(r, 5));
    kept = await queue.enqueue("after obliterate");
    assert.equal(await raw.hget(keys.seq, "n"), "1");
    assert.equal((await queue.stats()).total("rolled_back"), 0);
    // What comes after is judged: a failover that keeps job 1 of the new
    // sequence loses the next two, and none of the jobs before it.
    lost = await queue.enqueueBatch([{ payload: "lost" }, { payload: "too" }]);
    await failOver(keys, 1);
    await queue.enqueue("after");
  });
  assert.equal(logged.length, 1, `one report: ${logged}`);
  assert.match(logged[0], /2 acknowledged jobs lost/);
  for (const id of lost) assert.ok(logged[0].includes(id));
  assert.ok(!logged[0].includes(kept));
  assert.deepEqual(rolledBack((await queue.stats()).counters), { "rolled_back:medium": 2 });
  await queue.close();
});

test("a report that fails is logged and the enqueue succeeds", async () => {
  const queue = await open("best-effort");
  const keys = queue.partitions[0];
  const jobs = await queue.enqueueBatch([0, 1, 2].map((payload) => ({ payload, priority: "low" })));
  await failOver(keys, 1);
  await raw.hset(keys.stats, "rolled_back:low", "not a number");
  let later;
  const logged = await errorsOf(async () => { later = await queue.enqueue("after"); });
  assert.ok(later);
  assert.equal(await raw.xlen(keys.streams[2]), 1);
  assert.equal(logged.length, 2, `${logged}`);
  assert.match(logged[0], /2 acknowledged jobs lost/);
  for (const id of jobs.slice(1)) assert.ok(logged[0].includes(id));
  assert.match(logged[1], /could not count the lost jobs/);
  await queue.close();
});

test("losses are reported on the partition that had them", async () => {
  await raw.hset("streamq:{tenants}:layout", "partitions", 3, "version", 1);
  const queue = await open("tenants");
  queue.eventsCap = 100;
  const where = streamq.partitionOf("acme", 3);
  const elsewhere = [0, 1, 2].find((p) => p !== where);
  const otherKey = Array.from({ length: 100 }, (_, i) => `t${i}`).find((k) => streamq.partitionOf(k, 3) === elsewhere);
  const acme = await queue.enqueueBatch([0, 1, 2, 3].map((payload) => ({ payload, partitionKey: "acme" })));
  await queue.enqueueBatch([0, 1, 2, 3].map((payload) => ({ payload, partitionKey: otherKey })));
  for (const p of [where, elsewhere]) assert.equal(await raw.hget(queue.partitions[p].seq, "n"), "4", "one sequence per partition");
  await failOver(queue.partitions[where], 1);
  const logged = await errorsOf(() => queue.enqueueBatch([{ payload: "a", partitionKey: "acme" }, { payload: "b", partitionKey: otherKey }]));
  assert.deepEqual(rolledBack((await queue.stats()).counters), { "rolled_back:medium": 3 });
  assert.equal(await raw.hget(queue.partitions[where].stats, "rolled_back:medium"), "3", "counted on the partition that lost them");
  assert.deepEqual(await events(queue.partitions[where], "rolled_back"), acme.slice(1).map((id) => [id, "medium"]));
  assert.deepEqual(await events(queue.partitions[elsewhere], "rolled_back"), []);
  assert.equal(logged.length, 1);
  assert.match(logged[0], new RegExp(`partition ${where}:`));
  for (const id of acme.slice(1)) assert.ok(logged[0].includes(id));
  await queue.close();
});
